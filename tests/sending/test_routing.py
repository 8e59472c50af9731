"""Routing: a campaign's own provider, failover to the fallback when a provider is down, the breaker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.clock import FixedClock
from engine.errors import ConfigError
from engine.models import Delivery, Run
from engine.providers import SendResult, provider_factory
from engine.rendering import Renderer
from engine.runtime import Runtime
from engine.sending.routing import Breaker, Router
from engine.sending.service import prepare_run
from engine.sending.worker import Sender
from tests.conftest import write_settings
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink, free_port

FAILOVER = '[provider]\nname = "smtp"\nfallback = "outbox"\nfailover_after = {after}\nfailover_cooldown_seconds = 60\n'


class Scripted:
    """A stand-in provider whose answer is a function of the recipient; it records every call."""

    def __init__(self, name: str, answer, calls: list[str]):
        self.name, self.answer, self.calls = name, answer, calls

    def send(self, message):
        self.calls.append(message.recipient)
        return self.answer(message.recipient)

    def close(self):
        pass


def down(_recipient):
    return SendResult.temporary("ConnectionRefusedError: [Errno 111] Connection refused", unavailable=True)


def up(recipient):
    return SendResult.ok(f"id-{recipient}")


def _runtime(settings, db, clock):
    runtime = Runtime(settings=settings, clock=clock)
    runtime.__dict__["engine"] = db
    return runtime


def _sender(settings, db, clock, primary=None):
    """A Sender whose configured provider is `primary` (a factory) or the real one; others are real."""
    return Sender(engine=db, settings=settings, clock=clock, provider_factory=primary or provider_factory(settings),
                  renderer=Renderer(settings.templates_dir))


def _rows(db, run_id):
    with Session(db) as s:
        return s.execute(select(Delivery.email, Delivery.status, Delivery.provider, Delivery.attempts,
                                Delivery.last_error, Delivery.next_attempt_at)
                         .where(Delivery.run_id == run_id).order_by(Delivery.id)).all()


def _outbox(settings):
    return sorted((settings.var_dir / "outbox").glob("*.eml"))


def test_a_down_smtp_primary_fails_over_to_the_outbox(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 5)
    closed = free_port()  # nothing listens there: connection refused
    settings = write_settings(project, database_url, sending={"concurrency": 1},
                              extra=FAILOVER.format(after=3) + f'[provider.smtp]\nport = {closed}\ntimeout = 2\n')
    clock = FixedClock(T0)
    run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    _sender(settings, db, clock).drain([run_id], wait_for_retries=False)
    rows = _rows(db, run_id)
    assert [(r.status, r.provider, r.attempts) for r in rows] == [("sent", "outbox", 1)] * 5
    assert len(_outbox(settings)) == 5
    with Session(db) as s:
        assert s.get(Run, run_id).status == "finished"


def test_a_campaign_provider_routes_its_runs_and_test_sends(project, database_url, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text('provider = "smtp"\n' + path.read_text())
    add_contacts(db, 3)
    with SmtpSink() as sink:
        settings = write_settings(project, database_url, extra=f'[provider.smtp]\nport = {sink.port}\ntimeout = 5\n')
        assert settings.provider.name == "outbox"
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        test = cli(settings, "send", "spring-sale", "--test-to", "marketer@example.org")
        assert test.exit_code == 0, test.output
        received = sink.messages
    assert sorted(r for m in received for r in m.recipients) == \
        ["marketer@example.org", "user0@example.com", "user1@example.com", "user2@example.com"]
    assert _outbox(settings) == []
    with Session(db) as s:
        assert set(s.execute(select(Delivery.provider, Delivery.status)).all()) == {("smtp", "sent")}


def test_an_unknown_campaign_provider_is_a_located_validation_error(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, 'provider = "carrier-pigeon"\n')
    path.write_text("".join(lines))
    result = cli(settings, "validate")
    assert result.exit_code == 1
    assert f"{path}:4: unknown provider 'carrier-pigeon' (installed: " in result.output


def test_fallback_must_differ_from_the_provider(project):
    with pytest.raises(ConfigError) as caught:
        write_settings(project, "sqlite:///unused.db", extra='[provider]\nname = "smtp"\nfallback = "smtp"\n')
    assert "config.toml:9: 'provider.fallback': must name another provider" in str(caught.value)


def test_routes_a_campaign_provider_to_the_global_fallback_unless_it_is_the_fallback(settings):
    provider = settings.provider.model_copy(update={"name": "smtp", "fallback": "outbox"})
    router = Router(settings=provider, factory_for=lambda name: None)
    assert (router.route(None).primary, router.route(None).fallback) == ("smtp", "outbox")
    assert (router.route("postmark").primary, router.route("postmark").fallback) == ("postmark", "outbox")
    assert (router.route("outbox").primary, router.route("outbox").fallback) == ("outbox", None)


def test_the_breaker_skips_the_primary_then_lets_one_probe_through(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 6)
    settings = write_settings(project, database_url, extra=FAILOVER.format(after=2),
                              sending={"concurrency": 1, "batch_size": 2, "max_per_day": 0, "max_per_week": 0})
    clock = FixedClock(T0)
    calls: list[str] = []
    answer = {"now": down}
    sender = _sender(settings, db, clock, primary=lambda: Scripted("smtp", lambda r: answer["now"](r), calls))
    first = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    sender.drain([first], wait_for_retries=False)
    # Two unavailable answers open the breaker: the other four never try the primary.
    assert calls == ["user0@example.com", "user1@example.com"]
    assert [r.provider for r in _rows(db, first)] == ["outbox"] * 6

    # Within the cooldown the primary stays skipped; once it is over, one probe finds it still down.
    add_contacts(db, 2, start=10)
    clock.set(T0 + timedelta(seconds=59))
    second = prepare_run(_runtime(settings, db, clock), "spring-sale", again=True).run_id
    sender.drain([second], wait_for_retries=False)
    assert len(calls) == 2
    clock.set(T0 + timedelta(seconds=61))
    third = prepare_run(_runtime(settings, db, clock), "spring-sale", again=True).run_id
    sender.drain([third], wait_for_retries=False)
    assert len(calls) == 3  # the probe; the breaker opened again for another cooldown
    assert [r.provider for r in _rows(db, third)] == ["outbox"] * 8

    # The next probe succeeds: the primary takes the rest again.
    answer["now"] = up
    clock.set(T0 + timedelta(seconds=122))
    fourth = prepare_run(_runtime(settings, db, clock), "spring-sale", again=True).run_id
    sender.drain([fourth], wait_for_retries=False)
    assert len(calls) == 3 + 8
    assert [(r.status, r.provider) for r in _rows(db, fourth)] == [("sent", "smtp")] * 8


def test_uncertain_recipient_failures_and_throttles_never_fail_over(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 4)
    settings = write_settings(project, database_url, sending={"concurrency": 1},
                              extra=FAILOVER.format(after=1))
    answers = {
        "user0@example.com": SendResult.uncertain("connection lost after the final '.'"),
        "user1@example.com": SendResult.permanent("550 5.1.1 no such user", code=550),
        "user2@example.com": SendResult.temporary("452 4.2.2 mailbox full", code=452),
        "user3@example.com": SendResult.temporary("421 4.7.0 slow down", code=421, retry_after=30, throttled=True,
                                                  unavailable=True),
    }
    calls: list[str] = []
    clock = FixedClock(T0)
    run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    _sender(settings, db, clock, primary=lambda: Scripted("smtp", answers.__getitem__, calls)).drain(
        [run_id], wait_for_retries=False)
    rows = {r.email: r for r in _rows(db, run_id)}
    assert _outbox(settings) == []
    assert (rows["user0@example.com"].status, rows["user0@example.com"].provider) == ("uncertain", "smtp")
    assert (rows["user1@example.com"].status, rows["user1@example.com"].attempts) == ("failed", 1)
    assert (rows["user2@example.com"].status, rows["user2@example.com"].attempts) == ("queued", 1)
    throttled = rows["user3@example.com"]
    assert (throttled.status, throttled.attempts) == ("queued", 0)  # not the message's fault
    assert throttled.next_attempt_at == T0 + timedelta(seconds=30)


def test_when_both_providers_are_down_the_message_is_retried_with_both_errors(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 2)
    settings = write_settings(project, database_url, sending={"concurrency": 1, "retry_base_seconds": 60},
                              extra=FAILOVER.format(after=5))
    calls: list[str] = []
    fallback_calls: list[str] = []
    clock = FixedClock(T0)
    run_id = prepare_run(_runtime(settings, db, clock), "spring-sale").run_id
    sender = Sender(engine=db, settings=settings, clock=clock, provider_factory=lambda: Scripted("smtp", down, calls),
                    factory_for=lambda name: lambda: Scripted(name, lambda r: SendResult.temporary(
                        "503 Service Unavailable", code=503, unavailable=True), fallback_calls),
                    renderer=Renderer(settings.templates_dir))
    sender.drain([run_id], wait_for_retries=False)
    assert calls == fallback_calls == ["user0@example.com", "user1@example.com"]
    for row in _rows(db, run_id):
        assert (row.status, row.attempts, row.next_attempt_at) == ("queued", 1, T0 + timedelta(seconds=60))
        assert row.last_error == "smtp: ConnectionRefusedError: [Errno 111] Connection refused; " \
                                 "outbox: 503 Service Unavailable"


def test_breaker_counts_only_consecutive_unavailability():
    breaker = Breaker("smtp", after=3, cooldown=timedelta(seconds=60))
    for unavailable in (True, True, False, True, True):
        breaker.record(unavailable=unavailable, now=T0)
    assert breaker.allow(T0) and breaker.state(T0) == "closed"
    breaker.record(unavailable=True, now=T0)
    assert not breaker.allow(T0 + timedelta(seconds=59))
    assert breaker.allow(T0 + timedelta(seconds=60))  # the probe
    assert not breaker.allow(T0 + timedelta(seconds=60))  # only one at a time
    breaker.release()  # that probe's message had to wait (throttled): another caller probes instead
    assert breaker.allow(T0 + timedelta(seconds=60))
    breaker.record(unavailable=False, now=T0 + timedelta(seconds=61))
    assert breaker.allow(T0 + timedelta(seconds=61)) and breaker.state(T0) == "closed"
