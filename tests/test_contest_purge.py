"""Retention: contacts made for contest confirmations that were never confirmed are erased after N days.

Set up through the real share-link path (`request_confirmation` queues the confirmation mail and
makes the TRANSACTIONAL_ONLY contact), then purged by the domain function, by `valuemail tick`
(the scheduler's tick) and by `valuemail contest purge-unconfirmed`, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, or_, select, update
from sqlmodel import Session

from engine import contests
from engine.campaigns import load_campaign
from engine.db import session_scope
from engine.models import Contact, ContestEntry, Delivery, Order, Suppression
from engine.privacy import erased_address
from engine.sending import ledger
from engine.suppression import fingerprint, is_suppressed
from tests.sending.test_send import cli
from tests.support.data import add_contacts

UTC = timezone.utc
OPENS = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)
ASKED = OPENS + timedelta(days=1)
ASKED_AGAIN = OPENS + timedelta(days=19)  # still inside the entry window (it closes on 27 April)
PURGE = ASKED + timedelta(days=30, seconds=1)


@pytest.fixture
def contest(settings, db):
    """spring-contest opened, user0 (subscribed) entered: the referrer of every share link below."""
    campaign = load_campaign(settings.campaigns_dir / "spring-contest.toml", settings=settings, segment_names=None,
                             today=None)
    add_contacts(db, 1)
    with session_scope(db) as s:
        ledger.sync_campaign(s, campaign, now=OPENS)
        contests.open_contest(s, campaign.id, now=OPENS)
        referrer = s.execute(select(Contact.id).where(Contact.email_key == "user0@example.com")).scalar_one()
        contests.enter(s, campaign.id, referrer, rules=_rules(campaign, settings), now=OPENS)
    return campaign, referrer


def _rules(campaign, settings):
    return contests.ContestRules.from_section(campaign.section, tz=settings.tz)


def ask(db, settings, contest, email: str, *, at: datetime) -> bool:
    """A visitor of the share link asks for the confirmation mail for `email`."""
    campaign, referrer = contest
    with session_scope(db) as s:
        return contests.request_confirmation(s, campaign, rules=_rules(campaign, settings), email=email,
                                             referrer_id=referrer, language="en", settings=settings, now=at)


def contact_of(db, email: str) -> Contact | None:
    with Session(db) as s:
        return s.execute(select(Contact).where(Contact.email_key == email)).scalars().first()


def traces(db, email: str) -> list[str]:
    """Every table where the address (or its erasure fingerprint) still appears."""
    found = []
    with Session(db) as s:
        if s.execute(select(Contact.id).where(or_(Contact.email == email, Contact.email_key == email))).first():
            found.append("contacts")
        if s.execute(select(Delivery.id).where(Delivery.email == email)).first():
            found.append("deliveries")
        if s.execute(select(Suppression.id).where(Suppression.email_key.in_([email, fingerprint(email)]))).first():
            found.append("suppressions")
    return found


def test_only_contacts_never_confirmed_and_untouched_for_n_days_are_erased(settings, db, contest):
    campaign, referrer = contest
    for email in ("never@example.org", "confirmed@example.org", "bounced@example.org", "again@example.org",
                  "customer@example.org"):
        assert ask(db, settings, contest, email, at=ASKED)
    with session_scope(db) as s:
        # Their confirmation mails went out; one bounced hard; one address placed an order since.
        s.execute(update(Delivery).where(Delivery.contact_id != referrer).values(status="sent"))
        s.add(Suppression(email_key="bounced@example.org", reason="hard_bounce", created_at=ASKED))
        customer = s.execute(select(Contact).where(Contact.email_key == "customer@example.org")).scalars().one()
        s.add(Order(order_id="EX-9", contact_id=customer.id, placed_at=ASKED, total_cents=100, currency="EUR",
                    status="paid", updated_at=ASKED))
    with session_scope(db) as s:
        contests.confirm_entry(s, contests.Confirmation(campaign.id, "confirmed@example.org", referrer),
                               rules=_rules(campaign, settings), language="en", newsletter=False, now=ASKED)
    assert ask(db, settings, contest, "again@example.org", at=ASKED_AGAIN)  # asked again: its new link still works
    never = contact_of(db, "never@example.org")
    bounced = contact_of(db, "bounced@example.org")

    # Not yet N days old: nothing goes.
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=PURGE - timedelta(seconds=2)) == 0
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=PURGE) == 2

    gone = contact_of(db, erased_address(never.id))
    assert gone.erased_at == PURGE and gone.status == "unsubscribed" and gone.first_name == "" and gone.language is None
    assert traces(db, "never@example.org") == []  # nothing of the address stays, not even the fingerprint
    # The bounce is still honoured, now only as the erasure fingerprint.
    assert traces(db, "bounced@example.org") == ["suppressions"]
    with Session(db) as s:
        assert is_suppressed(s, "bounced@example.org") and not is_suppressed(s, "never@example.org")
        assert s.get(Contact, bounced.id).erased_at == PURGE
        assert s.execute(select(Delivery.email).where(Delivery.contact_id == never.id)).scalars().all() \
            == [erased_address(never.id)]
    for kept, status in (("confirmed@example.org", "transactional"), ("again@example.org", "transactional"),
                         ("customer@example.org", "transactional"), ("user0@example.com", "subscribed")):
        contact = contact_of(db, kept)
        assert contact is not None and contact.erased_at is None and contact.status == status, kept
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ContestEntry)).scalar() == 2  # the entries stay

    # The one who asked again goes N days after the last request, unless a new one came in between.
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=ASKED_AGAIN + timedelta(days=29)) == 0
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=ASKED_AGAIN + timedelta(days=31)) == 1
    assert contact_of(db, "again@example.org") is None and traces(db, "again@example.org") == []

    # A purged address that was never suppressed may ask again later, as anyone may.
    later = OPENS + timedelta(days=20)
    assert ask(db, settings, contest, "never@example.org", at=later)
    assert contact_of(db, "never@example.org").status == "transactional"


def test_a_call_erases_one_batch(settings, db, contest):
    for n in range(3):
        assert ask(db, settings, contest, f"friend{n}@example.org", at=ASKED)
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=PURGE, limit=2) == 2
    with session_scope(db) as s:
        assert contests.purge_unconfirmed(s, older_than=timedelta(days=30), now=PURGE, limit=2) == 1
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Contact).where(Contact.erased_at.is_not(None))).scalar() == 3


def test_the_tick_and_the_command_purge_with_the_configured_days(settings, db, contest):
    for n in range(3):
        assert ask(db, settings, contest, f"friend{n}@example.org", at=ASKED)
    at = (ASKED + timedelta(days=10)).isoformat()

    # Ten days on: the default 30 keeps them, the command's --days 7 does not (after a dry run).
    result = cli(settings, "--as-of", at, "contest", "purge-unconfirmed")
    assert result.exit_code == 0 and "erased 0 contest contact(s) never confirmed within 30 days" in result.output
    result = cli(settings, "--as-of", at, "contest", "purge-unconfirmed", "--days", "7", "--dry-run")
    assert result.exit_code == 0
    assert "3 contest contact(s) never confirmed within 7 days would be erased" in result.output
    assert contact_of(db, "friend0@example.org") is not None
    result = cli(settings, "--as-of", at, "contest", "purge-unconfirmed", "--days", "7")
    assert result.exit_code == 0 and "erased 3 contest contact(s) never confirmed within 7 days" in result.output
    assert all(traces(db, f"friend{n}@example.org") == [] for n in range(3))
    assert cli(settings, "contest", "purge-unconfirmed", "--days", "0").exit_code == 2

    # The scheduler's tick, with the key set in config.toml.
    assert ask(db, settings, contest, "late@example.org", at=ASKED + timedelta(days=11))
    config = Path(settings.source)
    config.write_text(config.read_text() + "[scheduler]\npurge_unconfirmed_after_days = 5\n")
    result = cli(settings, "tick", "--at", (ASKED + timedelta(days=15)).isoformat())
    assert "contacts: erased" not in result.output and contact_of(db, "late@example.org") is not None
    result = cli(settings, "tick", "--at", (ASKED + timedelta(days=16, seconds=1)).isoformat())
    assert "contacts: erased 1 contest contact(s) never confirmed within 5 days" in result.output, result.output
    assert traces(db, "late@example.org") == []
