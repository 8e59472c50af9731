"""The send log: every delivery of every run, newest first, filtered and keyset-paged on millions of rows.

Each filter is answered from an index range, never by sorting the ledger:
- no filter, or a date range: the primary key backwards (a date range becomes an id range through
  `ix_deliveries_created`, as ids grow with creation time);
- a status: `ix_deliveries_status_id` (status, id);
- an address: the contact's key, then `ix_deliveries_contact`; a contact has few deliveries;
- a campaign: its runs, each (run, status) range of `ix_deliveries_run_status_id` read backwards
  and merged (UNION ALL of short index scans), while the campaign has at most `MERGED_RUNS`
  runs; past that the primary key is scanned backwards with the filter (a campaign that sends
  that often is dense among recent deliveries).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select, union_all
from sqlmodel import Session

from .models import Contact, Delivery, DeliveryEvent, DeliveryStatus, Run
from .suppression import email_key

STATUSES = tuple(s.value for s in DeliveryStatus)
#: Campaigns with more runs than this are filtered by a backwards scan rather than merged ranges.
MERGED_RUNS = 20


@dataclass(frozen=True)
class LogFilter:
    """What the log shows: any combination; empty strings and None mean "any"."""

    email: str = ""
    campaign: str = ""
    status: str = ""
    day_from: date | None = None  # the day a delivery was queued (its run's day), in the configured timezone
    day_to: date | None = None  # inclusive


@dataclass(frozen=True)
class LogRow:
    """One delivery as the log lists it."""

    id: int
    email: str
    campaign_id: str
    run_id: int
    test: bool
    segment: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    last_error: str | None


def log_page(session: Session, flt: LogFilter, *, tz, before: int | None = None,
             limit: int = 50) -> tuple[list[LogRow], int | None]:
    """One page of deliveries with id < `before`, newest first, and the cursor of the next page (or None)."""
    if flt.status and flt.status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    conditions: list[Any] = []
    if before is not None:
        conditions.append(Delivery.id < before)
    if flt.status:
        conditions.append(Delivery.status == flt.status)
    if flt.day_from or flt.day_to:
        low, high = _id_range(session, flt, tz)
        if low is None:
            return [], None
        conditions += [Delivery.id >= low, Delivery.id <= high]
        if flt.day_from:
            conditions.append(Delivery.created_at >= _start_of(flt.day_from, tz))
        if flt.day_to:
            conditions.append(Delivery.created_at < _start_of(flt.day_to + timedelta(days=1), tz))
    if flt.email:
        contact_ids = select(Contact.id).where(Contact.email_key == email_key(flt.email)).scalar_subquery()
        conditions.append(Delivery.contact_id.in_(contact_ids))
    ids: list[int]
    if flt.campaign:
        run_ids = list(session.execute(select(Run.id).where(Run.campaign_id == flt.campaign)).scalars())
        if not run_ids:
            return [], None
        if len(run_ids) <= MERGED_RUNS and not flt.email:
            statuses = [flt.status] if flt.status else list(STATUSES)
            parts = [select(Delivery.id).where(Delivery.run_id == run_id, Delivery.status == status, *conditions)
                     .order_by(Delivery.id.desc()).limit(limit + 1).subquery().select()
                     for run_id in run_ids for status in statuses]
            merged = union_all(*parts).subquery()
            ids = list(session.execute(select(merged.c.id).order_by(merged.c.id.desc()).limit(limit + 1)).scalars())
        else:
            conditions.append(Delivery.run_id.in_(run_ids))
            ids = _ids(session, conditions, limit)
    else:
        ids = _ids(session, conditions, limit)
    more = len(ids) > limit
    ids = ids[:limit]
    if not ids:
        return [], None
    rows = session.execute(
        select(Delivery.id, Delivery.email, Run.campaign_id, Delivery.run_id, Run.is_test, Delivery.segment,
               Delivery.status, Delivery.attempts, Delivery.created_at, Delivery.sent_at, Delivery.opened_at,
               Delivery.clicked_at, Delivery.last_error)
        .join(Run, Run.id == Delivery.run_id).where(Delivery.id.in_(ids)).order_by(Delivery.id.desc())
    ).all()
    return [LogRow(*row) for row in rows], (ids[-1] if more else None)


def timeline(session: Session, delivery_id: int) -> list[tuple[str, datetime, dict]]:
    """(event, when, details) of one delivery, oldest first: queued, sent, then what was reported or recorded."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return []
    events = [("queued", delivery.created_at, {})]
    if delivery.sent_at is not None:
        events.append(("sent", delivery.sent_at, {"provider": delivery.provider or "",
                                                  "provider_message_id": delivery.provider_message_id or ""}))
    for kind, at, data in session.execute(
            select(DeliveryEvent.type, DeliveryEvent.occurred_at, DeliveryEvent.data)
            .where(DeliveryEvent.delivery_id == delivery_id).order_by(DeliveryEvent.occurred_at, DeliveryEvent.id)):
        events.append((kind, at, dict(data or {})))
    if delivery.status in (DeliveryStatus.failed.value, DeliveryStatus.skipped.value, DeliveryStatus.uncertain.value):
        events.append((delivery.status, delivery.updated_at, {"reason": delivery.last_error or ""}))
    return sorted(events, key=lambda e: e[1])


def _ids(session: Session, conditions: list, limit: int) -> list[int]:
    return list(session.execute(select(Delivery.id).where(*conditions).order_by(Delivery.id.desc())
                                .limit(limit + 1)).scalars())


def _id_range(session: Session, flt: LogFilter, tz) -> tuple[int | None, int | None]:
    """The ids created within the days asked for, as a range (ids grow with creation time)."""
    low_query = select(func.min(Delivery.id))
    high_query = select(func.max(Delivery.id))
    if flt.day_from:
        start = _start_of(flt.day_from, tz)
        # The first id created on or after the start: one probe of ix_deliveries_created.
        low_query = select(Delivery.id).where(Delivery.created_at >= start).order_by(Delivery.created_at).limit(1)
    if flt.day_to:
        end = _start_of(flt.day_to + timedelta(days=1), tz)
        high_query = (select(Delivery.id).where(Delivery.created_at < end)
                      .order_by(Delivery.created_at.desc()).limit(1))
    low, high = session.execute(low_query).scalar(), session.execute(high_query).scalar()
    if low is None or high is None or low > high:
        return None, None
    return low, high


def _start_of(day: date, tz) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)
