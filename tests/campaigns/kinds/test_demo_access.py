"""demo_access: drip steps at their day offsets, stopped at conversion, never twice; its file, its mails."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from engine.campaigns import load_campaign
from engine.campaigns.kinds import KindContext, Recipient
from engine.config import load_settings
from engine.db import session_scope
from engine.errors import CampaignError
from engine.models import Campaign, Contact, Event, Run, TriggerSend
from engine.rendering import Renderer
from engine.sending.compose import SAMPLE_CONTACT, Composer
from engine.tokens import TokenSigner
from tests.support.data import add_contacts

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[3]
START = datetime(2027, 3, 1, 10, 30, tzinfo=UTC)
CAMPAIGN = "trial-test"
WINDOW = timedelta(days=3)

DRIP = '''\
name = "Trial drip"
kind = "demo_access"
values = ["functional"]
template = "demo_access.mjml"
subject = "{{ trial.subject or t[trial.step ~ '_subject'] }}"
segments = ["everyone"]
schedule = { trigger = "event", event = "trial_started" }

[trial]
length_days = 14
access_url = "https://app.example.com/login"
upgrade_url = "https://app.example.com/plans"

[[trial.steps]]
day = 0
step = "welcome"

[[trial.steps]]
day = 3
step = "tips"

[[trial.steps]]
day = 7
step = "webinar"
subject = "Join the live demo"
subject_nl = "Doe mee met de live demo"
body = "Every Thursday we show it live."

[[trial.steps]]
day = 11
step = "ends_soon"
'''


# -- helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def plain_settings(tmp_path):
    """Settings on a copy of the repository's templates, for loader tests without a database."""
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "config.toml").write_text("")
    return load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def load(settings, text: str = DRIP, name: str = CAMPAIGN):
    path = settings.campaigns_dir / f"{name}.toml"
    path.write_text(text)
    return load_campaign(path, settings=settings, segment_names=["everyone", "gold"], today=date(2027, 3, 1))


def problems(settings, text: str) -> list[str]:
    with pytest.raises(CampaignError) as info:
        load(settings, text)
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith(needle)]
    return hits[nth - 1]


def contact_ids(db) -> list[int]:
    with Session(db) as s:
        return list(s.execute(select(Contact.id).order_by(Contact.id)).scalars())


def add_event(db, contact_id: int, type_: str, at: datetime) -> int:
    with db.begin() as conn:
        return conn.execute(insert(Event).values(contact_id=contact_id, type=type_, occurred_at=at, data={})
                            .returning(Event.id)).scalar_one()


def add_campaign_row(db, campaign_id: str = CAMPAIGN, kind: str = "demo_access") -> None:
    with db.begin() as conn:
        conn.execute(insert(Campaign).values(id=campaign_id, name=campaign_id, kind=kind, values=[], definition={},
                                             source_hash="x", synced_at=START))


def new_run(session, at: datetime, campaign_id: str = CAMPAIGN, *, is_test: bool = False) -> int:
    return session.execute(insert(Run).values(campaign_id=campaign_id, occurrence_at=at, status="sending",
                                              is_test=is_test, definition={}, created_at=at)
                           .returning(Run.id)).scalar_one()


def simulate(db, campaign, ticks, *, settings, record: bool = True):
    """Tick as the scheduler does: due() over (tick - window, tick], each returned key recorded once."""
    seen = []
    for at in ticks:
        with session_scope(db) as session:
            ctx = KindContext(campaign_id=campaign.id, now=at, settings=settings, schedule=campaign.schedule)
            dues = list(campaign.kind.due(campaign.section, session, ctx, since=at - WINDOW))
            assert all(at - WINDOW < d.due_at <= at for d in dues)
            if record and dues:
                run_id = new_run(session, at, campaign.id)
                for d in dues:
                    session.add(TriggerSend(campaign_id=campaign.id, trigger_key=d.key, contact_id=d.contact_id,
                                            run_id=run_id, due_at=d.due_at, created_at=at))
            seen.extend((at, d) for d in dues)
    return seen


def hourly(start: datetime, days: int, every_hours: int = 6):
    return [start + timedelta(hours=h) for h in range(0, days * 24 + 1, every_hours)]


# -- due(): the drip over simulated weeks ----------------------------------------------------------

