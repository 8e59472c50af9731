"""The bounce policy on SQLite and PostgreSQL: timelines, suppression, soft-bounce counting, idempotency."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.bounces import apply_events, find_delivery
from engine.clock import FixedClock
from engine.config import WebhookSettings
from engine.db import session_scope
from engine.models import Contact, Delivery, DeliveryEvent, Suppression
from engine.webhooks.base import BounceKind, EventType, WebhookEvent

from tests.web.factories import T0, make_campaign, make_contact, make_delivery, make_run

NOW = T0 + timedelta(days=2)


@pytest.fixture
def clock():
    return FixedClock(NOW)


@pytest.fixture
def mail(db):
    """Alice: sent in runs 1 and 2, queued in run 3; Bob: sent in run 1; a test run sent to the marketer."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        runs = [make_run(s, campaign, occurrence_at=T0 + timedelta(days=i)) for i in range(3)]
        test_run = make_run(s, campaign, occurrence_at=T0 + timedelta(days=10), is_test=True)
        alice, bob = make_contact(s, "Alice@Example.com"), make_contact(s, "bob@example.com")
        return {
            "alice1": make_delivery(s, runs[0], alice, status="sent", provider="sendgrid",
                                    provider_message_id="sg-alice-1", message_id="<1.1@valuemail>").id,
            "alice2": make_delivery(s, runs[1], alice, status="sent", message_id="<2.1@valuemail>").id,
            "alice3": make_delivery(s, runs[2], alice).id,
            "bob1": make_delivery(s, runs[0], bob, status="sent", provider_message_id="sg-bob-1").id,
            "test": _sent_to(s, make_delivery(s, test_run, alice, status="sent"), "marketer@example.com"),
            "run1": runs[0].id, "alice": alice.id, "bob": bob.id,
        }


def _sent_to(session, delivery, address) -> int:
    # A test mail goes to the marketer, rendered with a real contact's data.
    delivery.email = address
    session.add(delivery)
    session.flush()
    return delivery.id


def bounce(recipient, key, *, kind=BounceKind.hard, delivery_id="", at=None, **fields) -> WebhookEvent:
    return WebhookEvent(key=key, type=EventType.bounced, recipient=recipient, kind=kind, code="5.1.1",
                        diagnostic="550 5.1.1 user unknown", delivery_id=str(delivery_id), occurred_at=at, **fields)


def apply(db, clock, events, settings=None):
    with session_scope(db) as s:
        return apply_events(s, events, provider="sendgrid", settings=settings or WebhookSettings(), clock=clock)


def timeline(db, delivery_id):
    with Session(db) as s:
        return [(e.type, e.occurred_at, e.data) for e in s.execute(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id).order_by(DeliveryEvent.id)).scalars()]


def suppressions(db):
    with Session(db) as s:
        return {r.email_key: (r.reason, r.note) for r in s.execute(select(Suppression)).scalars()}


def test_a_hard_bounce_is_on_the_timeline_and_suppresses_at_once(db, clock, mail):
    result = apply(db, clock, [bounce("alice@example.com", "e1", delivery_id=mail["alice1"], at=T0)])
    assert (result.applied, result.suppressed) == (1, ["alice@example.com"])
    assert timeline(db, mail["alice1"]) == [("bounced", T0, {"provider": "sendgrid", "kind": "hard", "code": "5.1.1",
                                                              "diagnostic": "550 5.1.1 user unknown"})]
    assert suppressions(db) == {"alice@example.com": ("hard_bounce", "sendgrid bounced: 550 5.1.1 user unknown")}
    with Session(db) as s:
        assert s.get(Delivery, mail["alice3"]).status == "skipped"  # the queued mail will not go out
        assert s.get(Delivery, mail["bob1"]).status == "sent"
        assert s.get(Contact, mail["bob"]).status == "subscribed"


def test_a_complaint_suppresses_at_once(db, clock, mail):
    event = WebhookEvent(key="c1", type=EventType.complained, recipient="bob@example.com",
                         provider_message_ids=("sg-bob-1",), diagnostic="abuse")
    assert apply(db, clock, [event]).applied == 1
    assert timeline(db, mail["bob1"]) == [("complained", NOW, {"provider": "sendgrid", "diagnostic": "abuse"})]
    assert suppressions(db) == {"bob@example.com": ("complaint", "sendgrid complained: abuse")}


def test_a_delivery_report_only_adds_to_the_timeline(db, clock, mail):
    event = WebhookEvent(key="d1", type=EventType.delivered, recipient="bob@example.com", delivery_id=str(mail["bob1"]),
                         occurred_at=T0 + timedelta(minutes=1))
    apply(db, clock, [event])
    assert [e[0] for e in timeline(db, mail["bob1"])] == ["delivered"]
    assert suppressions(db) == {}


def test_three_soft_bounces_suppress_but_two_do_not(db, clock, mail):
    soft = [bounce("alice@example.com", f"s{i}", kind=BounceKind.soft, delivery_id=d, at=NOW - timedelta(days=i))
            for i, d in enumerate((mail["alice1"], mail["alice2"], mail["alice1"]))]
    apply(db, clock, soft[:2])
    assert suppressions(db) == {}
    with Session(db) as s:
        assert s.get(Delivery, mail["alice3"]).status == "queued"
    apply(db, clock, soft[2:])
    reason, note = suppressions(db)["alice@example.com"]
    assert reason == "soft_bounce" and note.startswith("3 soft bounces in 30 days; last sendgrid bounced: 550")


