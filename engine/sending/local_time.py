"""Delivery in the recipient's local time: each delivery waits for the wall time in its contact's zone."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from ..models import Contact, Delivery


def schedule_deliveries(engine: Engine, run_id: int, *, wall: datetime, default_tz: ZoneInfo) -> None:
    """Set each delivery's earliest send time to `wall` (naive) in its contact's timezone.

    One UPDATE per distinct timezone of the run's contacts; contacts without a (valid)
    timezone get the configured one.
    """
    with engine.begin() as conn:
        zones = conn.execute(select(Contact.timezone).distinct().join(Delivery, Delivery.contact_id == Contact.id)
                             .where(Delivery.run_id == run_id)).scalars().all()
        for zone in zones:
            try:
                tz = ZoneInfo(zone) if zone else default_tz
            except (ZoneInfoNotFoundError, ValueError):
                tz = default_tz
            due = wall.replace(tzinfo=tz).astimezone(timezone.utc)
            contacts = select(Contact.id).where(Contact.timezone.is_(None) if zone is None else Contact.timezone == zone)
            conn.execute(update(Delivery).where(Delivery.run_id == run_id, Delivery.contact_id.in_(contacts))
                         .values(next_attempt_at=due))
