"""`valuemail tick --at`: each scheduled occurrence exactly once, with a bounded catch-up."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from engine.models import Run
from tests.sending.test_send import SEGMENTS, only_spring_sale, cli
from tests.support.data import add_contacts


def _runs(db) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(Run)).scalar()


def test_an_at_occurrence_runs_once_when_due(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 4)
    early = cli(settings, "tick", "--at", "2027-03-20T08:59")
    assert early.exit_code == 0 and _runs(db) == 0
    due = cli(settings, "tick", "--at", "2027-03-20T09:00")
    assert due.exit_code == 0, due.output
    assert "spring-sale: started run #1" in due.output and "sent 4" in due.output
    later = cli(settings, "tick", "--at", "2027-03-20T10:00")
    assert "started" not in later.output and _runs(db) == 1
    assert len(list((settings.var_dir / "outbox").glob("*.eml"))) == 4
    # A manual send afterwards is refused like any finished campaign.
    assert cli(settings, "send", "spring-sale").exit_code == 1


def test_a_campaign_sent_by_hand_is_not_sent_again_by_its_schedule(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 2)
    assert cli(settings, "send", "spring-sale").exit_code == 0
    due = cli(settings, "tick", "--at", "2027-03-20T09:00")
    assert due.exit_code == 0 and "started" not in due.output and _runs(db) == 1


def test_a_long_missed_occurrence_is_not_caught_up(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 2)
    late = cli(settings, "tick", "--at", "2027-03-22T09:00")
    assert late.exit_code == 0 and "more than 1 day" in late.output and _runs(db) == 0


def test_tick_reports_an_invalid_campaign_and_exits_1(project, settings, db):
    only_spring_sale(project)
    (project / "campaigns" / "broken.toml").write_text('name = "x"\nkind = "seasonal_discount"\n')
    result = cli(settings, "tick", "--at", "2027-03-01T09:00")
    assert result.exit_code == 1 and "broken.toml" in result.output


def test_an_ended_offer_is_a_finished_campaign_not_an_error(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    text = path.read_text().replace('valid_from = "2027-03-20"', 'valid_from = "2020-03-20"')
    text = text.replace('valid_until = "2027-04-03"', 'valid_until = "2020-04-03"')
    path.write_text(text.replace('valid_from = "2027-03-13"', 'valid_from = "2020-03-13"'))
    add_contacts(db, 2)
    tick = cli(settings, "tick", "--at", "2027-03-20T09:00")
    assert tick.exit_code == 0 and "the offer ended on 2020-04-03" in tick.output and _runs(db) == 0
    send = cli(settings, "send", "spring-sale")
    assert send.exit_code == 1 and "cannot be sent now: the offer ended on 2020-04-03" in send.output
    checked = cli(settings, "validate")
    assert checked.exit_code == 0, checked.output
    assert "'offer.valid_until': the offer ended on 2020-04-03" in checked.output and "(warning" in checked.output
