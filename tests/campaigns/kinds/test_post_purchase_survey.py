"""post_purchase_survey: due once per order or per contact per period, void orders left out; its file, its mails."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, update
from sqlmodel import Session

from engine import surveys
from engine.campaigns import load_campaign
from engine.campaigns.kinds import KindContext, Recipient
from engine.db import session_scope
from engine.errors import CampaignError
from engine.models import Order
from engine.rendering import Renderer
from engine.sending.compose import SAMPLE_CONTACT, Composer
from engine.tokens import TokenSigner
from tests.campaigns.kinds.test_demo_access import (add_campaign_row, contact_ids, hourly, line_of, plain_settings,
                                                    simulate)
from tests.support.data import add_contacts

__all__ = ["plain_settings"]  # a fixture, imported for this module's tests

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[3]
START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = "survey-test"

SURVEY = '''\
name = "How was your order?"
kind = "post_purchase_survey"
values = ["functional"]
template = "post_purchase_survey.mjml"
subject = "How was order {{ survey.order.order_id }}?"
segments = ["everyone"]
schedule = { trigger = "order", delay = "7d" }

[survey]
once = "order"
thank_you = "Thank you!"
thank_you_nl = "Bedankt!"

[[survey.questions]]
key = "recommend"
type = "nps"
text = "How likely are you to recommend us?"
text_nl = "Hoe waarschijnlijk is het dat je ons aanbeveelt?"

[[survey.questions]]
key = "why"
type = "choice"
text = "What mattered most?"
options = ["Price", "Speed"]

[[survey.questions]]
key = "improve"
type = "text"
text = "What could be better?"
'''
PER_PERIOD = SURVEY.replace('once = "order"', 'once = "contact_period"\nperiod_days = 30')


def load(settings, text: str = SURVEY):
    path = settings.campaigns_dir / f"{CAMPAIGN}.toml"
    path.write_text(text)
    return load_campaign(path, settings=settings, segment_names=["everyone", "gold"], today=date(2027, 3, 1))


def problems(settings, text: str) -> list[str]:
    with pytest.raises(CampaignError) as info:
        load(settings, text)
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def add_order(db, contact_id: int, order_id: str, placed_at: datetime, *, status: str = "delivered",
              updated_at: datetime | None = None, total_cents: int = 4990) -> None:
    with db.begin() as conn:
        conn.execute(insert(Order).values(order_id=order_id, contact_id=contact_id, placed_at=placed_at,
                                          total_cents=total_cents, currency="EUR", status=status,
                                          updated_at=updated_at or placed_at))


def set_status(db, order_id: str, status: str, at: datetime) -> None:
    with db.begin() as conn:
        conn.execute(update(Order).where(Order.order_id == order_id).values(status=status, updated_at=at))


def daily(start: datetime, days: int):
    return [start + timedelta(days=d) for d in range(days + 1)]


# -- due() ----------------------------------------------------------------------------------------

def test_once_per_order_a_week_after_each_order_never_for_void_orders(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 2)
    a, b = contact_ids(db)
    add_campaign_row(db, CAMPAIGN, "post_purchase_survey")
    add_order(db, a, "A-1", START + timedelta(hours=2), total_cents=12345)
    add_order(db, a, "A-2", START + timedelta(days=3))
    add_order(db, b, "B-1", START + timedelta(days=1), status="returned")
    add_order(db, b, "B-2", START + timedelta(days=2), status="cancelled")
    add_order(db, b, "B-3", START + timedelta(days=4), status="shipped")
    add_order(db, b, "B-4", START - timedelta(days=20))  # its survey was due long ago
    sent = simulate(db, campaign, hourly(START, 20, every_hours=8), settings=settings)
    assert [d.key for _, d in sent] == ["order:A-1", "order:A-2", "order:B-3"]
    first = sent[0][1]
    assert first.due_at == START + timedelta(days=7, hours=2) and first.contact_id == a
    assert first.data == {"order_id": "A-1", "placed_at": (START + timedelta(hours=2)).isoformat(), "total": "123.45",
                          "currency": "EUR"}
    assert simulate(db, campaign, hourly(START, 20, every_hours=8), settings=settings) == []  # never twice


def test_an_order_returned_before_its_survey_is_due_is_left_out_and_prepare_skips_one_returned_after(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db, CAMPAIGN, "post_purchase_survey")
    add_order(db, a, "A-1", START)
    add_order(db, a, "A-2", START)
    set_status(db, "A-1", "returned", START + timedelta(days=5))
    sent = simulate(db, campaign, [START + timedelta(days=7, hours=1)], settings=settings)
    assert [d.key for _, d in sent] == ["order:A-2"]
    set_status(db, "A-2", "cancelled", START + timedelta(days=7, hours=2))
    recipients = [Recipient(contact_id=a, email="a@example.com", segment="everyone", delivery_id=5, data=sent[0][1].data),
                  Recipient(contact_id=a, email="a@example.com", segment="everyone", delivery_id=6,
                            data={"order_id": "GONE-1"}),
                  Recipient(contact_id=a, email="a@example.com", segment="everyone", delivery_id=7,
                            data=campaign.kind.sample_recipient_extra(campaign.section))]
    with Session(db) as session:
        skips = campaign.kind.prepare(campaign.section, session,
                                      KindContext(CAMPAIGN, START + timedelta(days=7, hours=3), settings), recipients)
    assert skips == {5: "order returned or cancelled", 6: "order no longer exists"}
    assert recipients[2].extra["answer_links"][0]["url"].startswith(settings.app.base_url + "/s/")


def test_once_per_contact_per_period(project, settings, db):
    campaign = load(settings, PER_PERIOD)
    add_contacts(db, 2)
    a, b = contact_ids(db)
    add_campaign_row(db, CAMPAIGN, "post_purchase_survey")
    # a: orders on days 0, 1 (same tick), 12 and 29 fall within 30 days of the first survey; day 31 does not.
    for n, day in enumerate((0, 1, 12, 29, 31, 45)):
        add_order(db, a, f"A-{n}", START + timedelta(days=day))
    add_order(db, b, "B-0", START + timedelta(days=1))
    add_order(db, b, "B-1", START + timedelta(days=1, hours=1))
    sent = simulate(db, campaign, daily(START, 60), settings=settings)
    by_contact = {c: [(d.due_at - START, d.data["order_id"], d.key) for _, d in sent if d.contact_id == c] for c in (a, b)}
    assert [(due, order) for due, order, _ in by_contact[a]] == [(timedelta(days=7), "A-0"), (timedelta(days=38), "A-4")]
    assert [order for _, order, _ in by_contact[b]] == ["B-0"]
    keys = [key for _, _, key in by_contact[a]]
    assert all(key.startswith(f"contact:{a}:period:") for key in keys) and len(set(keys)) == 2
    assert simulate(db, campaign, daily(START, 60), settings=settings) == []


def test_with_a_minimum_status_an_order_is_surveyed_once_it_gets_there(project, settings, db):
    text = SURVEY.replace('once = "order"', 'once = "order"\nmin_order_status = "delivered"\nwait_days = 5')
    campaign = load(settings, text)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db, CAMPAIGN, "post_purchase_survey")
    add_order(db, a, "ON-TIME", START, status="delivered", updated_at=START + timedelta(days=3))
    add_order(db, a, "LATE", START, status="shipped")
    add_order(db, a, "TOO-LATE", START, status="shipped")
    add_order(db, a, "NEVER", START, status="paid")
    ticks = daily(START, 20)
    sent = simulate(db, campaign, ticks[:10], settings=settings)
    set_status(db, "LATE", "delivered", START + timedelta(days=9, hours=12))
    sent += simulate(db, campaign, ticks[10:13], settings=settings)
    set_status(db, "TOO-LATE", "delivered", START + timedelta(days=12, hours=12))  # > 7 + 5 days
    sent += simulate(db, campaign, ticks[13:], settings=settings)
    assert [(d.data["order_id"], d.due_at - START) for _, d in sent] == [
        ("ON-TIME", timedelta(days=7)), ("LATE", timedelta(days=9, hours=12))]


# -- the campaign file -----------------------------------------------------------------------------

def test_a_valid_survey_loads(plain_settings):
    campaign = load(plain_settings)
    assert [q.type for q in campaign.section.questions] == ["nps", "choice", "text"]
    assert campaign.schedule.delay == timedelta(days=7)


@pytest.mark.parametrize("old, new, needle, message", [
    ('type = "choice"', 'type = "slider"', 'type = "slider"',
     "'survey.questions[1].type': Input should be 'nps', 'rating', 'choice' or 'text'"),
    ('type = "nps"', 'type = "nps"\noptions = ["Yes", "No"]', "options",
     "'survey.questions[0].options': an nps question has the fixed scale 0-10 and takes no options"),
    ('type = "text"', 'type = "text"\noptions = ["a", "b"]', 'options = ["a"',
     "'survey.questions[2].options': a text question takes no options"),
    ('options = ["Price", "Speed"]', 'options = ["Price"]', "options",
     "'survey.questions[1].options': a choice question needs at least two options"),
    ('options = ["Price", "Speed"]', 'options = ["Price", "price!"]', "options",
     "'survey.questions[1].options': two options are the same"),
    ('type = "nps"', 'type = "text"', 'type = "text"',
     "'survey.questions[0].type': the first question is answered with one click in the mail"),
    ('key = "why"', 'key = "recommend"', ('key = "recommend"', 2), "'survey.questions[1].key': question key 'recommend' is used twice"),
    ('once = "order"', 'once = "contact_period"', "[survey]",
     "'survey.period_days': once = \"contact_period\" needs period_days"),
    ('once = "order"', 'once = "order"\nperiod_days = 30', "period_days",
     "'survey.period_days': period_days only applies with once = \"contact_period\""),
    ('once = "order"', 'once = "weekly"', "once", "'survey.once': Input should be 'order' or 'contact_period'"),
    ('once = "order"', 'once = "order"\nmin_order_status = "returned"', "min_order_status",
     "'survey.min_order_status': Input should be 'placed', 'paid', 'shipped' or 'delivered'"),
    ('schedule = { trigger = "order", delay = "7d" }', 'schedule = { trigger = "event", event = "trial_started" }',
     "schedule", "'schedule': a post-purchase survey runs on { trigger = \"order\", delay = \"7d\" }"),
])
def test_mistakes_in_the_survey_section_name_file_and_line(plain_settings, old, new, needle, message):
    assert old in SURVEY
    text = SURVEY.replace(old, new, 1)
    found = problems(plain_settings, text)
    line = line_of(text, *needle) if isinstance(needle, tuple) else line_of(text, needle)
    assert any(p.startswith(f"{CAMPAIGN}.toml:{line}: {message}") for p in found), found


def test_the_example_survey_campaign_is_valid(plain_settings):
    campaign = load_campaign(ROOT / "campaigns" / "order-survey.toml", settings=plain_settings,
                             segment_names=["gold", "benelux_dutch", "everyone"], today=date(2027, 3, 1))
    assert campaign.kind_name == "post_purchase_survey" and campaign.section.once == "contact_period"
    assert campaign.schedule.delay == timedelta(days=7)


def test_the_example_campaigns_validate_with_the_project(project, settings):
    from tests.sending.test_send import cli

    result = cli(settings, "validate")
    assert result.exit_code == 0, result.output


# -- the mails ---------------------------------------------------------------------------------------

def _render(settings, campaign, language, *, delivery_id=7, data=None):
    signer = TokenSigner(settings.secret_key)
    composer = Composer(campaign=campaign, run_id=1, settings=settings, renderer=Renderer(settings.templates_dir),
                        signer=signer)
    recipient = Recipient(contact_id=1, email="a@example.com", segment="everyone", delivery_id=delivery_id,
                          language=language, data=data or {"order_id": "A-77", "placed_at": START.isoformat(),
                                                           "total": "59.90", "currency": "EUR"})
    # What `prepare` gives each recipient (its order checks need a database; these tests render only).
    recipient.extra["survey_url"] = surveys.survey_url(signer, settings.app.base_url, delivery_id)
    recipient.extra["answer_links"] = surveys.answer_links(signer, settings.app.base_url, delivery_id,
                                                           campaign.section.questions[0])
    contact = replace(SAMPLE_CONTACT, language=language)
    return composer.compose(delivery_id, contact.email, contact, recipient, now=START), signer


@pytest.mark.parametrize("language, words", [
    ("en", ["How did we do?", "Thank you for your order", "How likely are you to recommend us?", "0 = not at all likely",
            "One click is enough"]),
    ("nl", ["Hoe hebben we het gedaan?", "Bedankt voor je bestelling", "Hoe waarschijnlijk is het dat je ons aanbeveelt?",
            "0 = helemaal niet waarschijnlijk", "Eén klik is genoeg"]),
])
def test_the_survey_mail_embeds_the_first_question_as_answer_links(plain_settings, language, words):
    campaign = load(plain_settings)
    message, signer = _render(plain_settings, campaign, language)
    assert message.subject == "How was order A-77?"
    assert f'lang="{language}"' in message.html
    for word in words:
        assert word in message.text, word
    base = plain_settings.app.base_url
    token = signer.sign("survey", 7)
    for value in range(11):
        assert f'href="{base}/s/{token}/recommend/{value}"' in message.html
    assert "A-77" in message.text and "€59.90" in message.text


def test_a_choice_question_first_shows_one_link_per_option(plain_settings):
    text = SURVEY.replace('key = "recommend"\ntype = "nps"\ntext = "How likely are you to recommend us?"\n'
                          'text_nl = "Hoe waarschijnlijk is het dat je ons aanbeveelt?"\n',
                          'key = "speed"\ntype = "choice"\ntext = "Was it fast?"\noptions = ["Yes, very", "Not really"]\n'
                          'options_nl = ["Ja, heel snel", "Niet echt"]\n')
    campaign = load(plain_settings, text)
    message, signer = _render(plain_settings, campaign, "nl")
    token = signer.sign("survey", 7)
    assert f'/s/{token}/speed/yes-very"' in message.html and f'/s/{token}/speed/not-really"' in message.html
    assert "Ja, heel snel" in message.text and "Niet echt" in message.text


def test_validate_and_preview_render_sample_values(project, settings, db):
    from tests.sending.test_send import cli

    add_contacts(db, 1)
    out = project / "out"
    result = cli(settings, "preview", "order-survey", "--segment", "everyone", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = (out / "order-survey-everyone.txt").read_text()
    assert "SAMPLE-1042" in text and "/recommend/10" in text
    result = cli(settings, "preview", "trial-drip", "--segment", "everyone", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "https://app.example.com/login" in (out / "trial-drip-everyone.txt").read_text()


# -- end to end: `valuemail tick --at`, then a click on an answer link -------------------------------

def test_tick_mails_the_example_survey_and_a_click_records_the_answer(project, settings, db):
    import re
    from email import policy
    from email.parser import BytesParser

    from engine.surveys import record_answer, survey_for_delivery
    from tests.sending.test_send import cli

    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in ("order-survey.toml", "segments.toml"):
            other.unlink()
    with open(settings.source, "a") as config:  # links are checked as written; tracking has its own tests
        config.write("[tracking]\nclicks = false\n")
    add_contacts(db, 1, language="en", country="GB")
    add_contacts(db, 1, start=1)  # Dutch, in NL
    a, b = contact_ids(db)
    add_order(db, a, "A-1", START)
    add_order(db, a, "A-2", START + timedelta(days=2))  # within 90 days of A-1's survey: no second survey
    add_order(db, b, "B-1", START + timedelta(days=1), status="cancelled")
    add_order(db, b, "B-2", START + timedelta(days=1, hours=2))
    for day in range(0, 14):
        result = cli(settings, "tick", "--at", (START + timedelta(days=day, hours=6)).isoformat())
        assert result.exit_code == 0, result.output
    messages = {}
    for path in sorted((settings.var_dir / "outbox").glob("*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        messages.setdefault(message["To"].addresses[0].addr_spec, []).append(message)
    assert sorted(messages) == ["user0@example.com", "user1@example.com"]
    assert [str(m["Subject"]) for m in messages["user0@example.com"]] == ["Person0, how was your order A-1?"]
    assert [str(m["Subject"]) for m in messages["user1@example.com"]] == ["Person1, hoe was je bestelling B-2?"]
    html = messages["user1@example.com"][0].get_body(("html",)).get_content()
    links = re.findall(r'href="([^"]+/s/[^"/]+/recommend/(\d+))"', html)
    assert [value for _, value in links] == [str(v) for v in range(11)]
    assert "Hoe waarschijnlijk is het dat je Example Shop aanbeveelt" in html

    # The recipient clicks "8": the public page records it at once; another click replaces it.
    from engine.clock import FixedClock
    from engine.surveys import response_state
    from engine.web import create_app

    client = create_app(settings=settings, engine=db, clock=FixedClock(START + timedelta(days=9)),
                        testing=True).test_client()
    path = dict((value, url) for url, value in links)["8"].split("127.0.0.1:8000", 1)[1]
    page = client.get(path)
    assert page.status_code == 200 and "je antwoord is opgeslagen" in page.text and "<strong>8</strong>" in page.text
    delivery_id = TokenSigner(settings.secret_key).unsign("survey", path.split("/")[2])
    with Session(db) as s:
        assert response_state(s, delivery_id=delivery_id).answers == {"recommend": 8.0}
    assert client.get(path[:-1] + "11").status_code == 400  # not on the 0-10 scale
    assert client.get(path.replace("/s/", "/s/x", 1)).status_code == 400  # a changed token
    assert client.get(path.replace("/recommend/", "/why/")).status_code == 400  # a question it cannot take here
    assert client.get(path[:-1] + "9").status_code == 200
    with session_scope(db) as s:
        campaign = survey_for_delivery(s, delivery_id=delivery_id, settings=settings)
        state = record_answer(s, survey=campaign.section, delivery_id=delivery_id, question="recommend", value="8",
                              now=START + timedelta(days=9))
    assert state.answers == {"recommend": 8.0}
    with Session(db) as s:
        (score,) = campaign.kind.satisfaction(campaign.section, s, campaign.id, now=START + timedelta(days=9), periods=1)
    assert (score.responses, score.passives, score.nps) == (1, 1, 0.0)


def test_a_rating_question_first_shows_five_buttons_with_its_legend(plain_settings):
    text = SURVEY.replace('type = "nps"', 'type = "rating"')
    campaign = load(plain_settings, text)
    message, signer = _render(plain_settings, campaign, "en")
    token = signer.sign("survey", 7)
    assert [f'/s/{token}/recommend/{v}"' in message.html for v in range(7)] == [False] + [True] * 5 + [False]
    assert "1 = poor" in message.text and "5 = excellent" in message.text
    assert 'aria-label="5 out of 5"' in message.html
