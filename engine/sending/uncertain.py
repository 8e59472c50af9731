"""Uncertain deliveries: the message went out but the answer was lost, so it may have arrived.

They are never resent automatically; an operator lists them and decides, per delivery or for all:
resend (accepting that a recipient may get the mail twice) or accept them as sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import Select, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..db import session_scope
from ..models import Delivery, DeliveryStatus, Run, RunStatus

Q = DeliveryStatus


@dataclass(frozen=True)
class UncertainDelivery:
    delivery_id: int
    run_id: int
    campaign_id: str
    email: str
    at: datetime | None
    provider: str | None
    reason: str


def _chosen(ids: Sequence[int] | None):
    condition = Delivery.status == Q.uncertain.value
    return condition if ids is None else condition & Delivery.id.in_(list(ids))


def _listing(ids: Sequence[int] | None = None) -> Select:
    return (select(Delivery.id, Delivery.run_id, Run.campaign_id, Delivery.email, Delivery.sent_at, Delivery.provider,
                   Delivery.last_error)
            .join(Run, Run.id == Delivery.run_id).where(_chosen(ids)))


def _rows(session: Session, stmt: Select) -> list[UncertainDelivery]:
    return [UncertainDelivery(*row[:6], reason=row[6] or "") for row in session.execute(stmt)]


def list_uncertain(session: Session, *, ids: Sequence[int] | None = None) -> list[UncertainDelivery]:
    """Uncertain deliveries (all, or those of `ids` that are), oldest first."""
    return _rows(session, _listing(ids).order_by(Delivery.id))


def uncertain_page(session: Session, *, before: int | None, limit: int) -> tuple[list[UncertainDelivery], int | None]:
    """One page of uncertain deliveries, newest first, with ids below `before`; and the next page's `before`."""
    stmt = _listing().order_by(Delivery.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(Delivery.id < before)
    rows = _rows(session, stmt)
    return rows[:limit], rows[limit - 1].delivery_id if len(rows) > limit else None


def count_uncertain(session: Session) -> int:
    """How many deliveries are uncertain."""
    return session.execute(select(func.count()).select_from(Delivery).where(_chosen(None))).scalar_one()


def resend(engine: Engine, ids: Sequence[int] | None, *, now: datetime) -> int:
    """Requeue uncertain deliveries (all when `ids` is None); their finished runs send again.

    Rows of cancelled runs stay uncertain: cancelling said nothing more goes out. Returns the count.
    """
    with session_scope(engine) as session:
        open_runs = select(Run.id).where(Run.status != RunStatus.cancelled.value)
        run_ids = set(session.execute(select(Delivery.run_id).where(
            _chosen(ids), Delivery.run_id.in_(open_runs))).scalars())
        if not run_ids:
            return 0
        count = session.execute(update(Delivery).where(_chosen(ids), Delivery.run_id.in_(run_ids)).values(
            status=Q.queued.value, next_attempt_at=None, sent_at=None, updated_at=now,
        )).rowcount
        session.execute(update(Run).where(Run.id.in_(run_ids), Run.status == RunStatus.finished.value)
                        .values(status=RunStatus.sending.value, finished_at=None))
        return count


def accept(engine: Engine, ids: Sequence[int] | None, *, now: datetime) -> int:
    """Mark uncertain deliveries sent (all when `ids` is None); the reason stays as their last error."""
    with session_scope(engine) as session:
        return session.execute(update(Delivery).where(_chosen(ids)).values(
            status=Q.sent.value, updated_at=now,
        )).rowcount
