"""loyalty_points: the [points] section, the kind's hooks, the template, and statements end to end."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select
from sqlmodel import Session

from engine import loyalty
from engine.campaigns import load_campaign
from engine.campaigns.kinds import KindContext, Recipient
from engine.campaigns.kinds.loyalty_points import SKIP_NO_ACTIVITY, SKIP_NO_REWARD
from engine.config import load_settings
from engine.db import session_scope
from engine.errors import CampaignError
from engine.models import Contact, Delivery, Order, PointsEntry
from engine.rendering import Renderer
from engine.sending.compose import Composer, ContactData
from engine.tokens import TokenSigner
from tests.sending.test_send import cli
from tests.support.data import add_contacts

STATEMENT = "loyalty-statement"
REWARD = "loyalty-reward"


def T(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def contact_ids(db) -> list[int]:
    with Session(db) as s:
        return list(s.execute(select(Contact.id).order_by(Contact.id)).scalars())


def add_orders(db, *orders) -> None:
    """Insert (contact_id, order_id, placed_at, euros, status) rows."""
    with db.begin() as conn:
        conn.execute(insert(Order), [
            {"order_id": number, "contact_id": cid, "placed_at": placed, "total_cents": int(euros * 100),
             "currency": "EUR", "status": status, "updated_at": placed}
            for cid, number, placed, euros, status in orders
        ])


def campaign(settings, name: str):
    return load_campaign(settings.campaigns_dir / f"{name}.toml", settings=settings, segment_names=None, today=None)


def only_loyalty(project) -> None:
    """Keep the two loyalty campaigns (and the repository's segments) only."""
    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in (f"{STATEMENT}.toml", f"{REWARD}.toml", "segments.toml"):
            other.unlink()


def parse(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


def outbox(settings) -> list:
    folder = settings.var_dir / "outbox"
    return [parse(p) for p in sorted(folder.glob("*.eml"))] if folder.exists() else []


# -- the [points] section --------------------------------------------------------------------------

GOOD = '''\
name = "Points"
kind = "loyalty_points"
values = ["economic"]
template = "loyalty_points.mjml"
subject = "{{ points.balance }} points"
segments = ["gold", "everyone"]
schedule = { cron = "0 9 1 * *" }

[points]
points_per_unit = 1.5
welcome_bonus = 50
expiry_months = 12
starts_on = 2027-01-01
url = "https://shop.example.com/rewards"

[[points.rewards]]
points = 200
name = "€5 voucher"

[[points.rewards]]
points = 500
name = "€15 voucher"

[variants.gold]
points = { url = "https://shop.example.com/rewards/gold" }
'''


@pytest.fixture
def plain_settings(tmp_path):
    """Settings for loader tests, which need no database."""
    (tmp_path / "templates" / "emails").mkdir(parents=True)
    (tmp_path / "templates" / "emails" / "loyalty_points.mjml").write_text("<mjml></mjml>")
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "config.toml").write_text("")
    return load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def load(settings, text: str):
    path = settings.campaigns_dir / "points.toml"
    path.write_text(text)
    return load_campaign(path, settings=settings, segment_names=["gold", "everyone"], today=date(2027, 3, 1))


def problems(settings, text: str) -> list[str]:
    with pytest.raises(CampaignError) as info:
        load(settings, text)
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    return [n for n, line in enumerate(text.splitlines(), start=1) if needle in line][occurrence - 1]


def test_a_valid_section_loads_with_its_variant(plain_settings):
    loaded = load(plain_settings, GOOD)
    section = loaded.section
    assert (section.points_per_unit, section.welcome_bonus, section.expiry_months) == (1.5, 50, 12)
    assert section.starts_on == date(2027, 1, 1) and section.currency == "EUR" and section.mail == "statement"
    assert loaded.variant("gold").section.url.endswith("/gold")
    assert [r.points for r in loaded.variant("gold").section.rewards] == [200, 500]
    program = loaded.kind.program(section, plain_settings)
    assert program.starts_at == T(2026, 12, 31, 23)  # midnight in Europe/Amsterdam


@pytest.mark.parametrize("old, new, needle, message", [
    ("points_per_unit = 1.5", "points_per_unit = -1", "points_per_unit",
     "'points.points_per_unit': Input should be greater than 0"),
    ("points_per_unit = 1.5", 'points_per_unit = "1"', "points_per_unit",
     "'points.points_per_unit': Input should be a valid number (got str '1')"),
    ("points_per_unit = 1.5", "points_per_unit = 0.123456", "points_per_unit",
     "'points.points_per_unit': use at most 4 decimals (e.g. 0.25)"),
    ("welcome_bonus = 50", "welcome_bonus = -5", "welcome_bonus",
     "'points.welcome_bonus': Input should be greater than or equal to 0"),
    ("expiry_months = 12", "expiry_month = 12", "expiry_month", "unknown key 'points.expiry_month'"),
    ("starts_on = 2027-01-01", 'starts_on = "first of January"', "starts_on",
     "'points.starts_on': 'first of January' is not a date such as 2027-04-03"),
    ("points = 500", "points = 150", "points = 150",
     "'points.rewards.1.points': rewards must go up: 150 points comes after 200"),
    ("points = 500", "points = 200", "points = 200\nname = \"€15",
     "'points.rewards.1.points': rewards must go up: 200 points comes after 200"),
    ('name = "€5 voucher"', 'name = ""', 'name = ""', "'points.rewards[0].name': String should have at least 1 character"),
])
def test_a_bad_points_section_names_file_line_and_key(plain_settings, old, new, needle, message):
    text = GOOD.replace(old, new, 1)
    line = line_of(text, needle.split("\n")[0], occurrence=2 if needle.startswith("points = 200\n") else 1)
    assert f"points.toml:{line}: {message}" in problems(plain_settings, text)


def test_the_mail_must_fit_the_schedule(plain_settings):
    reward_on_cron = GOOD.replace("starts_on", 'mail = "reward"\nstarts_on')
    assert problems(plain_settings, reward_on_cron) == [
        f"points.toml:{line_of(reward_on_cron, 'schedule')}: 'schedule': a reward mail goes out when a balance "
        'crosses a threshold: use { trigger = "reward" }']
    statement_on_trigger = GOOD.replace('{ cron = "0 9 1 * *" }', '{ trigger = "reward" }')
    assert "'schedule': a statement runs on an at or cron schedule" in problems(plain_settings, statement_on_trigger)[0]
    no_rewards = re.sub(r"\[\[points\.rewards\]\]\npoints = \d+\nname = \"[^\"]+\"\n\n?", "", reward_on_cron)
    no_rewards = no_rewards.replace('{ cron = "0 9 1 * *" }', '{ trigger = "reward" }')
    assert problems(plain_settings, no_rewards) == [
        f"points.toml:{line_of(no_rewards, 'mail =')}: 'points.mail': a reward mail needs at least one "
        "[[points.rewards]] threshold"]


def test_the_example_campaigns_validate(settings, project):
    mine = cli(settings, "validate", str(project / "campaigns" / f"{STATEMENT}.toml"),
               str(project / "campaigns" / f"{REWARD}.toml"))
    assert mine.exit_code == 0, mine.output
    assert "2 campaign(s), 5 variant(s)" in mine.output
    everything = cli(settings, "validate")
    assert everything.exit_code == 0, everything.output


# -- hooks -----------------------------------------------------------------------------------------

def recipients_for(db, ids: list[int], segment: str = "everyone") -> list[Recipient]:
    with Session(db) as s:
        rows = s.execute(select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id)).scalars().all()
        return [Recipient(contact_id=c.id, email=c.email, segment=segment, delivery_id=1000 + c.id, language=c.language)
                for c in rows]


