"""Clocks passed into domain code so that time is explicit and testable."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, always timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that stays where it is put; `advance` moves it."""

    def __init__(self, at: datetime):
        self._at = ensure_utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = ensure_utc(at)


class ShiftedClock:
    """The wall clock moved to start at `at`: time runs on from there (replays, dated examples, tests)."""

    def __init__(self, at: datetime):
        self._at = ensure_utc(at)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self._at + timedelta(seconds=time.monotonic() - self._started)


def ensure_utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime; naive values are refused."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} (a timezone is required)")
    return value.astimezone(timezone.utc)
