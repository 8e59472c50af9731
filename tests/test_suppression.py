"""Unsubscribing: the suppression list, contact status and the contact's queued deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from engine.clock import FixedClock
from engine.db import session_scope
from engine.errors import NotFound
from engine.models import Contact, Delivery, Suppression
from engine.suppression import is_suppressed, unsubscribe

from tests.web.factories import T0, make_campaign, make_contact, make_delivery, make_run

LATER = T0 + timedelta(hours=2)


@pytest.fixture
def clock():
    return FixedClock(LATER)


@pytest.fixture
def ledger(db):
    """Alice and Bob in two runs, with deliveries in several states."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run1 = make_run(s, campaign)
        run2 = make_run(s, campaign, occurrence_at=T0 + timedelta(days=7))
        alice = make_contact(s, "Alice@Example.com")
        bob = make_contact(s, "bob@example.com")
        ids = {
            "alice_run1_queued": make_delivery(s, run1, alice).id,
            "alice_run2_queued": make_delivery(s, run2, alice).id,
            "bob_run1_queued": make_delivery(s, run1, bob).id,
            "bob_run2_sent": make_delivery(s, run2, bob, status="sent").id,
            "alice": alice.id,
            "bob": bob.id,
        }
    return ids


def _states(db) -> dict[int, tuple[str, str | None]]:
    with Session(db) as s:
        return {d.id: (d.status, d.last_error) for d in s.exec(select(Delivery)).all()}


def test_unsubscribe_by_delivery_suppresses_and_skips_queued(db, ledger, clock):
    with session_scope(db) as s:
        result = unsubscribe(s, delivery_id=ledger["alice_run1_queued"], reason="unsubscribe", clock=clock)
    assert result.email_key == "alice@example.com"
    assert result.contact_id == ledger["alice"]
    assert result.newly_suppressed is True
    assert result.skipped_deliveries == 2  # both runs: nothing still queued may go out
    with Session(db) as s:
        alice = s.get(Contact, ledger["alice"])
        assert alice.status == "unsubscribed"
        assert alice.updated_at == LATER
        rows = s.exec(select(Suppression)).all()
        assert [(r.email_key, r.reason, r.created_at) for r in rows] == [("alice@example.com", "unsubscribe", LATER)]
        assert s.get(Contact, ledger["bob"]).status == "subscribed"
    states = _states(db)
    assert states[ledger["alice_run1_queued"]] == ("skipped", "unsubscribed")
    assert states[ledger["alice_run2_queued"]] == ("skipped", "unsubscribed")
    assert states[ledger["bob_run1_queued"]] == ("queued", None)
    assert states[ledger["bob_run2_sent"]] == ("sent", None)


def test_claimed_and_sent_deliveries_are_left_to_the_sender(db, clock):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        carol = make_contact(s, "carol@example.com")
        claimed = make_delivery(s, run, carol, status="claimed", claimed_by="w1").id
    with session_scope(db) as s:
        result = unsubscribe(s, delivery_id=claimed, reason="unsubscribe", clock=clock)
    assert result.skipped_deliveries == 0
    assert _states(db)[claimed] == ("claimed", None)


def test_unsubscribe_is_idempotent(db, ledger, clock):
    with session_scope(db) as s:
        unsubscribe(s, delivery_id=ledger["alice_run1_queued"], reason="unsubscribe", clock=clock)
    before = _states(db)
    with session_scope(db) as s:
        again = unsubscribe(s, delivery_id=ledger["alice_run1_queued"], reason="unsubscribe", clock=clock)
    assert again.newly_suppressed is False
    assert again.skipped_deliveries == 0
    assert _states(db) == before
    with Session(db) as s:
        assert len(s.exec(select(Suppression)).all()) == 1


