"""Read-side queries over runs and the delivery ledger, shaped for pages on millions of rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, union_all
from sqlmodel import Session, select

from ..models import Campaign, Delivery, DeliveryStatus, Run, RunStatus

#: Delivery states a worker will not touch again; progress counts these as done.
DONE_STATUSES = (DeliveryStatus.sent.value, DeliveryStatus.failed.value, DeliveryStatus.skipped.value,
                 DeliveryStatus.uncertain.value)
#: Column order on the pages.
STATUS_ORDER = tuple(s.value for s in DeliveryStatus)


@dataclass(frozen=True)
class RunSummary:
    """One run with its campaign name and delivery counts per status."""

    run: Run
    campaign_name: str | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def delivery_count(self) -> int:
        return sum(self.counts.values())

    @property
    def progress(self) -> int:
        """Whole percent of deliveries in a final state (rounded down, so 100 means all done)."""
        denominator = max(self.run.total or 0, self.delivery_count)
        if denominator == 0:
            return 100 if self.run.status == RunStatus.finished.value else 0
        done = sum(self.counts.get(s, 0) for s in DONE_STATUSES)
        return min(100, done * 100 // denominator)


def status_counts(session: Session, run_ids: list[int]) -> dict[int, dict[str, int]]:
    """Delivery counts per status for each run, in one GROUP BY (an index-only scan of ix_deliveries_run_status_id)."""
    if not run_ids:
        return {}
    rows = session.exec(
        select(Delivery.run_id, Delivery.status, func.count())
        .where(Delivery.run_id.in_(run_ids))
        .group_by(Delivery.run_id, Delivery.status)
    ).all()
    counts: dict[int, dict[str, int]] = {run_id: {} for run_id in run_ids}
    for run_id, status, n in rows:
        counts[run_id][status] = n
    return counts


def list_runs(session: Session, *, before: Run | None = None, limit: int = 50) -> tuple[list[RunSummary], int | None]:
    """Runs newest occurrence first, keyset-paged after `before`; returns the page and the next cursor run id."""
    query = select(Run, Campaign.name).outerjoin(Campaign, Campaign.id == Run.campaign_id)
    if before is not None:
        query = query.where(or_(
            Run.occurrence_at < before.occurrence_at,
            and_(Run.occurrence_at == before.occurrence_at, Run.id < before.id),
        ))
    rows = session.exec(query.order_by(Run.occurrence_at.desc(), Run.id.desc()).limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    counts = status_counts(session, [run.id for run, _ in rows])
    page = [RunSummary(run=run, campaign_name=name, counts=counts[run.id]) for run, name in rows]
    return page, (rows[-1][0].id if has_more else None)


def run_summary(session: Session, run_id: int) -> RunSummary | None:
    """One run with its counts, or None."""
    row = session.exec(
        select(Run, Campaign.name).outerjoin(Campaign, Campaign.id == Run.campaign_id).where(Run.id == run_id)
    ).first()
    if row is None:
        return None
    run, name = row
    return RunSummary(run=run, campaign_name=name, counts=status_counts(session, [run.id])[run.id])


def delivery_page(
    session: Session,
    *,
    run_id: int,
    statuses: list[str],
    after: int = 0,
    email: str = "",
    limit: int = 100,
) -> tuple[list[Delivery], int | None]:
    """Deliveries of a run with id > `after` in id order, limited to `statuses`; returns the page and next cursor.

    Each status is read as its own range of ix_deliveries_run_status_id (run_id, status, id) and
    the ranges are merged, so a page costs a few short index scans even on a run of millions
    instead of sorting the whole run.
    """
    if not statuses:
        return [], None
    needle = email.strip().lower()

    def one_status(status: str):
        query = select(Delivery.id).where(
            Delivery.run_id == run_id, Delivery.status == status, Delivery.id > after
        )
        if needle:
            query = query.where(func.lower(Delivery.email).contains(needle, autoescape=True))
        return query.order_by(Delivery.id).limit(limit + 1)

    if len(statuses) == 1:
        ids = list(session.exec(one_status(statuses[0])).all())
    else:
        # Wrapping each part in a subquery keeps its ORDER BY/LIMIT legal inside UNION ALL on SQLite.
        merged = union_all(*(one_status(s).subquery().select() for s in statuses)).subquery()
        ids = list(session.exec(select(merged.c.id).order_by(merged.c.id).limit(limit + 1)).all())
    has_more = len(ids) > limit
    ids = sorted(ids)[:limit]
    if not ids:
        return [], None
    deliveries = list(session.exec(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)).all())
    return deliveries, (ids[-1] if has_more else None)
