"""Provider rate limits: per-second token buckets in a process, hour and day budgets and Retry-After
throttles in the database, so that every process and a restarted one keep to them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.engine import Connection, Engine

from ..clock import Clock
from ..config import ProviderLimits, ProviderSettings
from ..db import read_only, upsert_insert
from ..models import ProviderThrottle, ProviderUsage

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
HOUR_MINUTES = 60
DAY_MINUTES = 1440
DEFAULT_RETRY_AFTER = 60.0  # seconds a throttled provider is left alone when it did not say how long
_FLUSH_SECONDS = 2.0  # unlimited providers: how often this process adds its counts to provider_usage
_TIDY_SECONDS = 600.0  # how often this process deletes buckets older than a day
_THROTTLE_REFRESH_SECONDS = 2.0  # other processes' throttles are seen this late at most


class RateLimiter:
    """A token bucket shared by a process's sending threads; 0 means unlimited."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, count: int = 1) -> None:
        """Block until this caller's slot comes; `count` messages take `count` slots."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + count * self.interval
        if slot > now:
            time.sleep(slot - now)


def minute_of(at: datetime) -> datetime:
    """The per-minute usage bucket `at` falls in."""
    return at.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class Usage:
    """Messages handed to one provider in the sliding hour and day that end now."""

    last_hour: int
    last_day: int


def usage(engine: Engine, provider: str, *, now: datetime) -> Usage:
    """The provider's usage in the last 60 and 1440 minute buckets (the current one included)."""
    current = minute_of(now)
    with read_only(engine).connect() as conn:
        rows = _window(conn, provider, current)
    hour = sum(c for m, c in rows if m > current - HOUR_MINUTES * MINUTE)
    return Usage(last_hour=hour, last_day=sum(c for _, c in rows))


def _window(conn: Connection, provider: str, current: datetime) -> list[tuple[datetime, int]]:
    return [(m, c) for m, c in conn.execute(
        select(ProviderUsage.minute, ProviderUsage.count)
        .where(ProviderUsage.provider == provider, ProviderUsage.minute > current - DAY_MINUTES * MINUTE)
        .order_by(ProviderUsage.minute)).all()]


def _add(conn: Connection, provider: str, minute: datetime, count: int) -> None:
    stmt = upsert_insert(conn, ProviderUsage).values(provider=provider, minute=minute, count=count)
    conn.execute(stmt.on_conflict_do_update(index_elements=["provider", "minute"],
                                            set_={"count": ProviderUsage.count + stmt.excluded.count}))


def reserve(engine: Engine, provider: str, limits: ProviderLimits, *, now: datetime) -> datetime | None:
    """Take one message of the provider's budget in this minute's bucket, atomically across processes.

    Returns None when the message may go, else the instant the budget frees (nothing is taken then).
    """
    granted, until = reserve_many(engine, provider, limits, 1, now=now)
    return None if granted else until


def reserve_many(engine: Engine, provider: str, limits: ProviderLimits, count: int, *,
                 now: datetime) -> tuple[int, datetime | None]:
    """Take up to `count` messages of the provider's budget at once: (how many, when more fit if not all)."""
    current = minute_of(now)
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, so reservations queue one after another
        if conn.dialect.name == "postgresql":
            # One lock per provider for the whole check-and-add: two processes cannot both see room
            # for the last message (a row lock on the current bucket would not cover minute edges).
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"valuemail.provider_usage:{provider}"))))
        rows = _window(conn, provider, current)
        fits = room(rows, limits, current)
        granted = count if fits is None else max(0, min(count, fits))
        if granted:
            _add(conn, provider, current, granted)
            rows = rows + [(current, granted)]
        return granted, None if granted == count else free_at(rows, limits, current)


def room(rows: list[tuple[datetime, int]], limits: ProviderLimits, current: datetime) -> int | None:
    """How many more messages fit the limits now given the buckets `rows`; None when unlimited."""
    left = []
    if limits.per_second:
        left.append(max(1, int(limits.per_second * 60)) - sum(c for m, c in rows if m == current))
    for minutes, limit in ((HOUR_MINUTES, limits.per_hour), (DAY_MINUTES, limits.per_day)):
        if limit:
            left.append(limit - sum(c for m, c in rows if m > current - minutes * MINUTE))
    return min(left) if left else None


def free_at(rows: list[tuple[datetime, int]], limits: ProviderLimits, current: datetime) -> datetime | None:
    """None when one more message fits the limits given the buckets `rows`, else when it will."""
    until = None
    if limits.per_second:
        # The cross-process share of the per-second limit, checked at minute granularity.
        this_minute = sum(c for m, c in rows if m == current)
        if this_minute + 1 > max(1, int(limits.per_second * 60)):
            until = current + MINUTE
    for minutes, limit in ((HOUR_MINUTES, limits.per_hour), (DAY_MINUTES, limits.per_day)):
        if not limit:
            continue
        inside = [(m, c) for m, c in rows if m > current - minutes * MINUTE]
        excess = sum(c for _, c in inside) + 1 - limit
        if excess <= 0:
            continue
        # The window slides a minute at a time: room appears once enough of its oldest buckets left it.
        dropped = 0
        for minute, count in inside:
            dropped += count
            if dropped >= excess:
                frees = minute + minutes * MINUTE
                until = frees if until is None else max(until, frees)
                break
    return until


