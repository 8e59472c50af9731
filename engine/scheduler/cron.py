"""Cron fire times, computed by APScheduler's CronTrigger in the configured timezone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger


def fire_times(expression: str, *, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Every fire time t with after < t <= until, as aware UTC datetimes."""
    trigger = CronTrigger.from_crontab(expression, timezone=tz)
    times: list[datetime] = []
    previous = None
    cursor = after + timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None or fire > until:
            return times
        times.append(fire.astimezone(timezone.utc))
        previous, cursor = fire, fire + timedelta(microseconds=1)


def next_fire_time(expression: str, *, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (aware UTC), or None if there is none."""
    trigger = CronTrigger.from_crontab(expression, timezone=tz)
    fire = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire.astimezone(timezone.utc) if fire else None