def test_soft_bounces_older_than_the_window_do_not_count(db, clock, mail):
    old = [bounce("alice@example.com", f"old{i}", kind=BounceKind.soft, delivery_id=mail["alice1"],
                  at=NOW - timedelta(days=31 + i)) for i in range(2)]
    apply(db, clock, old + [bounce("alice@example.com", "new", kind=BounceKind.soft, delivery_id=mail["alice2"],
                                   at=NOW - timedelta(days=1))])
    assert len(timeline(db, mail["alice1"])) == 2
    assert suppressions(db) == {}


def test_the_soft_bounce_limit_and_window_are_configurable(db, clock, mail):
    settings = WebhookSettings(soft_bounce_limit=2, soft_bounce_days=60)
    apply(db, clock, [bounce("alice@example.com", f"s{i}", kind=BounceKind.soft, delivery_id=mail["alice1"],
                             at=NOW - timedelta(days=45 * i)) for i in range(2)], settings)
    assert suppressions(db)["alice@example.com"][0] == "soft_bounce"


def test_the_same_event_twice_is_recorded_once(db, clock, mail):
    event = bounce("alice@example.com", "once", kind=BounceKind.soft, delivery_id=mail["alice1"])
    assert apply(db, clock, [event]).applied == 1
    again = apply(db, clock, [event, event])
    assert (again.applied, again.duplicates) == (0, 2)
    assert len(timeline(db, mail["alice1"])) == 1


def test_lookup_by_provider_id_then_message_id(db, mail):
    with Session(db) as s:
        by_provider = find_delivery(s, bounce("ALICE@example.com", "k", provider_message_ids=("x", "sg-alice-1")))
        by_message_id = find_delivery(s, bounce("alice@example.com", "k", message_id="2.1@valuemail"))
        assert (by_provider.id, by_message_id.id) == (mail["alice1"], mail["alice2"])


def test_metadata_is_cross_checked_against_the_recipient_and_run(db, mail):
    with Session(db) as s:
        # Bob's delivery id with Alice's address: not trusted; the provider id finds Alice's mail instead.
        assert find_delivery(s, bounce("alice@example.com", "k", delivery_id=mail["bob1"],
                                       provider_message_ids=("sg-alice-1",))).id == mail["alice1"]
        assert find_delivery(s, bounce("alice@example.com", "k", delivery_id=mail["bob1"])) is None
        assert find_delivery(s, bounce("alice@example.com", "k", delivery_id=mail["alice1"], run_id="999")) is None
        assert find_delivery(s, bounce("alice@example.com", "k", delivery_id=mail["alice1"],
                                       run_id=str(mail["run1"]))).id == mail["alice1"]
        assert find_delivery(s, bounce("bob@example.com", "k", provider_message_ids=("sg-alice-1",))) is None
        assert find_delivery(s, bounce("alice@example.com", "k", delivery_id="99999999999999999999999")) is None


def test_an_address_never_mailed_is_ignored_and_creates_nothing(db, clock, mail):
    result = apply(db, clock, [bounce("stranger@example.com", "x", delivery_id=mail["alice1"]),
                               bounce("stranger@example.com", "y", provider_message_ids=("nope",))])
    assert (result.applied, result.unmatched) == (0, 2)
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Contact)).scalar() == 2
        assert s.execute(select(func.count()).select_from(DeliveryEvent)).scalar() == 0
    assert suppressions(db) == {}


def test_a_bounce_of_a_test_mail_suppresses_the_marketer_not_the_contact(db, clock, mail):
    apply(db, clock, [bounce("marketer@example.com", "t", delivery_id=mail["test"])])
    assert set(suppressions(db)) == {"marketer@example.com"}
    with Session(db) as s:
        assert s.get(Contact, mail["alice"]).status == "subscribed"
        assert s.get(Delivery, mail["alice3"]).status == "queued"


def test_an_event_in_the_future_is_recorded_as_now(db, clock, mail):
    apply(db, clock, [bounce("alice@example.com", "f", kind=BounceKind.soft, delivery_id=mail["alice1"],
                             at=NOW + timedelta(days=400))])
    assert timeline(db, mail["alice1"])[0][1] == NOW


def test_concurrent_soft_bounces_still_reach_the_limit(db, clock, mail):
    """The third soft bounce arrives while the second's transaction is still open: it waits, then counts both."""
    apply(db, clock, [bounce("alice@example.com", "s1", kind=BounceKind.soft, delivery_id=mail["alice1"])])
    first = Session(db)
    try:
        apply_events(first, [bounce("alice@example.com", "s2", kind=BounceKind.soft, delivery_id=mail["alice1"])],
                     provider="sendgrid", settings=WebhookSettings(), clock=clock)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (apply(db, clock, [bounce(
            "alice@example.com", "s3", kind=BounceKind.soft, delivery_id=mail["alice2"])]), done.set()))
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # waiting for the open transaction, not counting without it
        first.commit()
        worker.join(timeout=30)
        assert done.is_set()
    finally:
        first.close()
    assert suppressions(db)["alice@example.com"][0] == "soft_bounce"
