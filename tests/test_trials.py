"""Trials: what stops a drip, and the conversion rate of the contacts a drip reached (beside the seeds' ~20%)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from engine import trials
from engine.cli import main
from engine.db import session_scope
from engine.models import Campaign, Contact, Delivery, Event, Run, TriggerSend
from engine.trials import TrialEvent, stop_reason
from tests.support.data import add_contacts

UTC = timezone.utc
START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2027, 5, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = "trial-drip"


def ev(id_, type_, days, contact=1):
    return TrialEvent(id=id_, contact_id=contact, type=type_, occurred_at=START + timedelta(days=days))


@pytest.mark.parametrize("events, until_days, reason", [
    ([ev(1, "trial_started", 0)], 20, None),
    ([ev(1, "trial_started", 0), ev(2, "trial_converted", 5)], 20, "converted"),
    ([ev(1, "trial_started", 0), ev(2, "trial_converted", 5)], 4, None),  # not known yet at day 4
    ([ev(1, "trial_started", 0), ev(2, "trial_converted", 5)], 5, "converted"),  # at the instant itself
    ([ev(1, "trial_started", 0), ev(2, "trial_cancelled", 2)], 20, "cancelled"),
    ([ev(2, "trial_converted", -3), ev(1, "trial_started", 0)], 20, None),  # before this trial
    ([ev(1, "trial_started", 0), ev(3, "trial_started", 9)], 20, "superseded by a newer trial"),
    ([ev(1, "trial_started", 0), ev(2, "trial_converted", 0)], 20, "converted"),  # converted straight away
])
def test_what_ends_a_trial(events, until_days, reason):
    assert stop_reason(events, trial_id=1, started_at=START, until=START + timedelta(days=until_days)) == reason


# -- conversion rate ------------------------------------------------------------------------------

def setup_drip(db, outcomes: dict[int, tuple[str, float | None]]) -> None:
    """One contact per entry: trial started at START + i days, drip step sent (or not), maybe converted after N days.

    outcomes: contact index -> (delivery status of the step, days from trial start to trial_converted or None).
    """
    add_contacts(db, len(outcomes))
    with session_scope(db) as s:
        s.add(Campaign(id=CAMPAIGN, name="Trial", kind="demo_access", values=[], definition={}, source_hash="x",
                       synced_at=START))
        s.flush()
        contacts = list(s.execute(select(Contact.id, Contact.email).order_by(Contact.id)).all())
        for (i, (status, converted_after)), (contact_id, email) in zip(sorted(outcomes.items()), contacts):
            started = START + timedelta(days=i)
            event_id = s.execute(insert(Event).values(contact_id=contact_id, type="trial_started", occurred_at=started,
                                                      data={}).returning(Event.id)).scalar_one()
            if converted_after is not None:
                s.execute(insert(Event).values(contact_id=contact_id, type="trial_converted",
                                               occurred_at=started + timedelta(days=converted_after), data={}))
            run_id = s.execute(insert(Run).values(campaign_id=CAMPAIGN, occurrence_at=started, status="finished",
                                                  definition={}, created_at=started).returning(Run.id)).scalar_one()
            s.execute(insert(Delivery).values(run_id=run_id, contact_id=contact_id, email=email, segment="everyone",
                                              status=status, attempts=1, data={}, created_at=started, updated_at=started))
            s.execute(insert(TriggerSend).values(campaign_id=CAMPAIGN, trigger_key=f"trial:{event_id}:step:0",
                                                 contact_id=contact_id, run_id=run_id, due_at=started, created_at=started))


def test_conversion_rate_counts_contacts_who_got_the_drip_and_bought_within_the_window(db):
    # A 14-day trial with 7 grace days: conversions up to 21 days after the start count.
    setup_drip(db, {
        0: ("sent", 3),       # converted during the trial
        1: ("sent", 20.5),    # converted in the grace days
        2: ("sent", 25),      # too late
        3: ("sent", None),
        4: ("sent", None),
        5: ("skipped", 2),    # never got a step (unsubscribed, capped): not counted at all
        6: ("failed", None),
    })
    with Session(db) as s:
        result = trials.conversion_rate(s, CAMPAIGN, now=NOW, length_days=14, grace_days=7)
    assert (result.recipients, result.converted, result.open, result.window_days) == (5, 2, 0, 21)
    assert result.rate == 0.4 and result.settled_rate == 0.4
    assert result.reference == 0.20 and result.versus_reference == 20.0


def test_trials_still_running_are_reported_as_open(db):
    setup_drip(db, {0: ("sent", 2), 1: ("sent", None), 2: ("sent", None), 3: ("sent", 6)})
    at = START + timedelta(days=5)  # contact 3 converts at day 9: not yet
    with Session(db) as s:
        result = trials.conversion_rate(s, CAMPAIGN, now=at, length_days=14, grace_days=0)
    assert (result.recipients, result.converted, result.open) == (4, 1, 3)
    assert result.rate == 0.25 and result.settled_rate == 1.0
    with Session(db) as s:
        empty = trials.conversion_rate(s, "nobody", now=NOW, length_days=14)
    assert empty.recipients == 0 and empty.rate is None and empty.versus_reference is None


# -- the report commands --------------------------------------------------------------------------

@pytest.fixture
def report_cli():
    """The CLI, which has the report commands."""
    from tests.sending.test_send import cli

    assert {"trial", "survey"} <= set(main.list_commands(None))
    return cli


def test_trial_conversion_command(project, settings, db, report_cli):
    setup_drip(db, {0: ("sent", 3), 1: ("sent", None), 2: ("sent", None), 3: ("sent", None), 4: ("sent", None)})
    result = report_cli(settings, "trial", "conversion", CAMPAIGN, "--at", "2027-06-01T09:00")
    assert result.exit_code == 0, result.output
    assert "1 of 5 contacts who got the drip converted within 37 days" in result.output
    assert "20.0% (reference 20%, +0 points)" in result.output
    wrong = report_cli(settings, "trial", "conversion", "order-survey")
    assert wrong.exit_code == 1 and "not demo_access" in wrong.output


def test_survey_results_command(project, settings, db, report_cli):
    from tests.test_surveys import record, setup_invitations

    ids = setup_invitations(db, 3)
    record(db, ids[0], "recommend", "10", at=datetime(2027, 2, 3, tzinfo=UTC))
    record(db, ids[1], "recommend", "9", at=datetime(2027, 3, 3, tzinfo=UTC))
    record(db, ids[2], "recommend", "0", at=datetime(2027, 3, 4, tzinfo=UTC))
    record(db, ids[2], "delivery", "4", at=datetime(2027, 3, 4, tzinfo=UTC))
    result = report_cli(settings, "survey", "results", "order-survey", "--at", "2027-03-20T12:00")
    assert result.exit_code == 0, result.output
    feb = next(line for line in result.output.splitlines() if "2027-02" in line)
    mar = next(line for line in result.output.splitlines() if "2027-03" in line)
    assert [c.strip() for c in feb.split("│")[1:4]] == ["2027-02", "1", "100"]
    assert [c.strip() for c in mar.split("│")[1:10]] == ["2027-03", "2", "0", "-100", "1", "0", "1", "4.00", "–"]