def test_before_occurrence_credits_and_prepare_loads_each_statement(settings, db):
    add_contacts(db, 3)
    a, b, c = contact_ids(db)
    add_orders(db, (a, "A-1", T(2027, 2, 3), 180.0, "paid"), (b, "B-1", T(2027, 2, 4), 20.0, "delivered"))
    definition = campaign(settings, STATEMENT)
    ctx = KindContext(campaign_id=STATEMENT, now=T(2027, 3, 1, 8), settings=settings)
    with session_scope(db) as s:
        definition.kind.before_occurrence(definition.section, s, ctx)
        definition.kind.before_occurrence(definition.section, s, ctx)  # a resumed fill: nothing doubles
    recipients = recipients_for(db, [a, b, c])
    with Session(db) as s:
        skips = definition.kind.prepare(definition.section, s, ctx, recipients)
    assert skips == {1000 + c: SKIP_NO_ACTIVITY}
    first = recipients[0].extra["points"]
    assert (first["balance"], first["earned"], first["distance"], first["next_reward"]["name"]) == \
        (230, 230, 270, "€15 voucher")
    assert [r["name"] for r in first["available"]] == ["€5 voucher"] and first["progress"] == 46
    assert first["entries"][0] == {"kind": "welcome", "points": 50, "order": None,
                                   "date": {"iso": "2027-02-03", "day": 3, "month": 2, "year": 2027}}
    assert recipients[1].extra["points"]["balance"] == 70
    context = definition.kind.context(definition.section, recipients[0])["points"]
    assert (context["mail"], context["per_unit"], context["currency"], context["reward"]) == ("statement", "1", "EUR", None)
    json.dumps(context)  # plain data only