def test_steps_come_at_their_day_offsets_once_each(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 2)
    a, b = contact_ids(db)
    add_campaign_row(db)
    trial_a = add_event(db, a, "trial_started", START)
    trial_b = add_event(db, b, "trial_started", START + timedelta(days=2, hours=5))
    sent = simulate(db, campaign, hourly(START - timedelta(days=1), 20), settings=settings)

    by_contact = {}
    for at, due in sent:
        by_contact.setdefault(due.contact_id, []).append(due)
    assert [d.key for d in by_contact[a]] == [f"trial:{trial_a}:step:{i}" for i in range(4)]
    assert [d.due_at - START for d in by_contact[a]] == [timedelta(days=n) for n in (0, 3, 7, 11)]
    assert [(d.data["step"], d.data["day"], d.data["days_left"]) for d in by_contact[a]] == [
        ("welcome", 0, 14), ("tips", 3, 11), ("webinar", 7, 7), ("ends_soon", 11, 3)]
    assert by_contact[a][0].data["trial_started_at"] == START.isoformat()
    assert by_contact[a][0].data["access_url"] == "https://app.example.com/login"
    assert [d.key for d in by_contact[b]] == [f"trial:{trial_b}:step:{i}" for i in range(4)]
    # Every key once, and each step in the first tick at or after its due time.
    keys = [d.key for _, d in sent]
    assert len(keys) == len(set(keys)) == 8
    assert all(at - d.due_at < timedelta(hours=6) for at, d in sent)


def test_keys_are_stable_and_a_recorded_key_is_never_due_again(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db)
    add_event(db, a, "trial_started", START)
    at = START + timedelta(days=3, hours=1)
    first = simulate(db, campaign, [at], settings=settings, record=False)
    again = simulate(db, campaign, [at], settings=settings, record=False)
    assert [d for _, d in first] == [d for _, d in again]  # welcome fell out of the window; tips is due
    assert [d.data["step"] for _, d in first] == ["tips"]
    simulate(db, campaign, [at], settings=settings)
    assert simulate(db, campaign, [at, at + timedelta(hours=2)], settings=settings) == []


def test_the_drip_stops_at_conversion_and_at_cancellation(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 3)
    converts, cancels, stays = contact_ids(db)
    add_campaign_row(db)
    for contact in (converts, cancels, stays):
        add_event(db, contact, "trial_started", START)
    add_event(db, converts, "trial_converted", START + timedelta(days=5))
    add_event(db, cancels, "trial_cancelled", START + timedelta(days=8))
    # A conversion before this trial began (an earlier subscription) does not stop it.
    add_event(db, stays, "trial_converted", START - timedelta(days=40))
    sent = simulate(db, campaign, hourly(START, 16), settings=settings)
    steps = {c: [d.data["step"] for _, d in sent if d.contact_id == c] for c in (converts, cancels, stays)}
    assert steps[converts] == ["welcome", "tips"]
    assert steps[cancels] == ["welcome", "tips", "webinar"]
    assert steps[stays] == ["welcome", "tips", "webinar", "ends_soon"]


def test_a_conversion_known_at_the_tick_stops_a_step_that_fell_due_just_before(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db)
    add_event(db, a, "trial_started", START)
    add_event(db, a, "trial_converted", START + timedelta(days=3, hours=1))  # tips fell due an hour before
    sent = simulate(db, campaign, [START + timedelta(minutes=5), START + timedelta(days=3, hours=2)], settings=settings)
    assert [d.data["step"] for _, d in sent] == ["welcome"]


def test_a_newer_trial_supersedes_the_old_drip(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db)
    old = add_event(db, a, "trial_started", START)
    new = add_event(db, a, "trial_started", START + timedelta(days=5))
    sent = simulate(db, campaign, hourly(START, 20), settings=settings)
    assert [d.key for _, d in sent] == [f"trial:{old}:step:0", f"trial:{old}:step:1"] + \
        [f"trial:{new}:step:{i}" for i in range(4)]


