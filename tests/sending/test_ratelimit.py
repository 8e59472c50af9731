"""Per-provider limits persisted in provider_usage, and Retry-After throttles shared by every sender."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlmodel import Session

from engine.clock import FixedClock
from engine.config import ProviderLimits
from engine.db import make_engine
from engine.models import Delivery, ProviderThrottle, ProviderUsage, Run
from engine.providers import SendResult, provider_factory
from engine.providers.outbox import OutboxProvider
from engine.rendering import Renderer
from engine.sending.ratelimit import Throttles, Usage, UsageMeter, free_at, minute_of, reserve, usage
from engine.sending.service import prepare_run, prepare_test_run
from engine.sending.worker import Sender
from tests.conftest import write_settings
from tests.sending.test_routing import Scripted, _outbox, _rows, _runtime
from tests.sending.test_send import only_spring_sale
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink

NOW = T0 + timedelta(seconds=20)  # mid-minute


def _limited(project, database_url, extra="", **limits):
    table = "".join(f"{k} = {v!r}\n" for k, v in limits.items())
    return write_settings(project, database_url, sending={"concurrency": 2, "batch_size": 4},
                          extra=f"[provider.limits.outbox]\n{table}{extra}")


def _sender(settings, engine, clock, **kwargs):
    return Sender(engine=engine, settings=settings, clock=clock, provider_factory=provider_factory(settings),
                  renderer=Renderer(settings.templates_dir), **kwargs)


def _statuses(db, run_id):
    with Session(db) as s:
        return dict(s.execute(select(Delivery.status, func.count()).where(Delivery.run_id == run_id)
                              .group_by(Delivery.status)).all())


def test_an_hourly_limit_stops_sending_survives_a_restart_and_resumes_when_the_hour_slides(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 5)
    settings = _limited(project, database_url, per_hour=3)
    clock = FixedClock(NOW)
    run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    _sender(settings, db, clock).drain([run_id], wait_for_retries=False)
    assert _statuses(db, run_id) == {"sent": 3, "queued": 2}
    frees = minute_of(NOW) + timedelta(minutes=60)
    waiting = [r for r in _rows(db, run_id) if r.status == "queued"]
    assert [(r.attempts, r.next_attempt_at) for r in waiting] == [(0, frees)] * 2
    assert waiting[0].last_error == f"outbox: its limit ([provider.limits.outbox]) is used up until {frees:%Y-%m-%d %H:%M} UTC"
    with Session(db) as s:
        assert s.get(Run, run_id).status == "sending"
        assert s.execute(select(ProviderUsage.minute, ProviderUsage.count)).all() == [(minute_of(NOW), 3)]

    # A restarted process (new engine, new Sender) half an hour later, with the two made due again:
    # the persisted usage still holds it back.
    clock.set(NOW + timedelta(minutes=30))
    with Session(db) as s:
        s.execute(update(Delivery).where(Delivery.status == "queued").values(next_attempt_at=None))
        s.commit()
    other = make_engine(settings.database_url)
    try:
        _sender(settings, other, clock).drain([run_id], wait_for_retries=False)
    finally:
        other.dispose()
    assert _statuses(db, run_id) == {"sent": 3, "queued": 2}
    assert len(_outbox(settings)) == 3

    # When the first minute leaves the sliding hour, sending resumes and the run finishes.
    clock.set(frees)
    _sender(settings, db, clock).drain([run_id], wait_for_retries=False)
    assert _statuses(db, run_id) == {"sent": 5}
    with Session(db) as s:
        assert s.get(Run, run_id).status == "finished"
    assert usage(db, "outbox", now=frees) == Usage(last_hour=2, last_day=5)


def test_two_senders_on_one_database_never_exceed_the_limit_together(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 30)
    settings = _limited(project, database_url, per_hour=11)
    clock = FixedClock(NOW)
    run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    engines = [make_engine(settings.database_url) for _ in range(2)]
    sent: list[str] = []
    lock = threading.Lock()

    class Counting(OutboxProvider):
        def send(self, message):
            with lock:
                sent.append(message.recipient)
            time.sleep(0.002)  # let the two processes' threads interleave
            return super().send(message)

    senders = [Sender(engine=e, settings=settings, clock=clock, renderer=Renderer(settings.templates_dir),
                      provider_factory=lambda: Counting(settings.var_dir / "outbox")) for e in engines]
    errors: list[BaseException] = []

    def drain(sender):
        try:
            sender.drain([run_id], wait_for_retries=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for e in engines:
            e.dispose()
    assert not errors
    assert len(sent) == len(set(sent)) == 11
    assert _statuses(db, run_id) == {"sent": 11, "queued": 19}
    with Session(db) as s:
        assert s.execute(select(func.sum(ProviderUsage.count))).scalar() == 11


def test_reservations_are_atomic_across_engines(database_url, db):
    limits = ProviderLimits(per_day=40)
    engines = [make_engine(database_url) for _ in range(4)]
    granted: list[int] = []
    lock = threading.Lock()

    def hammer(engine):
        for _ in range(20):
            if reserve(engine, "postmark", limits, now=NOW) is None:
                with lock:
                    granted.append(1)

    threads = [threading.Thread(target=hammer, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for e in engines:
            e.dispose()
    assert len(granted) == 40
    assert usage(db, "postmark", now=NOW).last_day == 40


def test_windows_slide_a_minute_at_a_time():
    current = minute_of(NOW)
    rows = [(current - timedelta(minutes=1439), 5), (current - timedelta(minutes=59), 2), (current, 3)]
    assert free_at(rows, ProviderLimits(per_hour=6), current) is None
    assert free_at(rows, ProviderLimits(per_hour=5), current) == current + timedelta(minutes=1)
    assert free_at(rows, ProviderLimits(per_hour=3), current) == current + timedelta(minutes=60)
    assert free_at(rows, ProviderLimits(per_day=11), current) is None
    assert free_at(rows, ProviderLimits(per_day=10), current) == current + timedelta(minutes=1)
    assert free_at(rows, ProviderLimits(per_day=6), current) == current + timedelta(minutes=1)
    assert free_at(rows, ProviderLimits(per_day=5), current) == current + timedelta(minutes=1381)
    # per_second is also held across processes as a per-minute count
    assert free_at(rows, ProviderLimits(per_second=0.05), current) == current + timedelta(minutes=1)
    assert free_at(rows, ProviderLimits(per_second=1), current) is None


def test_unlimited_usage_is_counted_and_day_old_buckets_are_deleted(project, database_url, db):
    settings = write_settings(project, database_url, extra="[provider.limits.smtp]\nper_day = 100\n")
    clock = FixedClock(NOW - timedelta(days=1, minutes=1))
    meter = UsageMeter(engine=db, settings=settings.provider, clock=clock)
    assert meter.take("smtp") is None  # a bucket that will be more than a day old
    clock.set(NOW)
    meter = UsageMeter(engine=db, settings=settings.provider, clock=clock)
    for _ in range(3):
        assert meter.take("outbox") is None
    assert usage(db, "outbox", now=NOW).last_hour == 0  # counted in memory until the flush
    assert meter.take("smtp") is None  # a reservation tidies old buckets
    meter.flush()
    with Session(db) as s:
        assert sorted(s.execute(select(ProviderUsage.provider, ProviderUsage.count)).all()) == \
            [("outbox", 3), ("smtp", 1)]


def test_a_throttle_seen_by_one_sender_makes_another_wait(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 3)
    settings = write_settings(project, database_url, sending={"concurrency": 1, "pause_after_errors": 1})
    clock = FixedClock(NOW)
    runtime = _runtime(settings, db, clock)
    first = prepare_run(runtime, "spring-sale").run_id
    calls: list[str] = []
    throttled = SendResult.temporary("429 Too Many Requests", code=429, retry_after=120, throttled=True)
    a = Sender(engine=db, settings=settings, clock=clock, renderer=Renderer(settings.templates_dir),
               provider_factory=lambda: Scripted("outbox", lambda r: throttled, calls))
    a.drain([first], wait_for_retries=False)
    until = NOW + timedelta(seconds=120)
    assert calls == ["user0@example.com"]  # the rest of the batch was not even tried
    assert [(r.status, r.attempts, r.next_attempt_at) for r in _rows(db, first)] == [("queued", 0, until)] * 3
    with Session(db) as s:
        assert s.get(Run, first).status == "sending"  # a throttle is not an error: no pause
        row = s.get(ProviderThrottle, "outbox")
        assert (row.blocked_until, row.reason) == (until, "429 Too Many Requests")

    # Another process: its own engine and Sender, a test run to the same provider. It waits.
    other = make_engine(settings.database_url)
    try:
        clock.set(NOW + timedelta(seconds=1))
        test_run = prepare_test_run(_runtime(settings, other, clock), "spring-sale", to="me@example.org").run_id
        b = _sender(settings, other, clock)
        b.drain([test_run], wait_for_retries=False)
        assert _outbox(settings) == []
        assert {(r.status, r.attempts, r.next_attempt_at) for r in _rows(db, test_run)} == {("queued", 0, until)}
        clock.set(until)
        b.drain([test_run, first], wait_for_retries=False)
    finally:
        other.dispose()
    assert len(_outbox(settings)) == 4
    assert _statuses(db, first) == {"sent": 3}


def test_a_cached_throttle_is_reread_within_the_refresh_interval(database_url, db):
    clock = FixedClock(NOW)
    reader = Throttles(engine=db, clock=clock, refresh_seconds=0.2)
    assert reader.active("sendgrid") is None
    other = make_engine(database_url)
    try:
        Throttles(engine=other, clock=clock).block("sendgrid", seconds=None, reason="429")
    finally:
        other.dispose()
    time.sleep(0.25)
    seen = reader.active("sendgrid")
    assert seen is not None and seen.until == NOW + timedelta(seconds=60)  # no Retry-After: 60 s
    # A shorter throttle never cuts a longer one short.
    reader.block("sendgrid", seconds=5, reason="429 again")
    assert reader.active("sendgrid").until == NOW + timedelta(seconds=60)
    clock.set(NOW + timedelta(seconds=60))
    assert reader.active("sendgrid") is None


def test_an_smtp_421_makes_every_sender_wait_the_time_it_names(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 3)
    with SmtpSink() as sink:
        sink.handler.replies["user1@example.com"] = "421 4.7.0 Too many messages, try again in 90 seconds"
        # One connection, so user2 queues behind user1 (on several, it would be on the wire already).
        settings = write_settings(project, database_url, sending={"concurrency": 1},
                                  extra=f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\ntimeout = 5\n'
                                        'pool_size = 1\n')
        clock = FixedClock(NOW)
        run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
        _sender(settings, db, clock).drain([run_id], wait_for_retries=False)
        until = NOW + timedelta(seconds=90)
        rows = {r.email: r for r in _rows(db, run_id)}
        assert rows["user0@example.com"].status == "sent"
        for email in ("user1@example.com", "user2@example.com"):  # user2 was never tried
            assert (rows[email].status, rows[email].attempts, rows[email].next_attempt_at) == ("queued", 0, until)
        assert [r for m in sink.messages for r in m.recipients] == ["user0@example.com"]

        # A second process sending another run through the same server waits too.
        other = make_engine(settings.database_url)
        try:
            clock.set(NOW + timedelta(seconds=1))
            test_run = prepare_test_run(_runtime(settings, other, clock), "spring-sale", to="me@example.org").run_id
            _sender(settings, other, clock).drain([test_run], wait_for_retries=False)
        finally:
            other.dispose()
        assert len(sink.messages) == 1
        assert {(r.status, r.next_attempt_at) for r in _rows(db, test_run)} == {("queued", until)}
