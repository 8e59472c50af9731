"""The sending threads: unsubscribes mid-batch, render failures, rate limiting."""

from __future__ import annotations

import re
import time

from sqlalchemy import select
from sqlmodel import Session

from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import Contact, Delivery, Order, Run
from engine.providers.outbox import OutboxProvider
from engine.rendering import Renderer
from engine.runtime import Runtime
from engine.sending.service import prepare_run
from engine.sending.worker import RateLimiter, Sender
from engine.suppression import unsubscribe
from tests.sending.test_send import only_spring_sale, parse
from tests.support.data import T0, add_contacts


def _sender(settings, db, provider_factory):
    return Sender(engine=db, settings=settings, clock=FixedClock(T0), provider_factory=provider_factory,
                  renderer=Renderer(settings.templates_dir))


def _runtime(settings, db) -> Runtime:
    runtime = Runtime(settings=settings, clock=FixedClock(T0))
    runtime.__dict__["engine"] = db
    return runtime


def _send_spring_sale(settings, db) -> None:
    """Start the spring sale's run and drain it to the outbox."""
    prepared = prepare_run(_runtime(settings, db), "spring-sale")
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([prepared.run_id])


def _unsubscribe(db, email):
    with Session(db) as s:
        delivery = s.execute(select(Delivery.id).where(Delivery.email == email)).scalar()
    with session_scope(db) as s:
        unsubscribe(s, delivery_id=delivery, reason="unsubscribe", clock=FixedClock(T0))


def test_an_unsubscribe_stops_the_contacts_mail_within_one_batch(project, settings, db):
    """The window is the batch in flight: the next batch is checked again just before it goes out."""
    only_spring_sale(project)
    add_contacts(db, 5)
    prepared = prepare_run(_runtime(settings, db), "spring-sale")
    batches: list[list[str]] = []

    class Unsubscribing(OutboxProvider):
        def send_batch(self, messages):
            batches.append([m.recipient for m in messages])
            if len(batches) == 1:
                # While the first batch (user0, user1) is with the provider, user1 and user3 unsubscribe;
                # user3's batch was claimed, checked and rendered already, user1's is on the wire.
                _unsubscribe(db, "user1@example.com")
                _unsubscribe(db, "user3@example.com")
            return [self.send(m) for m in messages]

    settings = settings.model_copy(update={"sending": settings.sending.model_copy(update={"batch_size": 2})})
    _sender(settings, db, lambda: Unsubscribing(settings.var_dir / "outbox")).drain([prepared.run_id])
    assert batches == [["user0@example.com", "user1@example.com"], ["user2@example.com"], ["user4@example.com"]]
    with Session(db) as s:
        statuses = dict(s.execute(select(Delivery.email, Delivery.status)).all())
        skipped = s.execute(select(Delivery.email, Delivery.last_error).where(Delivery.status == "skipped")).all()
    assert statuses["user1@example.com"] == "sent"  # inside the window: it was in flight already
    assert skipped == [("user3@example.com", "unsubscribed or suppressed")]


def test_a_contact_whose_data_breaks_the_template_fails_alone(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("{{ contact.first_name or 'Hello' }}", "{{ contact.attributes.nickname }}"))
    add_contacts(db, 2)
    add_contacts(db, 2, start=10, attributes={"nickname": "Kiki"})
    _send_spring_sale(settings, db)
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
    runtime = _runtime(settings, db)  # both sends see the very same instant
    first = prepare_run(runtime, "spring-sale")
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([first.run_id])
    again = prepare_run(runtime, "spring-sale", again=True)
    assert again.run_id != first.run_id and not again.resumed and again.total == 2


def test_a_contact_whose_name_cannot_be_a_header_fails_alone(project, settings, db):
    """A CR/LF in a name (imported or typed in a form) fails that delivery; the run goes on."""
    only_spring_sale(project)
    add_contacts(db, 2)
    add_contacts(db, 1, start=10, first_name="Ann\r\nBcc: everyone@example.com")
    _send_spring_sale(settings, db)
    with Session(db) as s:
        rows = dict(s.execute(select(Delivery.email, Delivery.status)).all())
    assert rows == {"user0@example.com": "sent", "user1@example.com": "sent", "user10@example.com": "failed"}
    assert len(list((settings.var_dir / "outbox").glob("*.eml"))) == 2


def test_a_contact_whose_data_makes_the_template_raise_anything_fails_alone(project, settings, db):
    """Not only render errors: whatever one contact's data makes the template raise fails that delivery."""
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("{{ contact.first_name or 'Hello' }}",
                                             "{{ contact.attributes.visits + 1 }} visits"))
    add_contacts(db, 2, attributes={"visits": 4})
    add_contacts(db, 1, start=10, attributes={"visits": "many"})  # "many" + 1: a TypeError in the sandbox
    _send_spring_sale(settings, db)
    with Session(db) as s:
        rows = dict(s.execute(select(Delivery.email, Delivery.status)).all())
        error = s.execute(select(Delivery.last_error).where(Delivery.email == "user10@example.com")).scalar()
    assert rows == {"user0@example.com": "sent", "user1@example.com": "sent", "user10@example.com": "failed"}
    assert error.startswith("render:") and "str" in error


def test_a_run_whose_campaign_no_longer_loads_pauses_and_the_other_runs_go_on(project, settings, db):
    only_spring_sale(project)
    campaigns = project / "campaigns"
    (campaigns / "autumn-sale.toml").write_text((campaigns / "spring-sale.toml").read_text())
    add_contacts(db, 2)
    runtime = _runtime(settings, db)
    broken, good = prepare_run(runtime, "spring-sale"), prepare_run(runtime, "autumn-sale")
    with session_scope(db) as s:  # as if its template file had been deleted since
        run = s.get(Run, broken.run_id)
        run.definition = {**run.definition, "source": run.definition["source"].replace(
            'template = "seasonal_discount.mjml"', 'template = "deleted-since.mjml"')}
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([broken.run_id, good.run_id])
    with Session(db) as s:
        statuses = dict(s.execute(select(Delivery.run_id, Delivery.status).distinct()).all())
        paused = s.get(Run, broken.run_id)
    assert statuses == {broken.run_id: "queued", good.run_id: "sent"}
    assert paused.status == "paused" and "no longer loads" in paused.pause_reason


def test_a_template_that_shows_a_contacts_orders_gets_them(project, settings, db):
    """LTV and order counts are read per batch only for templates that mention them; this one does."""
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("{{ contact.first_name or 'Hello' }}",
                                             "{{ contact.first_name }} ({{ contact.orders_count }} orders)"))
    add_contacts(db, 2)
    with session_scope(db) as s:
        first = s.execute(select(Contact.id).order_by(Contact.id)).scalars().first()
        for n in range(3):
            s.add(Order(order_id=f"A-{n}", contact_id=first, placed_at=T0, total_cents=5000, currency="EUR",
                        status="delivered", updated_at=T0))
    _send_spring_sale(settings, db)
    counts = sorted(re.search(r"\((\d+) orders\)", str(parse(p.read_bytes())["Subject"])).group(1)
                    for p in (settings.var_dir / "outbox").glob("*.eml"))
    assert counts == ["0", "3"]