def test_unsubscribe_by_email_ignores_case(db, ledger, clock):
    with session_scope(db) as s:
        result = unsubscribe(s, email="  BOB@example.COM ", reason="manual", clock=clock)
    assert (result.email_key, result.contact_id, result.skipped_deliveries) == ("bob@example.com", ledger["bob"], 1)
    with Session(db) as s:
        assert s.get(Contact, ledger["bob"]).status == "unsubscribed"
        assert s.get(Contact, ledger["alice"]).status == "subscribed"
        assert s.exec(select(Suppression.reason)).all() == ["manual"]


def test_unsubscribe_an_address_that_is_not_a_contact(db, clock):
    with session_scope(db) as s:
        result = unsubscribe(s, email="stranger@example.com", reason="complaint", clock=clock)
    assert result.contact_id is None and result.newly_suppressed
    with Session(db) as s:
        assert is_suppressed(s, "stranger@example.com")


def test_first_reason_recorded_wins(db, ledger, clock):
    with session_scope(db) as s:
        unsubscribe(s, email="alice@example.com", reason="hard_bounce", clock=clock)
        unsubscribe(s, delivery_id=ledger["alice_run1_queued"], reason="unsubscribe", clock=clock)
    with Session(db) as s:
        assert s.exec(select(Suppression.reason)).all() == ["hard_bounce"]


def test_is_suppressed(db, ledger, clock):
    with Session(db) as s:
        assert not is_suppressed(s, "alice@example.com")
    with session_scope(db) as s:
        unsubscribe(s, delivery_id=ledger["alice_run1_queued"], reason="unsubscribe", clock=clock)
    with Session(db) as s:
        assert is_suppressed(s, "alice@example.com")
        assert is_suppressed(s, "ALICE@EXAMPLE.COM")
        assert not is_suppressed(s, "bob@example.com")


def test_bad_arguments(db, ledger, clock):
    with Session(db) as s:
        with pytest.raises(NotFound):
            unsubscribe(s, delivery_id=999_999, reason="unsubscribe", clock=clock)
        with pytest.raises(ValueError):
            unsubscribe(s, reason="unsubscribe", clock=clock)
        with pytest.raises(ValueError):
            unsubscribe(s, email="   ", reason="unsubscribe", clock=clock)
        with pytest.raises(ValueError):
            unsubscribe(s, email="alice@example.com", reason="because", clock=clock)
        s.rollback()
    with Session(db) as s:
        assert s.exec(select(Suppression)).all() == []


def test_unsubscribing_from_a_test_mail_never_touches_the_contact_it_was_rendered_for(db, settings):
    """A --test-to mail carries a real contact's data but went to the marketer."""
    from datetime import datetime, timezone

    from engine.clock import FixedClock
    from engine.db import session_scope
    from engine.models import Campaign, Contact, Delivery, Run, Suppression
    from engine.suppression import unsubscribe

    now = datetime(2027, 3, 1, tzinfo=timezone.utc)
    with session_scope(db) as s:
        s.add(Campaign(id="c", name="C", kind="seasonal_discount", values=[], definition={}, source_hash="x", synced_at=now))
        contact = Contact(email="real@example.com", email_key="real@example.com", created_at=now, updated_at=now)
        s.add(contact)
        s.flush()
        run = Run(campaign_id="c", occurrence_at=now, status="finished", is_test=True, created_at=now)
        s.add(run)
        s.flush()
        delivery = Delivery(run_id=run.id, contact_id=contact.id, email="marketer@example.org", segment="everyone",
                            status="sent", created_at=now, updated_at=now)
        s.add(delivery)
        s.flush()
        delivery_id, contact_id = delivery.id, contact.id
    with session_scope(db) as s:
        result = unsubscribe(s, delivery_id=delivery_id, reason="unsubscribe", clock=FixedClock(now))
        assert result.email_key == "marketer@example.org" and result.contact_id is None
    with session_scope(db) as s:
        assert s.get(Contact, contact_id).status == "subscribed"
        assert {x.email_key for x in s.exec(__import__("sqlmodel").select(Suppression)).all()} == {"marketer@example.org"}
