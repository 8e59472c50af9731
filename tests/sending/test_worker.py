"""The sending threads: unsubscribes mid-batch, render failures, rate limiting."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlmodel import Session

from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import Delivery
from engine.providers.outbox import OutboxProvider
from engine.rendering import Renderer
from engine.runtime import Runtime
from engine.sending.service import prepare_run
from engine.sending.worker import RateLimiter, Sender
from engine.suppression import unsubscribe
from tests.sending.test_send import SEGMENTS, only_spring_sale
from tests.support.data import T0, add_contacts


def _sender(settings, db, provider_factory):
    return Sender(engine=db, settings=settings, clock=FixedClock(T0), provider_factory=provider_factory,
                  renderer=Renderer(settings.templates_dir))


def test_an_unsubscribe_during_a_batch_stops_the_very_next_send(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 5)
    runtime = Runtime(settings=settings, clock=FixedClock(T0))
    runtime.__dict__["engine"] = db
    prepared = prepare_run(runtime, "spring-sale")
    sent: list[str] = []

    class Unsubscribing(OutboxProvider):
        def send(self, message):
            sent.append(message.recipient)
            if len(sent) == 1:  # user3 clicks one-click unsubscribe while user0 is being sent
                with Session(db) as s:
                    third = s.execute(select(Delivery.id).where(Delivery.email == "user3@example.com")).scalar()
                with session_scope(db) as s:
                    unsubscribe(s, delivery_id=third, reason="unsubscribe", clock=FixedClock(T0))
            return super().send(message)

    settings = settings.model_copy(update={"sending": settings.sending.model_copy(update={"concurrency": 1})})
    _sender(settings, db, lambda: Unsubscribing(settings.var_dir / "outbox")).drain([prepared.run_id])
    assert "user3@example.com" not in sent and len(sent) == 4
    with Session(db) as s:
        skipped = s.execute(select(Delivery.email, Delivery.last_error).where(Delivery.status == "skipped")).all()
    assert skipped == [("user3@example.com", "unsubscribed or suppressed")]


def test_a_contact_whose_data_breaks_the_template_fails_alone(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("{{ contact.first_name or 'Hello' }}", "{{ contact.attributes.nickname }}"))
    add_contacts(db, 2)
    add_contacts(db, 2, start=10, attributes={"nickname": "Kiki"})
    runtime = Runtime(settings=settings, clock=FixedClock(T0))
    runtime.__dict__["engine"] = db
    prepared = prepare_run(runtime, "spring-sale")
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([prepared.run_id])
    with Session(db) as s:
        rows = dict(s.execute(select(Delivery.email, Delivery.status)).all())
        error = s.execute(select(Delivery.last_error).where(Delivery.email == "user0@example.com")).scalar()
    assert rows == {"user0@example.com": "failed", "user1@example.com": "failed",
                    "user10@example.com": "sent", "user11@example.com": "sent"}
    assert "nickname" in error and error.startswith("render:")


def test_the_rate_limiter_spaces_messages():
    limiter = RateLimiter(200)
    start = time.monotonic()
    for _ in range(41):
        limiter.wait()
    assert time.monotonic() - start >= 0.19
    assert RateLimiter(0).interval == 0  # 0 means unlimited: wait() returns at once


def test_a_second_manual_send_at_the_same_instant_is_a_new_occurrence(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 2)
    runtime = Runtime(settings=settings, clock=FixedClock(T0))  # both sends see the very same instant
    runtime.__dict__["engine"] = db
    first = prepare_run(runtime, "spring-sale")
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([first.run_id])
    again = prepare_run(runtime, "spring-sale", again=True)
    assert again.run_id != first.run_id and not again.resumed and again.total == 2
