"""The webhook log (one row per provider request, see engine.web.webhooks): reading it and its retention."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlmodel import Session

from .models import WebhookLog

STATUSES = ("accepted", "ignored", "refused")
#: Rows deleted per purge call: a tick after a long pause never holds the write lock for long.
PURGE_BATCH = 5000


def log_page(session: Session, *, provider: str = "", status: str = "", before: int | None, limit: int
             ) -> tuple[list[WebhookLog], int | None]:
    """One page of the log, newest first, optionally of one provider and status; and the next page's `before`."""
    stmt = select(WebhookLog).order_by(WebhookLog.id.desc()).limit(limit + 1)
    if provider:
        stmt = stmt.where(WebhookLog.provider == provider)
    if status:
        stmt = stmt.where(WebhookLog.status == status)
    if before is not None:
        stmt = stmt.where(WebhookLog.id < before)
    rows = list(session.execute(stmt).scalars())
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def refusals_since(session: Session, since: datetime) -> int:
    """Requests refused at or after `since`."""
    return session.execute(select(func.count()).select_from(WebhookLog).where(
        WebhookLog.received_at >= since, WebhookLog.status == "refused")).scalar_one()


def purge(session: Session, *, older_than: timedelta, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Delete up to `limit` log rows received before `now - older_than`, oldest first; how many."""
    doomed = (select(WebhookLog.id).where(WebhookLog.received_at < now - older_than)
              .order_by(WebhookLog.received_at).limit(limit))
    return session.execute(delete(WebhookLog).where(WebhookLog.id.in_(doomed.scalar_subquery()))).rowcount
