"""The contest end to end: `valuemail send` invites, people enter, `valuemail contest draw|entries|verify`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from engine import contests
from engine.clock import SystemClock
from engine.db import session_scope
from engine.models import Contact, Delivery, Run
from engine.models import Contest as ContestRow
from engine.tokens import TokenSigner
from tests.conftest import write_settings
from tests.sending.test_send import cli
from tests.support.data import add_contacts

UTC = timezone.utc
CAMPAIGN = "spring-contest"
INVITED = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)  # the example's opening, 09:00 in Amsterdam
BEFORE_CLOSE = datetime(2027, 4, 27, 21, 0, tzinfo=UTC)
AFTER_DRAW_AT = datetime(2027, 4, 28, 10, 30, tzinfo=UTC)  # draw_at is 12:00 in Amsterdam
URL = re.compile(r'href="(http://127\.0\.0\.1:8000/c/(r/)?[^"]+)"')


@pytest.fixture
def at(monkeypatch):
    """Set the wall clock every command sees."""
    def set_clock(when: datetime) -> None:
        monkeypatch.setattr(SystemClock, "now", lambda self: when)
    return set_clock


def messages(settings) -> dict[str, list]:
    """The outbox by recipient address."""
    found: dict[str, list] = {}
    for path in sorted((settings.var_dir / "outbox").glob("*.eml")):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        found.setdefault(msg["To"].addresses[0].addr_spec, []).append(msg)
    return found


def html_of(msg) -> str:
    return msg.get_body(("html",)).get_content()


def contact_ids(db) -> dict[str, int]:
    with Session(db) as s:
        return dict(s.execute(select(Contact.email, Contact.id)).all())


def invite(settings, db, at) -> dict[str, int]:
    with open(settings.source, "a") as config:  # links are checked as written; tracking has its own tests
        config.write("[tracking]\nclicks = false\n")
    add_contacts(db, 6)  # Dutch speakers in NL: the benelux_dutch variant
    add_contacts(db, 2, start=10, language="en", country="DE")
    at(INVITED)
    result = cli(settings, "send", CAMPAIGN)
    assert result.exit_code == 0, result.output
    return contact_ids(db)


def test_send_invites_with_a_personal_entry_link_and_share_link(project, settings, db, at):
    ids = invite(settings, db, at)
    inbox = messages(settings)
    assert len(inbox) == 8 and all(len(m) == 1 for m in inbox.values())
    signer = TokenSigner("test-secret-key")
    with Session(db) as s:
        commitment = s.get(ContestRow, CAMPAIGN).seed_hash
        deliveries = dict(s.execute(select(Delivery.email, Delivery.id)).all())
    for address, (msg,) in inbox.items():
        html = html_of(msg)
        links = [m.group(1) for m in URL.finditer(html)]
        entry = [u for u in links if "/c/r/" not in u]
        share = [u for u in links if "/c/r/" in u]
        assert len(entry) == 1 and len(set(share)) == 1
        assert signer.unsign("contest", entry[0].rsplit("/", 1)[1]) == deliveries[address]
        assert contests.referrer_of("test-secret-key", share[0].rsplit("/", 1)[1]) == (CAMPAIGN, ids[address])
        assert commitment in html
    dutch, english = html_of(inbox["user0@example.com"][0]), html_of(inbox["user10@example.com"][0])
    assert str(inbox["user0@example.com"][0]["Subject"]) == "Person0, win een weekend Texel, vlak bij huis"
    assert dutch.count(">Doe mee aan de loting</a>") == 1 and "Een weekend voor twee" in dutch
    assert str(inbox["user10@example.com"][0]["Subject"]) == "Person10, win a weekend on Texel"
    assert english.count(">Join the draw</a>") == 1 and "A weekend for two" in english


def _recompute(document: dict) -> list[int]:
    """The published algorithm, from the published file alone."""
    seed = document["seed"].encode("ascii")
    score = {e["entry"]: min(hmac.new(seed, f"{e['entry']}:{t}".encode(), hashlib.sha256).hexdigest()
                             for t in range(1, e["tickets"] + 1)) for e in document["entries"]}
    return sorted(score, key=lambda e: (score[e], e))[:document["winners"]]


@pytest.mark.usefixtures("system_clock")
def test_draw_publish_and_verify_end_to_end(project, database_url, db, at):
    # One marketing mail a day: the invitation uses it up, the winners' mail is exempt.
    settings = write_settings(project, database_url, sending={"max_per_day": 1})
    ids = invite(settings, db, at)
    with session_scope(db) as s:
        rules = contests.ContestRules.from_section(
            contests.stored_campaign(s, CAMPAIGN, settings=settings).section, tz=settings.tz)
        u = {n: ids[f"user{n}@example.com"] for n in (0, 1, 2, 3, 4, 5, 10, 11)}
        when = INVITED + timedelta(days=2)
        for n, referrer in ((0, None), (1, 0), (2, 0), (3, None), (10, 3), (5, None)):
            contests.enter(s, CAMPAIGN, u[n], rules=rules, now=when, referred_by=u[referrer] if referrer is not None else None)
        assert contests.tickets(s, CAMPAIGN, u[0], bonus_entries_per_referral=2) == 5

    published_before = project / "published" / "before.json"
    assert cli(settings, "contest", "entries", CAMPAIGN, "--out", str(published_before)).exit_code == 0
    before = json.loads(published_before.read_text())
    assert before["seed"] is None and len(before["entries"]) == 6 and "@example.com" not in published_before.read_text()

    at(BEFORE_CLOSE)
    early = cli(settings, "contest", "draw", CAMPAIGN)
    assert early.exit_code == 1 and "open for entries until" in early.output

    at(AFTER_DRAW_AT)
    with session_scope(db) as s:  # the invitations count as today's marketing mail for the cap
        s.execute(update(Delivery).values(sent_at=AFTER_DRAW_AT - timedelta(hours=1)))
    drawn = cli(settings, "contest", "draw", CAMPAIGN)
    assert drawn.exit_code == 0, drawn.output
    with Session(db) as s:
        row = s.get(ContestRow, CAMPAIGN)
        seed, winners = row.seed, [w["contact_id"] for w in row.winners]
        run = s.execute(select(Run).where(Run.transactional.is_(True))).scalars().one()
        winner_deliveries = s.execute(select(Delivery).where(Delivery.run_id == run.id)).scalars().all()
    assert "seed (revealed now):" in drawn.output and seed in drawn.output and "sent 3" in drawn.output
    assert len(winners) == 3 and run.status == "finished"
    assert sorted((d.contact_id, d.data["rank"], d.data["mail"], d.status) for d in winner_deliveries) == sorted(
        (c, rank, "winner", "sent") for rank, c in enumerate(winners, 1))

    inbox = messages(settings)
    by_id = {v: k for k, v in ids.items()}
    for contact_id in ids.values():
        mails = inbox[by_id[contact_id]]
        won = [m for m in mails if "gewonnen" in str(m["Subject"]) or "You won" in str(m["Subject"])]
        assert len(won) == (1 if contact_id in winners else 0)
        assert len(mails) == 1 + len(won)  # the invitation, plus the winner mail for winners only
    for rank, contact_id in enumerate(winners, 1):
        (won,) = [m for m in inbox[by_id[contact_id]] if "Texel gewonnen" in str(m["Subject"]) or "You won" in str(m["Subject"])]
        html = html_of(won)
        assert seed in html and row.seed_hash in html and f"{rank} " in html

    published = project / "published" / "after.json"
    assert cli(settings, "contest", "entries", CAMPAIGN, "--out", str(published)).exit_code == 0
    document = json.loads(published.read_text())
    assert hashlib.sha256(document["seed"].encode()).hexdigest() == document["commitment"] == before["commitment"]
    assert document["entries"] == before["entries"]
    expected = _recompute(document)
    entry_of = {e.contact_id: e.entry_id for e in _entrants(db)}
    assert expected == [entry_of[c] for c in winners] == [r["entry"] for r in document["result"]]
    for rank, entry in enumerate(expected, 1):
        assert re.search(rf"{rank}\. entry #{entry}\b", drawn.output)

    assert cli(settings, "contest", "verify", CAMPAIGN).exit_code == 0
    checked = cli(settings, "contest", "verify", CAMPAIGN, "--entries", str(published))
    assert checked.exit_code == 0 and "verified" in checked.output

    again = cli(settings, "contest", "draw", CAMPAIGN)
    assert again.exit_code == 1 and "already drawn" in again.output
    assert sum(len(m) for m in messages(settings).values()) == 8 + 3

    forged = dict(document, entries=[dict(e, tickets=e["tickets"] + 5) for e in document["entries"]])
    (project / "forged.json").write_text(json.dumps(forged))
    assert cli(settings, "contest", "verify", CAMPAIGN, "--entries", str(project / "forged.json")).exit_code == 1
    with session_scope(db) as s:
        s.execute(update(ContestRow).values(seed="1" * 64))
    tampered = cli(settings, "contest", "verify", CAMPAIGN)
    assert tampered.exit_code == 1 and "does not match the commitment" in tampered.output


def _entrants(db):
    with Session(db) as s:
        return contests.entrants(s, CAMPAIGN, bonus_entries_per_referral=2)


def test_a_contest_that_never_opened_cannot_be_drawn(project, settings, db):
    result = cli(settings, "contest", "draw", CAMPAIGN)
    assert result.exit_code == 1 and "has not opened yet" in result.output
    assert cli(settings, "contest", "entries", CAMPAIGN).exit_code == 1


def test_the_example_campaign_validates(project, settings):
    result = cli(settings, "validate", str(project / "campaigns" / f"{CAMPAIGN}.toml"))
    assert result.exit_code == 0, result.output
    assert "1 campaign(s), 3 variant(s)" in result.output
    assert cli(settings, "validate").exit_code == 0
