"""The frequency cap: at most N marketing mails per contact per day and per week, across campaigns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import case, func, select
from sqlmodel import Session

from ..config import Settings
from ..db import among
from ..models import Delivery, DeliveryStatus, Run


def over_cap(session: Session, contact_ids: Sequence[int], *, now: datetime, settings: Settings) -> set[int]:
    """Contacts who already got their day's or week's share of marketing mail (one query)."""
    per_day, per_week = settings.sending.max_per_day, settings.sending.max_per_week
    if not contact_ids or (not per_day and not per_week):
        return set()
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    rows = session.execute(
        select(Delivery.contact_id,
               func.sum(case((Delivery.sent_at > day_ago, 1), else_=0)),
               func.count())
        .join(Run, Run.id == Delivery.run_id)
        .where(among(Delivery.contact_id, contact_ids),
               Delivery.status.in_((DeliveryStatus.sent.value, DeliveryStatus.uncertain.value)),
               Delivery.sent_at > week_ago, Run.transactional.is_(False), Run.is_test.is_(False))
        .group_by(Delivery.contact_id)
    ).all()
    return {contact for contact, day, week in rows
            if (per_day and (day or 0) >= per_day) or (per_week and week >= per_week)}
