"""`valuemail --as-of`: every command acts as of an instant, with time running on from there."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlmodel import Session

from engine.clock import ShiftedClock
from engine.models import Delivery
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts


def test_a_shifted_clock_starts_at_the_instant_and_runs_on():
    start = datetime(2027, 3, 20, 8, tzinfo=timezone.utc)
    clock = ShiftedClock(start)
    first, second = clock.now(), clock.now()
    assert start <= first <= second < start + timedelta(seconds=5)
    assert first.tzinfo is timezone.utc


def test_send_acts_as_of_the_given_instant(project, settings, db, monkeypatch):
    only_spring_sale(project)
    add_contacts(db, 2)
    # After the offer ended the campaign is finished and `send` refuses it ...
    late = cli(settings, "--as-of", "2027-04-10T12:00", "send", "spring-sale")
    assert late.exit_code == 1 and "2027-04-03" in late.output, late.output
    # ... during it, it is sent, stamped with the instant given (here through the environment).
    monkeypatch.setenv("VALUEMAIL_AS_OF", "2027-03-25T10:00:00+01:00")
    sent = cli(settings, "send", "spring-sale")
    assert sent.exit_code == 0, sent.output
    with Session(db) as s:
        stamps = s.execute(select(Delivery.sent_at)).scalars().all()
    start = datetime(2027, 3, 25, 9, tzinfo=timezone.utc)
    assert len(stamps) == 2 and all(start <= t < start + timedelta(minutes=5) for t in stamps)


def test_a_malformed_instant_names_the_option(settings):
    result = cli(settings, "--as-of", "next tuesday", "send", "spring-sale")
    assert result.exit_code == 2 and "--as-of" in result.output and "ISO 8601" in result.output