def test_prepare_is_a_fixed_number_of_queries_whatever_the_batch_size(settings, db):
    add_contacts(db, 40)
    ids = contact_ids(db)
    add_orders(db, *[(cid, f"O-{cid}", T(2027, 2, 1), 10.0 + cid, "paid") for cid in ids])
    definition = campaign(settings, STATEMENT)
    ctx = KindContext(campaign_id=STATEMENT, now=T(2027, 3, 1), settings=settings)
    with session_scope(db) as s:
        definition.kind.before_occurrence(definition.section, s, ctx)
    statements: list[str] = []
    event.listen(db, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def prepare(batch: list[int]) -> int:
        recipients = recipients_for(db, batch)
        statements.clear()
        with Session(db) as s:
            definition.kind.prepare(definition.section, s, ctx, recipients)
        assert all(r.extra["points"]["balance"] > 0 for r in recipients)
        return len(statements)

    assert prepare(ids[:3]) == prepare(ids[3:]) <= 3


def test_due_yields_one_stable_key_per_crossing(settings, db):
    add_contacts(db, 2)
    a, b = contact_ids(db)
    add_orders(db, (a, "A-1", T(2027, 3, 2, 12), 160.0, "paid"), (b, "B-1", T(2027, 3, 3, 12), 700.0, "paid"))
    definition = campaign(settings, REWARD)
    ctx = KindContext(campaign_id=REWARD, now=T(2027, 3, 4, 9), settings=settings)
    with session_scope(db) as s:
        dues = definition.kind.due(definition.section, s, ctx, since=T(2027, 3, 1, 9))
    assert [(d.contact_id, d.key, d.due_at) for d in dues] == [
        (a, f"reward:{a}:200:1", T(2027, 3, 2, 12)),  # 160 + the 50 welcome bonus
        (b, f"reward:{b}:500:1", T(2027, 3, 3, 12)),  # 700 crosses 200 and 500: one mail, for the larger
    ]
    assert dues[1].data["reward"] == {"points": 500, "name": "€15 voucher"}
    assert [r["points"] for r in dues[1].data["crossed"]] == [200, 500] and dues[1].data["balance"] == 700
    json.dumps([d.data for d in dues])
    with session_scope(db) as s:
        again = definition.kind.due(definition.section, s, ctx, since=T(2027, 3, 1, 9))
    assert [d.key for d in again] == [d.key for d in dues]
    statement_kind = campaign(settings, STATEMENT)
    with session_scope(db) as s:
        assert statement_kind.kind.due(statement_kind.section, s, ctx, since=T(2027, 3, 1)) == []
    # A reward mail goes only with a crossing's data: a recipient without one is never sent a guess.
    recipients = recipients_for(db, [a, b])
    recipients[0].data = dict(dues[0].data)
    with Session(db) as s:
        assert definition.kind.prepare(definition.section, s, ctx, recipients) == {1000 + b: SKIP_NO_REWARD}


# -- the template ----------------------------------------------------------------------------------

def compose(settings, definition, contact: Contact, recipient: Recipient):
    composer = Composer(campaign=definition, run_id=1, settings=settings, renderer=Renderer(settings.templates_dir),
                        signer=TokenSigner(settings.secret_key))
    data = ContactData(id=contact.id, email=contact.email, first_name=contact.first_name, last_name=contact.last_name,
                       country=contact.country, language=contact.language, timezone=contact.timezone, attributes={})
    return composer.compose(recipient.delivery_id, contact.email, data, recipient, now=T(2027, 3, 1, 8))


def test_statement_renders_in_dutch_and_english(settings, db):
    add_contacts(db, 1, language="nl")
    add_contacts(db, 1, start=1, language="en", country="GB")
    nl, en = contact_ids(db)
    add_orders(db, (nl, "N-1", T(2027, 2, 3), 142.0, "paid"), (en, "E-1", T(2027, 2, 4), 480.5, "paid"))
    definition = campaign(settings, STATEMENT)
    ctx = KindContext(campaign_id=STATEMENT, now=T(2027, 3, 1, 8), settings=settings)
    recipients = recipients_for(db, [nl, en])
    with session_scope(db) as s:
        definition.kind.before_occurrence(definition.section, s, ctx)
        assert definition.kind.prepare(definition.section, s, ctx, recipients) == {}
        contacts = {c.id: c for c in s.execute(select(Contact)).scalars()}
    dutch = compose(settings, definition, contacts[nl], recipients[0])
    english = compose(settings, definition, contacts[en], recipients[1])
    assert dutch.subject == "Je hebt 192 punten" and english.subject == "You have 530 points"
    assert '<html lang="nl"' in dutch.html and '<html lang="en"' in english.html
    assert "Je saldo" in dutch.html and "Nog maar 8 punten tot €5 voucher." in dutch.text
    assert "punten op 1 maart 2027" in dutch.text and "Welkomstbonus" in dutch.text
    assert "Only 470 points to go until €35 voucher." in english.text
    assert "Ready to redeem: €5 voucher · €15 voucher" in english.text
    assert "Order E-1" in english.text and "+480" in english.text
    for message, label in ((dutch, "Bekijk mijn beloningen"), (english, "See my rewards")):
        assert message.html.count(f">{label}</a>") == 1  # one call to action
        assert re.search(rf'<a href="https://shop.example.com/account/rewards"[^>]*>{label}</a>', message.html)
        images = re.findall(r"<img [^>]*>", message.html)
        assert images and all(re.search(r'\balt="[^"]+"', img) for img in images)
        assert "Keizersgracht 1" in message.text and "/u/" in message.text  # the footer partial
        assert "{{" not in message.html and "{%" not in message.html


def test_reward_mail_names_the_reward(settings, db):
    add_contacts(db, 1, language="nl")
    (nl,) = contact_ids(db)
    add_orders(db, (nl, "N-1", T(2027, 3, 2, 12), 460.0, "paid"))
    definition = campaign(settings, REWARD)
    ctx = KindContext(campaign_id=REWARD, now=T(2027, 3, 3), settings=settings)
    recipient = recipients_for(db, [nl], segment="benelux_dutch")[0]
    with session_scope(db) as s:
        (due,) = definition.kind.due(definition.section, s, ctx, since=T(2027, 3, 1))
        recipient.data = dict(due.data)
        assert definition.kind.prepare(definition.variant("benelux_dutch").section, s, ctx, [recipient]) == {}
        contact = s.get(Contact, nl)
    message = compose(settings, definition, contact, recipient)
    assert message.subject == "Je hebt een beloning verdiend: €15 voucher"
    assert "Je punten zijn opgespaard en nu goed voor:" in message.text and "€15 voucher" in message.text
    assert "https://shop.example.com/nl/account/beloningen" in message.html
    assert "Wissel mijn beloning in" in message.html


# -- end to end ------------------------------------------------------------------------------------

@pytest.mark.usefixtures("system_clock")
def test_send_mails_each_contact_their_own_balance(project, settings, db):
    only_loyalty(project)
    add_contacts(db, 3)
    a, b, c = contact_ids(db)
    now = datetime.now(timezone.utc)
    add_orders(db, (a, "A-1", now - timedelta(days=20), 123.45, "paid"),
               (a, "A-2", now - timedelta(days=10), 60.0, "returned"),
               (b, "B-1", now - timedelta(days=5), 1010.0, "delivered"))
    result = cli(settings, "send", STATEMENT)
    assert result.exit_code == 0, result.output
    mails = {m["To"].addresses[0].addr_spec: m for m in outbox(settings)}
    assert set(mails) == {"user0@example.com", "user1@example.com"}  # user2 has no points: skipped
    assert str(mails["user0@example.com"]["Subject"]) == "Je hebt 173 punten"
    assert str(mails["user1@example.com"]["Subject"]) == "Je hebt 1060 punten"
    text = mails["user1@example.com"].get_body(("plain",)).get_content()
    assert "1060" in text and "Je hebt onze hoogste beloning bereikt." in text
    with Session(db) as s:
        skipped = s.execute(select(Delivery.contact_id, Delivery.last_error).where(Delivery.status == "skipped")).all()
    assert skipped == [(c, SKIP_NO_ACTIVITY)]


@pytest.mark.usefixtures("system_clock")
def test_the_next_statement_counts_only_what_is_new_since_the_last_one(project, settings, db):
    only_loyalty(project)
    add_contacts(db, 1)
    (a,) = contact_ids(db)
    now = datetime.now(timezone.utc)
    add_orders(db, (a, "A-1", now - timedelta(days=30), 100.0, "paid"))
    assert cli(settings, "send", STATEMENT).exit_code == 0
    add_orders(db, (a, "A-2", now - timedelta(days=40), 40.0, "paid"))  # placed earlier, imported after that mail
    again = cli(settings, "send", STATEMENT, "--again")
    assert again.exit_code == 0, again.output
    texts = {str(m["Subject"]): m.get_body(("plain",)).get_content().replace("\r\n", "\n") for m in outbox(settings)}
    assert set(texts) == {"Je hebt 150 punten", "Je hebt 190 punten"}
    assert "Verdiend\n+150\n" in texts["Je hebt 150 punten"] and "tot nu toe" in texts["Je hebt 150 punten"]
    assert "Verdiend\n+40\n" in texts["Je hebt 190 punten"] and "sinds " in texts["Je hebt 190 punten"]


def test_a_test_send_goes_out_even_without_points(project, settings, db):
    only_loyalty(project)
    add_contacts(db, 1)
    result = cli(settings, "send", STATEMENT, "--test-to", "marketer@example.org")
    assert result.exit_code == 0, result.output
    (message,) = outbox(settings)
    assert str(message["Subject"]) == "[TEST] Je hebt 0 punten"


def test_a_month_of_ticks_sends_each_reward_once_and_statements_with_the_balance(project, settings, db):
    only_loyalty(project)
    add_contacts(db, 3)
    a, b, c = contact_ids(db)
    add_orders(db,
               (a, "A-1", T(2027, 3, 3, 11), 120.0, "paid"),     # 170 with the welcome bonus
               (a, "A-2", T(2027, 3, 10, 15), 100.0, "paid"),    # 270: crosses 200
               (b, "B-1", T(2027, 3, 5, 10), 600.0, "delivered"),  # 650: crosses 200 and 500 at once
               (b, "B-2", T(2027, 3, 20, 10), 80.0, "paid"),
               (c, "C-1", T(2027, 3, 8, 10), 300.0, "paid"))
    day = datetime(2027, 3, 1, 9)
    while day <= datetime(2027, 4, 1, 9):
        if day == datetime(2027, 3, 15, 9):
            with db.begin() as conn:  # C returns the order before the tick after next
                conn.execute(Order.__table__.update().where(Order.order_id == "C-1").values(status="returned"))
        result = cli(settings, "tick", "--at", day.isoformat())
        assert result.exit_code == 0, result.output
        day += timedelta(days=1)
    mails = outbox(settings)
    rewards = sorted((m["To"].addresses[0].addr_spec, str(m["Subject"])) for m in mails
                     if "beloning" in str(m["Subject"]))
    assert rewards == [("user0@example.com", "Je hebt een beloning verdiend: €5 voucher"),
                       ("user1@example.com", "Je hebt een beloning verdiend: €15 voucher"),
                       ("user2@example.com", "Je hebt een beloning verdiend: €5 voucher")]
    statements = sorted((m["To"].addresses[0].addr_spec, str(m["Subject"])) for m in mails
                        if "beloning" not in str(m["Subject"]))
    # 1 March: nobody had points yet, so nothing went out; 1 April: each balance (C's order was returned).
    assert statements == [("user0@example.com", "Je hebt 270 punten"), ("user1@example.com", "Je hebt 730 punten"),
                          ("user2@example.com", "Je hebt 50 punten")]
    with Session(db) as s:
        assert loyalty.balance(s, [a, b, c], at=T(2027, 4, 2)) == {a: 270, b: 730, c: 50}
        keys = s.execute(select(PointsEntry.source_key).where(PointsEntry.contact_id == c)
                         .order_by(PointsEntry.id)).scalars().all()
    assert keys == ["earn:order:5", f"welcome:{c}", "reverse:order:5"]
