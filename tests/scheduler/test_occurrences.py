"""The scheduler over simulated weeks: each occurrence exactly once, catch-up, triggers, local time, cap."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.campaigns import kinds
from engine.db import session_scope
from engine.models import Contact, Delivery, Order, Run, TriggerSend
from engine.scheduler.cron import fire_times
from tests.sending.test_send import SEGMENTS, cli
from tests.support.data import add_contacts

UTC = timezone.utc


def _write_campaign(project, name, schedule, extra="", kind="seasonal_discount"):
    (project / "campaigns" / "segments.toml").write_text(SEGMENTS)
    for other in (project / "campaigns").glob("*.toml"):
        if other.name != "segments.toml":
            other.unlink()
    (project / "campaigns" / f"{name}.toml").write_text(f'''
name = "{name}"
kind = "{kind}"
values = ["economic"]
template = "seasonal_discount.mjml"
subject = "{{{{ offer.percent }}}}% for you"
segments = ["everyone"]
schedule = {schedule}
{extra}
[offer]
percent = 10
valid_until = "2030-01-01"
code = "WEEKLY10"
''')


def _runs(db, name=None):
    with Session(db) as s:
        query = select(Run.occurrence_at).order_by(Run.occurrence_at)
        return [o for o in s.execute(query).scalars()]


def _deliveries(db):
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(Delivery)).scalar()


def test_cron_fire_times_follow_the_configured_timezone_across_dst():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Amsterdam")
    times = fire_times("0 9 * * MON", tz=tz, after=datetime(2027, 3, 20, tzinfo=UTC), until=datetime(2027, 4, 6, tzinfo=UTC))
    # 22 March is before the switch to summer time (09:00 CET = 08:00 UTC), 29 March after (07:00 UTC).
    assert times == [datetime(2027, 3, 22, 8, tzinfo=UTC), datetime(2027, 3, 29, 7, tzinfo=UTC),
                     datetime(2027, 4, 5, 7, tzinfo=UTC)]


def test_a_weekly_cron_sends_each_occurrence_once_over_simulated_weeks(project, settings, db):
    _write_campaign(project, "weekly", '{ cron = "0 9 * * MON" }')
    add_contacts(db, 3)
    start = datetime(2027, 3, 1, 7, tzinfo=UTC)  # a Monday, 08:00 Amsterdam
    for hour in range(0, 24 * 21, 5):  # a tick every five hours for three weeks
        at = start + timedelta(hours=hour)
        result = cli(settings, "tick", "--at", at.isoformat())
        assert result.exit_code == 0, result.output
    assert _runs(db) == [datetime(2027, 3, 1, 8, tzinfo=UTC), datetime(2027, 3, 8, 8, tzinfo=UTC),
                         datetime(2027, 3, 15, 8, tzinfo=UTC)]
    assert _deliveries(db) == 9 and len(list((settings.var_dir / "outbox").glob("*.eml"))) == 9
    # The clock jumps back a week: nothing is sent again.
    assert "started" not in cli(settings, "tick", "--at", "2027-03-08T10:00:00+01:00").output
    assert _deliveries(db) == 9


def test_cron_catch_up_sends_only_the_latest_missed_occurrence_within_the_window(project, settings, db):
    _write_campaign(project, "daily", '{ cron = "0 9 * * *" }')
    add_contacts(db, 2)
    assert cli(settings, "tick", "--at", "2027-03-01T08:00:00+01:00").exit_code == 0  # first seen, nothing due
    # Down for three days: at 10:00 on day 4 only day 4's 09:00 occurrence is sent.
    assert cli(settings, "tick", "--at", "2027-03-04T10:00:00+01:00").exit_code == 0
    assert _runs(db) == [datetime(2027, 3, 4, 8, tzinfo=UTC)]


def test_a_new_cron_campaign_does_not_catch_up_on_fire_times_before_it_was_seen(project, settings, db):
    _write_campaign(project, "daily", '{ cron = "0 9 * * *" }')
    add_contacts(db, 2)
    # Deployed at 10:00: today's 09:00 statement is not mailed at once; tomorrow's is.
    assert cli(settings, "tick", "--at", "2027-03-04T10:00:00+01:00").exit_code == 0
    assert _runs(db) == []
    assert cli(settings, "tick", "--at", "2027-03-05T09:00:30+01:00").exit_code == 0
    assert _runs(db) == [datetime(2027, 3, 5, 8, tzinfo=UTC)]


def test_only_one_scheduler_holds_the_lease(db):
    from engine.scheduler import lease

    t0 = datetime(2027, 3, 1, tzinfo=UTC)
    assert lease.acquire(db, "scheduler", "a", now=t0, ttl_seconds=60)
    assert not lease.acquire(db, "scheduler", "b", now=t0 + timedelta(seconds=30), ttl_seconds=60)
    assert lease.acquire(db, "scheduler", "a", now=t0 + timedelta(seconds=30), ttl_seconds=60)  # renewal
    assert lease.acquire(db, "scheduler", "b", now=t0 + timedelta(seconds=91), ttl_seconds=60)  # a died
    assert not lease.acquire(db, "scheduler", "a", now=t0 + timedelta(seconds=92), ttl_seconds=60)
    lease.release(db, "scheduler", "b")
    assert lease.acquire(db, "scheduler", "a", now=t0 + timedelta(seconds=93), ttl_seconds=60)


@pytest.fixture
def order_kind(monkeypatch):
    monkeypatch.setitem(kinds.IMPLEMENTATIONS, "order_follow_up", "tests.scheduler.order_kind:OrderFollowUp")


def _orders(db, *placed):
    with session_scope(db) as s:
        ids = s.execute(select(Contact.id).order_by(Contact.id)).scalars().all()
        for n, (contact_index, at) in enumerate(placed):
            s.add(Order(order_id=f"A-{n}", contact_id=ids[contact_index], placed_at=at, total_cents=5000,
                        currency="EUR", status="delivered", updated_at=at))


def test_triggered_sends_happen_once_per_key_and_respect_the_window(project, settings, db, order_kind):
    _write_campaign(project, "follow-up", '{ trigger = "order", delay = "7d" }', kind="order_follow_up")
    add_contacts(db, 3)
    t0 = datetime(2027, 3, 1, 12, tzinfo=UTC)
    _orders(db, (0, t0), (1, t0 + timedelta(days=1)), (0, t0 + timedelta(days=1, hours=1)), (2, t0 - timedelta(days=30)))
    sent_at = {}
    for hour in range(0, 24 * 12, 6):
        at = t0 + timedelta(hours=hour)
        assert cli(settings, "tick", "--at", at.isoformat()).exit_code == 0
        with Session(db) as s:
            for key, due in s.execute(select(TriggerSend.trigger_key, TriggerSend.due_at)).all():
                sent_at.setdefault(key, at)
    # Order A-3 was due 23 days ago, outside the 3-day window: never sent. Each other order once,
    # contact 0's second order in a later tick than its first (one delivery per contact per run).
    assert sorted(sent_at) == ["order:A-0", "order:A-1", "order:A-2"]
    assert sent_at["order:A-0"] == t0 + timedelta(days=7) and sent_at["order:A-2"] > sent_at["order:A-0"]
    with Session(db) as s:
        statuses = s.execute(select(Delivery.status, Delivery.last_error)).all()
    assert _deliveries(db) == 3 and len(list((settings.var_dir / "outbox").glob("*.eml"))) == 3, statuses
    with Session(db) as s:
        data = s.execute(select(Delivery.data).order_by(Delivery.id)).scalars().all()
    assert [d["order_id"] for d in data] == ["A-0", "A-1", "A-2"]


def test_a_trigger_campaign_cannot_be_sent_by_hand(project, settings, db, order_kind):
    _write_campaign(project, "follow-up", '{ trigger = "order", delay = "7d" }', kind="order_follow_up")
    result = cli(settings, "send", "follow-up")
    assert result.exit_code == 1 and "sent per contact when its trigger fires" in result.output


def test_local_time_delivers_at_the_wall_time_in_each_recipients_zone(project, settings, db):
    _write_campaign(project, "morning", '{ at = "2027-03-20T09:00" }', extra="local_time = true")
    add_contacts(db, 1, timezone="Asia/Tokyo")
    add_contacts(db, 1, start=1, timezone="America/New_York")
    add_contacts(db, 1, start=2)  # no timezone: the configured one (Europe/Amsterdam)
    assert cli(settings, "tick", "--at", "2027-03-20T00:30:00+00:00").exit_code == 0  # 09:30 in Tokyo
    sent = lambda: sorted(p.read_text() .split("To: ")[1].split("\n")[0] for p in (settings.var_dir / "outbox").glob("*.eml"))
    assert sent() == ["Person0 Tester <user0@example.com>"]
    assert cli(settings, "tick", "--at", "2027-03-20T08:00:00+00:00").exit_code == 0  # 09:00 Amsterdam
    assert len(sent()) == 2
    assert cli(settings, "tick", "--at", "2027-03-20T13:00:00+00:00").exit_code == 0  # 09:00 New York (EDT)
    assert len(sent()) == 3 and len(_runs(db)) == 1


def test_local_time_needs_an_at_schedule(project, settings, db):
    _write_campaign(project, "weekly", '{ cron = "0 9 * * MON" }', extra="local_time = true")
    result = cli(settings, "validate")
    assert result.exit_code == 1 and "weekly.toml:9: 'local_time'" in result.output


def test_the_frequency_cap_skips_marketing_mail_past_the_daily_limit(project, settings, db):
    _write_campaign(project, "promo", '{ at = "2027-03-20T09:00" }')
    add_contacts(db, 2)
    for _ in range(3):
        assert cli(settings, "send", "promo", "--again").exit_code == 0
    with Session(db) as s:
        rows = s.execute(select(Delivery.status, Delivery.last_error, func.count())
                         .group_by(Delivery.status, Delivery.last_error)).all()
    assert sorted(rows) == [("sent", None, 4), ("skipped", "frequency cap", 2)]


def test_a_tick_whose_dues_were_all_sent_leaves_no_empty_run(project, settings, db, order_kind, monkeypatch):
    """A kind whose due() repeats keys already sent must not produce a run (it would fill with everyone)."""
    from tests.scheduler import order_kind as module

    _write_campaign(project, "follow-up", '{ trigger = "order", delay = "7d" }', kind="order_follow_up")
    add_contacts(db, 3)
    t0 = datetime(2027, 3, 1, 12, tzinfo=UTC)
    _orders(db, (0, t0))
    at = t0 + timedelta(days=7, hours=1)
    assert cli(settings, "tick", "--at", at.isoformat()).exit_code == 0

    def repeating(self, section, session, ctx, *, since):  # forgets to leave out sent keys
        from engine.campaigns.kinds import Due

        yield Due(contact_id=1, key="order:A-0", due_at=since + timedelta(hours=1), data={"order_id": "A-0"})

    monkeypatch.setattr(module.OrderFollowUp, "due", repeating)
    later = at + timedelta(hours=6)
    assert cli(settings, "tick", "--at", later.isoformat()).exit_code == 0
    assert len(_runs(db)) == 1 and _deliveries(db) == 1


def test_a_campaign_file_nested_thousands_deep_is_reported_and_the_others_are_still_scheduled(project, settings, db):
    _write_campaign(project, "weekly", '{ cron = "0 9 * * MON" }')
    (project / "campaigns" / "deep.toml").write_text('name = "Deep"\nvalues = ' + "[" * 2000 + "]" * 2000 + "\n")
    add_contacts(db, 3)
    result = cli(settings, "tick", "--at", "2027-03-01T09:00:00+01:00")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "deep.toml:2: arrays or inline tables nested more than 32 levels deep" in result.output
    assert "weekly: started run #" in result.output and _deliveries(db) == 3