def test_events_of_other_types_and_steps_outside_the_window_are_not_due(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    add_campaign_row(db)
    add_event(db, a, "webinar_attended", START)
    add_event(db, a, "trial_started", START - timedelta(days=30))  # long over
    assert simulate(db, campaign, hourly(START, 4), settings=settings) == []


def test_prepare_skips_a_step_whose_trial_converted_since_it_fell_due(project, settings, db):
    campaign = load(settings)
    add_contacts(db, 3)
    a, b, c = contact_ids(db)
    add_campaign_row(db)
    trials = {x: add_event(db, x, "trial_started", START) for x in (a, b, c)}
    add_event(db, a, "trial_converted", START + timedelta(days=3, hours=2))
    add_event(db, b, "trial_cancelled", START + timedelta(days=3, hours=3))
    due = START + timedelta(days=3)
    data = {x: campaign.kind._data(campaign.section, campaign.section.steps[1], 1, trial_id=trials[x], started_at=START)
            for x in (a, b, c)}
    recipients = [Recipient(contact_id=x, email=f"{x}@example.com", segment="everyone", delivery_id=100 + x, data=data[x])
                  for x in (a, b, c)]
    sample = Recipient(contact_id=a, email="t@example.com", segment="everyone", delivery_id=999,
                       data=campaign.kind.sample_recipient_extra(campaign.section))
    with Session(db) as session:
        at_due = campaign.kind.prepare(campaign.section, session, KindContext(CAMPAIGN, due, settings), recipients)
        later = campaign.kind.prepare(campaign.section, session,
                                      KindContext(CAMPAIGN, due + timedelta(hours=4), settings), recipients + [sample])
    assert at_due == {}
    assert later == {100 + a: "converted", 100 + b: "cancelled"}


# -- the campaign file -----------------------------------------------------------------------------

def test_a_valid_drip_loads_with_its_steps(plain_settings):
    campaign = load(plain_settings)
    assert [s.step for s in campaign.section.steps] == ["welcome", "tips", "webinar", "ends_soon"]
    assert campaign.schedule.trigger == "event" and campaign.schedule.event_type == "trial_started"


@pytest.mark.parametrize("old, new, needle, message", [
    ("day = 3\n", "day = 12\n", "day = 7", "'trial.steps[2].day': day 7 must come after the previous step's day 12"),
    ("day = 7\n", "day = 2\n", "day = 2", "'trial.steps[2].day': day 2 must come after the previous step's day 3"),
    ("day = 11\n", "day = 15\n", "day = 15", "'trial.steps[3].day': day 15 is after the trial ends (length_days = 14)"),
    ('step = "webinar"\nsubject = "Join the live demo"\n', 'step = "webinar"\n', 'step = "webinar"',
     "'trial.steps[2].step': 'webinar' is a step of your own"),
    ('step = "tips"', 'step = "Tips!"', 'step = "Tips!"', "'trial.steps[1].step': a step name is lower-case"),
    ("day = 0\n", "day = -1\n", "day = -1", "'trial.steps[0].day': Input should be greater than or equal to 0"),
    ('access_url = "https://app.example.com/login"', 'access_url = "app.example.com"', "access_url",
     "'trial.access_url': must be an http(s) URL"),
    ('schedule = { trigger = "event", event = "trial_started" }', 'schedule = { trigger = "order", delay = "7d" }',
     "schedule", "'schedule': a trial drip runs on { trigger = \"event\", event = \"trial_started\" }"),
    ('schedule = { trigger = "event", event = "trial_started" }', 'schedule = { at = "2027-04-01T09:00" }',
     "schedule", "'schedule': a trial drip runs on"),
])
def test_mistakes_in_the_trial_section_name_file_and_line(plain_settings, old, new, needle, message):
    assert old in DRIP
    text = DRIP.replace(old, new, 1)
    found = problems(plain_settings, text)
    assert any(p.startswith(f"{CAMPAIGN}.toml:{line_of(text, needle)}: {message}") for p in found), found


def test_the_example_trial_campaign_is_valid(plain_settings):
    shutil.copy(ROOT / "campaigns" / "segments.toml", plain_settings.campaigns_dir)
    campaign = load_campaign(ROOT / "campaigns" / "trial-drip.toml", settings=plain_settings,
                             segment_names=["gold", "benelux_dutch", "everyone"], today=date(2027, 3, 1))
    assert campaign.kind_name == "demo_access" and campaign.section.length_days == 30
    assert campaign.variant("benelux_dutch").section.access_url.startswith("https://app.example.nl/")


# -- the mails ---------------------------------------------------------------------------------------

def _render(settings, campaign, recipient, language):
    composer = Composer(campaign=campaign, run_id=1, settings=settings, renderer=Renderer(settings.templates_dir),
                        signer=TokenSigner("k"))
    contact = replace(SAMPLE_CONTACT, language=language)
    recipient.language = language
    return composer.compose(7, contact.email, contact, recipient, now=START)


@pytest.mark.parametrize("index, language, subject, words", [
    (0, "en", "Your trial is ready: here is how to get in", ["Welcome, your trial has started", "Day 1 of 14",
                                                             "Your trial access", "Start your trial"]),
    (0, "nl", "Je proefaccount staat klaar: zo kom je erin", ["Welkom, je proefperiode is begonnen", "Dag 1 van 14",
                                                              "Je toegang", "Start je proefperiode"]),
    (2, "en", "Join the live demo", ["Join the live demo", "Every Thursday we show it live.", "Open your trial"]),
    (2, "nl", "Doe mee met de live demo", ["Doe mee met de live demo", "Open je proefaccount"]),
    (3, "en", "Your trial ends soon: keep what you have built", ["Day 12 of 14", "3 days left", "Choose your plan"]),
    (3, "nl", "Je proefperiode loopt bijna af: houd wat je hebt gebouwd", ["Dag 12 van 14", "3 dagen over",
                                                                          "Kies je abonnement"]),
])
def test_each_step_renders_in_english_and_dutch(plain_settings, index, language, subject, words):
    campaign = load(plain_settings)
    step = campaign.section.steps[index]
    data = campaign.kind._data(campaign.section, step, index, trial_id=5, started_at=START)
    message = _render(plain_settings, campaign, Recipient(contact_id=1, email="a@example.com", segment="everyone",
                                                          delivery_id=7, data=data), language)
    assert message.subject == subject
    assert f'lang="{language}"' in message.html
    for word in words:
        assert word in message.text, word
    if step.step == "ends_soon":
        assert 'href="https://app.example.com/plans"' in message.html  # the ending steps lead to the plans
    if step.step == "welcome":
        assert 'href="https://app.example.com/login"' in message.html and "jane.doe@example.com" in message.text


def test_every_standard_step_has_its_texts_in_english_and_dutch():
    import tomllib

    from engine.campaigns.kinds.demo_access import KNOWN_STEPS

    strings = tomllib.loads((ROOT / "templates" / "emails" / "strings" / "demo_access.toml").read_text())
    for language in ("en", "nl"):
        for step in KNOWN_STEPS:
            for part in ("subject", "preheader", "headline", "body", "button"):
                assert strings[language].get(f"{step}_{part}"), (language, step, part)
    assert set(strings["en"]) == set(strings["nl"])


def test_the_example_drip_validates_with_the_project(project, settings):
    from tests.sending.test_send import cli

    result = cli(settings, "validate", str(project / "campaigns" / "trial-drip.toml"))
    assert result.exit_code == 0, result.output


# -- end to end: `valuemail tick --at` over five weeks ---------------------------------------------

def test_tick_sends_the_example_drip_step_by_step_and_stops_at_conversion(project, settings, db):
    from email import policy
    from email.parser import BytesParser

    from tests.sending.test_send import cli

    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in ("trial-drip.toml", "segments.toml"):
            other.unlink()
    with open(settings.source, "a") as config:  # links are checked as written; tracking has its own tests
        config.write("[tracking]\nclicks = false\n")
    add_contacts(db, 1)  # Dutch, in NL: the benelux_dutch variant
    add_contacts(db, 1, start=1, language="en", country="GB")
    add_contacts(db, 1, start=2, language="en", country="DE")
    stays, buys, cancels = contact_ids(db)
    for contact in (stays, buys, cancels):
        add_event(db, contact, "trial_started", START)
    add_event(db, buys, "trial_converted", START + timedelta(days=5))
    add_event(db, cancels, "trial_cancelled", START + timedelta(days=20))
    for day in range(0, 35):
        result = cli(settings, "tick", "--at", (START + timedelta(days=day, hours=1)).isoformat())
        assert result.exit_code == 0, result.output
    messages = [BytesParser(policy=policy.default).parsebytes(p.read_bytes())
                for p in sorted((settings.var_dir / "outbox").glob("*.eml"))]
    got: dict[str, list[str]] = {}
    for message in messages:
        got.setdefault(message["To"].addresses[0].addr_spec, []).append(str(message["Subject"]))
    assert got["user0@example.com"] == [
        "Je proefaccount staat klaar: zo kom je erin", "Drie dingen die onze tevredenste klanten in hun eerste week doen",
        "Doe mee met een live demo van 30 minuten", "Hoe gaat het met je proefperiode?",
        "Je proefperiode loopt bijna af: houd wat je hebt gebouwd", "Laatste dag van je proefperiode"]
    assert got["user1@example.com"] == ["Your trial is ready: here is how to get in",
                                        "Three things our happiest customers do in their first week"]
    assert len(got["user2@example.com"]) == 4  # welcome, tips, live demo, check-in; cancelled on day 20
    dutch = next(m for m in messages if m["To"].addresses[0].addr_spec == "user0@example.com")
    assert "https://app.example.nl/inloggen" in dutch.get_body(("plain",)).get_content()
    with Session(db) as s:
        assert s.execute(select(TriggerSend.trigger_key).where(TriggerSend.contact_id == buys)).scalars().all() \
            and len(s.execute(select(TriggerSend.id)).all()) == 12
    from engine import trials

    with Session(db) as s:
        result = trials.conversion_rate(s, "trial-drip", now=START + timedelta(days=60), length_days=30)
    assert (result.recipients, result.converted) == (3, 1)