class UsageMeter:
    """Per-provider limits for one process: a token bucket each, and the persisted hour/day budgets.

    Providers with limits reserve each message in provider_usage before it goes; the others only
    have their counts added every couple of seconds (for `valuemail providers`).
    """

    def __init__(self, *, engine: Engine, settings: ProviderSettings, clock: Clock):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self._buckets: dict[str, RateLimiter] = {}
        self._pending: dict[tuple[str, datetime], int] = {}
        self._exhausted: dict[str, datetime] = {}  # provider: when its used-up budget frees
        self._flushed = time.monotonic()
        self._tidied: float | None = None
        self._lock = threading.Lock()

    def take(self, provider: str) -> datetime | None:
        """Wait for the provider's per-second slot and reserve one message; else when its budget frees."""
        granted, until = self.take_many(provider, 1)
        return None if granted else until

    def take_many(self, provider: str, count: int) -> tuple[int, datetime | None]:
        """Reserve up to `count` messages and wait for their per-second slots: (how many, when more fit)."""
        limits = self.settings.limits_for(provider)
        now = self.clock.now()
        if not limits.limited:
            self._count(provider, now, count)
            return count, None
        with self._lock:
            known = self._exhausted.get(provider)
        if known is not None and now < known:
            return 0, known  # budgets only free as time passes, so no need to ask the database again yet
        granted, until = reserve_many(self.engine, provider, limits, count, now=now)
        if until is not None:
            with self._lock:
                self._exhausted[provider] = until
            log.info("provider %s: its limit is reached; it takes more at %s", provider, until.isoformat())
        self._tidy(now)
        if granted:
            self._bucket(provider, limits).wait(granted)
        return granted, until

    def flush(self) -> None:
        """Add this process's unwritten counts to provider_usage."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed = time.monotonic()
        if not pending:
            return
        with self.engine.begin() as conn:
            for (provider, minute), count in sorted(pending.items()):
                _add(conn, provider, minute, count)

    def _bucket(self, provider: str, limits: ProviderLimits) -> RateLimiter:
        with self._lock:
            bucket = self._buckets.get(provider)
            if bucket is None:
                bucket = self._buckets[provider] = RateLimiter(limits.per_second)
            return bucket

    def _count(self, provider: str, now: datetime, count: int = 1) -> None:
        key = (provider, minute_of(now))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + count
            due = time.monotonic() - self._flushed >= _FLUSH_SECONDS
        if due:
            self.flush()
            self._tidy(now)

    def _tidy(self, now: datetime) -> None:
        with self._lock:
            if self._tidied is not None and time.monotonic() - self._tidied < _TIDY_SECONDS:
                return
            self._tidied = time.monotonic()
        with self.engine.begin() as conn:
            conn.execute(delete(ProviderUsage).where(ProviderUsage.minute <= minute_of(now) - DAY_MINUTES * MINUTE))


@dataclass(frozen=True)
class Throttle:
    """A provider asked every sender to wait until `until`."""

    provider: str
    until: datetime
    reason: str


class Throttles:
    """Retry-After blocks per provider, shared by all processes through provider_throttle.

    Read through a cache refreshed every couple of seconds, and at once after this process sets one.
    """

    def __init__(self, *, engine: Engine, clock: Clock, refresh_seconds: float = _THROTTLE_REFRESH_SECONDS):
        self.engine = engine
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self._rows: dict[str, Throttle] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def active(self, provider: str) -> Throttle | None:
        """The throttle that holds `provider` now, if any."""
        with self._lock:
            if self._read_at is None or time.monotonic() - self._read_at >= self.refresh_seconds:
                self._reload()
            throttle = self._rows.get(provider)
        return throttle if throttle is not None and throttle.until > self.clock.now() else None

    def block(self, provider: str, *, seconds: float | None, reason: str) -> Throttle:
        """Record that `provider` asked for a pause (a later end than a stored one wins)."""
        now = self.clock.now()
        until = now + timedelta(seconds=DEFAULT_RETRY_AFTER if seconds is None else max(0.0, seconds))
        with self.engine.begin() as conn:
            stmt = upsert_insert(conn, ProviderThrottle).values(provider=provider, blocked_until=until,
                                                                reason=reason[:500], updated_at=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["provider"],
                set_={"blocked_until": until, "reason": reason[:500], "updated_at": now},
                where=or_(ProviderThrottle.blocked_until.is_(None), ProviderThrottle.blocked_until < until)))
        with self._lock:
            self._reload()
            throttle = self._rows.get(provider) or Throttle(provider, until, reason)
        log.warning("provider %s asked us to slow down (%s); every sender leaves it alone until %s", provider,
                    reason, throttle.until.isoformat())
        return throttle

    def _reload(self) -> None:
        with read_only(self.engine).connect() as conn:
            rows = conn.execute(select(ProviderThrottle.provider, ProviderThrottle.blocked_until,
                                       ProviderThrottle.reason)).all()
        self._rows = {p: Throttle(p, until, reason) for p, until, reason in rows if until is not None}
        self._read_at = time.monotonic()
