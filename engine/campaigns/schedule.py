"""Campaign schedules: a fixed instant, a cron expression, or a trigger with a delay."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

_DELAY = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Trigger names a schedule may use; each kind says which it accepts (`Kind.check_schedule`).
TRIGGERS = ("order", "event", "reward")


@dataclass(frozen=True)
class Schedule:
    """When a campaign runs; exactly one of `at`, `cron` or `trigger` is set."""

    at: datetime | None = None  # aware UTC
    wall: datetime | None = None  # `at` as written, naive: the wall time local-time delivery aims for
    cron: str | None = None
    trigger: str | None = None
    delay: timedelta | None = None
    event_type: str | None = None

    @property
    def kind(self) -> str:
        return "at" if self.at else "cron" if self.cron else "trigger"


def parse_delay(text: str) -> timedelta:
    """Parse a delay such as `7d`, `12h`, `30m` or `2w`."""
    match = _DELAY.match(text)
    if not match:
        raise ValueError(f"delay {text!r} must look like 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_instant(value: object, tz: ZoneInfo) -> datetime:
    """Read a TOML datetime or ISO 8601 string; a time without offset is in the configured timezone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time such as 2027-03-20T09:00") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError("must be a date-time such as 2027-03-20T09:00")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(ZoneInfo("UTC"))


def parse_schedule(raw: object, tz: ZoneInfo) -> Schedule:
    """Validate a `schedule = {...}` table; raises ValueError with a marketer-readable message."""
    if not isinstance(raw, dict):
        raise ValueError("must be a table such as { at = \"2027-03-20T09:00\" }, { cron = \"0 9 * * MON\" } "
                         "or { trigger = \"order\", delay = \"7d\" }")
    keys = set(raw)
    if keys == {"at"}:
        at = parse_instant(raw["at"], tz)
        return Schedule(at=at, wall=at.astimezone(tz).replace(tzinfo=None))
    if keys == {"cron"}:
        expression = raw["cron"]
        if not isinstance(expression, str):
            raise ValueError("cron must be a string such as \"0 9 * * MON\"")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(expression, timezone=tz)
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
        return Schedule(cron=expression)
    if "trigger" in keys and keys <= {"trigger", "delay", "event"}:
        trigger = raw["trigger"]
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)} (got {trigger!r})")
        event_type = raw.get("event")
        if trigger == "event" and not isinstance(event_type, str):
            raise ValueError("a trigger = \"event\" schedule needs event = \"<event type>\"")
        delay = raw.get("delay", "0m")
        if not isinstance(delay, str):
            raise ValueError("delay must be a string such as \"7d\"")
        return Schedule(trigger=trigger, delay=parse_delay(delay), event_type=event_type)
    unknown = sorted(keys - {"at", "cron", "trigger", "delay", "event"})
    if unknown:
        raise ValueError(f"unknown schedule key(s) {', '.join(unknown)}")
    raise ValueError("give exactly one of at, cron or trigger (with an optional delay)")
