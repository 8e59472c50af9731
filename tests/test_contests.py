"""Contests: the commitment fixed at opening, entries and referrals, a draw anyone can recompute."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from engine import contests
from engine.contests import ContestRules, DrawRefused, EntryRefused
from engine.db import session_scope
from engine.models import Campaign, Contact, ContestEntry
from engine.models import Contest as ContestRow
from engine.tokens import BadToken, TokenSigner
from tests.support.data import T0, add_contacts

UTC = timezone.utc
CAMPAIGN = "spring-contest"
OPENS = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)
CLOSES = datetime(2027, 4, 27, 21, 59, 59, tzinfo=UTC)
INSIDE = OPENS + timedelta(days=1)
AFTER = CLOSES + timedelta(hours=1)
RULES = ContestRules(opens_at=OPENS, closes_at=CLOSES, winners=2, bonus_entries_per_referral=2)


@pytest.fixture
def people(db) -> dict[int, int]:
    """Contacts user0..user9 and the contest's campaign row; returns {n: contact id}."""
    add_contacts(db, 10)
    with session_scope(db) as s:
        s.add(Campaign(id=CAMPAIGN, name="Spring contest", kind="contest", values=["social"], definition={},
                       source_hash="x", synced_at=T0))
    with Session(db) as s:
        rows = s.execute(select(Contact.email, Contact.id)).all()
    return {int(email.split("@")[0].removeprefix("user")): contact_id for email, contact_id in rows}


def opened(db, at=OPENS):
    with session_scope(db) as s:
        return contests.open_contest(s, CAMPAIGN, now=at)


def enter(db, contact_id, *, at=INSIDE, referred_by=None, rules=RULES):
    with session_scope(db) as s:
        return contests.enter(s, CAMPAIGN, contact_id, rules=rules, now=at, referred_by=referred_by)


def tickets(db, contact_id, rules=RULES):
    with Session(db) as s:
        return contests.tickets(s, CAMPAIGN, contact_id, bonus_entries_per_referral=rules.bonus_entries_per_referral)


def test_the_commitment_is_fixed_when_the_contest_opens_and_never_changes(db, people):
    first = opened(db)
    assert len(first.seed) == 64 and first.seed_hash == hashlib.sha256(first.seed.encode()).hexdigest()
    assert first.opened_at == OPENS and first.drawn_at is None
    again = opened(db, at=INSIDE)
    assert (again.seed, again.seed_hash, again.opened_at) == (first.seed, first.seed_hash, OPENS)
    enter(db, people[0])
    with session_scope(db) as s:
        contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER)
    after = opened(db, at=AFTER)
    assert (after.seed, after.seed_hash) == (first.seed, first.seed_hash)


def test_entries_outside_the_window_are_refused_politely(db, people):
    with pytest.raises(EntryRefused) as never_opened:
        enter(db, people[0])
    assert never_opened.value.reason == "not_open"
    opened(db)
    with pytest.raises(EntryRefused) as early:
        enter(db, people[0], at=OPENS - timedelta(seconds=1))
    assert early.value.reason == "not_open" and "opens on 2027-04-06" in str(early.value)
    with pytest.raises(EntryRefused) as late:
        enter(db, people[0], at=CLOSES + timedelta(microseconds=1))
    assert late.value.reason == "closed" and "closed on 2027-04-27" in str(late.value)
    assert enter(db, people[0], at=OPENS).created  # both ends of the window are inside it
    assert enter(db, people[1], at=CLOSES).created
    with Session(db) as s:
        assert len(s.execute(select(ContestEntry)).all()) == 2


def test_entering_again_keeps_the_one_entry(db, people):
    opened(db)
    first = enter(db, people[0])
    second = enter(db, people[0], at=INSIDE + timedelta(hours=3))
    assert first.created and not second.created and first.entry_id == second.entry_id
    assert tickets(db, people[0]) == 1


def test_self_referral_is_refused(db, people):
    opened(db)
    with pytest.raises(EntryRefused) as refused:
        enter(db, people[0], referred_by=people[0])
    assert refused.value.reason == "self_referral"
    assert tickets(db, people[0]) == 0


def test_a_referral_counts_only_when_the_friend_enters_and_only_once(db, people):
    opened(db)
    a, b, c, d, e = (people[n] for n in range(5))
    enter(db, a)
    assert tickets(db, a) == 1  # sharing the link alone earns nothing
    with pytest.raises(EntryRefused):
        enter(db, b, referred_by=a, at=CLOSES + timedelta(minutes=1))  # too late: no entry, no bonus
    assert tickets(db, a) == 1
    enter(db, b, referred_by=a)
    assert tickets(db, a) == 1 + 2
    enter(db, b, referred_by=a)  # the same friend again
    assert tickets(db, a) == 1 + 2
    moved = enter(db, b, referred_by=c)  # a later link cannot take the credit
    assert moved.referred_by == a and tickets(db, c) == 0
    enter(db, c, referred_by=a)
    assert tickets(db, a) == 1 + 2 * 2 and tickets(db, b) == 1
    enter(db, d, referred_by=e)  # e shared but has not entered: no tickets yet ...
    assert tickets(db, e) == 0
    enter(db, e)  # ... and the bonus counts once e enters
    assert tickets(db, e) == 1 + 2


def test_the_draw_is_refused_before_the_close_and_happens_once(db, people):
    with session_scope(db) as s, pytest.raises(DrawRefused, match="never opened"):
        contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER)
    opened(db)
    enter(db, people[0])
    with session_scope(db) as s, pytest.raises(DrawRefused, match="open for entries until"):
        contests.draw(s, CAMPAIGN, rules=RULES, now=CLOSES)
    scheduled = ContestRules(OPENS, CLOSES, 2, 2, draw_at=CLOSES + timedelta(hours=12))
    with session_scope(db) as s, pytest.raises(DrawRefused, match="to be drawn at"):
        contests.draw(s, CAMPAIGN, rules=scheduled, now=AFTER)
    with session_scope(db) as s:
        result = contests.draw(s, CAMPAIGN, rules=scheduled, now=CLOSES + timedelta(hours=12))
    assert [w.contact_id for w in result.winners] == [people[0]]
    with session_scope(db) as s, pytest.raises(DrawRefused, match="already drawn"):
        contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER + timedelta(days=1))
    with pytest.raises(EntryRefused):
        enter(db, people[1])


def _independent_winners(document: dict) -> list[int]:
    """The draw as the published algorithm describes it, written without engine code."""
    key = document["seed"].encode("ascii")
    best = {}
    for entry in document["entries"]:
        scores = [hmac.new(key, f"{entry['entry']}:{t}".encode(), hashlib.sha256).hexdigest()
                  for t in range(1, entry["tickets"] + 1)]
        best[entry["entry"]] = min(scores)
    return sorted(best, key=lambda e: (best[e], e))[:document["winners"]]


def test_the_winners_can_be_recomputed_from_the_seed_and_the_published_entries(db, people):
    opened(db)
    for n in range(8):
        enter(db, people[n], referred_by=people[0] if n in (3, 4, 5) else people[1] if n == 6 else None)
    with Session(db) as s:
        before = contests.published_document(s, CAMPAIGN, rules=RULES)
    assert before["seed"] is None and before["result"] is None  # the seed stays secret until the draw
    with session_scope(db) as s:
        result = contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER)
    with Session(db) as s:
        published = contests.published_document(s, CAMPAIGN, rules=RULES)
        stored = s.get(ContestRow, CAMPAIGN)
    assert hashlib.sha256(published["seed"].encode()).hexdigest() == published["commitment"] == before["commitment"]
    assert published["entries"] == before["entries"] and published["entries_sha256"] == before["entries_sha256"]
    assert {e["entry"]: e["tickets"] for e in published["entries"]}[result.entrants[0].entry_id] == 1 + 2 * 3
    expected = _independent_winners(published)
    assert len(expected) == 2
    assert [r["entry"] for r in published["result"]] == expected
    assert [w.entry_id for w in result.winners] == expected
    assert [w["entry_id"] for w in stored.winners] == expected and stored.drawn_at == AFTER
    assert [r["rank"] for r in published["reserves"]] == [3, 4]
    text = repr(published)
    assert "@example.com" not in text and "user" not in text  # no address leaks, only masked ones
    assert all(e["email"] == "u***@e***.com" for e in published["entries"])


def test_a_tampered_seed_or_entry_list_fails_verification(db, people):
    opened(db)
    for n in range(4):
        enter(db, people[n], referred_by=people[0] if n == 2 else None)
    with session_scope(db) as s:
        contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER)
    with Session(db) as s:
        assert contests.verify(s, CAMPAIGN, rules=RULES).ok
        document = contests.published_document(s, CAMPAIGN, rules=RULES)
    padded = dict(document, entries=document["entries"] + [{"entry": 999, "email": "x***@y***.z", "tickets": 50}])
    assert not contests.verify_document(padded).ok
    with session_scope(db) as s:
        s.execute(update(ContestRow).values(seed="0" * 64))
    with Session(db) as s:
        verification = contests.verify(s, CAMPAIGN, rules=RULES)
    assert not verification.ok and "does not match the commitment" in verification.problems[0]


def test_an_entry_with_more_tickets_wins_proportionally_more_often():
    wins = 0
    for i in range(3000):
        seed = hashlib.sha256(str(i).encode()).hexdigest()
        wins += contests.pick_winners(seed, [(1, 1), (2, 3)], 1)[0].entry_id == 2
    assert 0.72 < wins / 3000 < 0.78  # three tickets of four


def test_pick_winners_follows_the_documented_algorithm():
    seed = "ab" * 32
    picks = contests.pick_winners(seed, [(5, 2), (9, 1), (12, 1), (30, 0)], 10)
    assert [p.rank for p in picks] == [1, 2, 3] and 30 not in [p.entry_id for p in picks]
    document = {"seed": seed, "winners": 10, "entries": [{"entry": e, "tickets": n} for e, n in ((5, 2), (9, 1), (12, 1))]}
    assert [p.entry_id for p in picks] == _independent_winners(document)
    assert picks[0].score == min(contests.ticket_score(seed, p.entry_id, t) for p in picks for t in range(1, p.tickets + 1))


def test_share_links_name_the_referrer_and_cannot_be_forged():
    token = contests.referral_token("secret", CAMPAIGN, 42)
    assert contests.referrer_of("secret", token) == (CAMPAIGN, 42)
    assert contests.share_url("secret", "https://mail.example.com", CAMPAIGN, 42) == f"https://mail.example.com/c/r/{token}"
    for bad in (token[:-2] + "xx", contests.referral_token("other", CAMPAIGN, 42), TokenSigner("secret").sign("contest", 42)):
        with pytest.raises(BadToken):
            contests.referrer_of("secret", bad)


@pytest.mark.parametrize("email, masked", [
    ("anneke.devries@example.nl", "a***@e***.nl"),
    ("x@localhost", "x***@l***"),
    ("bo@mail.co.uk", "b***@m***.uk"),
])
def test_published_addresses_are_masked(email, masked):
    assert contests.mask_email(email) == masked


def test_the_generated_toml_reads_back_as_the_same_data():
    import tomllib

    data = {"name": 'Quote " and \\ backslash\nnewline', "n": 3, "f": 0.5, "yes": True,
            "when": datetime(2027, 4, 6, 9, 0), "list": ["a", 1], "table": {"en": "x", "odd key": {"deep": []}}}
    assert tomllib.loads(contests.dump_toml(data)) == data


def test_a_draw_without_entries_has_no_winners(db, people):
    opened(db)
    with session_scope(db) as s:
        result = contests.draw(s, CAMPAIGN, rules=RULES, now=AFTER)
    assert result.winners == [] and result.tickets_total == 0
    with Session(db) as s:
        assert contests.verify(s, CAMPAIGN, rules=RULES).ok


# -- entering through a share link: eligibility and the confirmation link -------------------------------

def test_an_address_we_may_no_longer_mail_cannot_enter(db, people):
    from engine.models import Suppression

    opened(db)
    with session_scope(db) as s:
        s.add(Suppression(email_key="user1@example.com", reason="unsubscribe", created_at=T0))
        s.get(Contact, people[2]).erased_at = T0
        s.get(Contact, people[3]).status = "unsubscribed"
        s.get(Contact, people[4]).status = "transactional"  # never subscribed: may still take part
    for n in (1, 2, 3):
        with pytest.raises(EntryRefused) as refused:
            enter(db, people[n])
        assert refused.value.reason == "unavailable"
    assert enter(db, people[4]).created
    with Session(db) as s:
        assert [row.contact_id for row in s.execute(select(ContestEntry)).scalars()] == [people[4]]


def test_the_window_state_names_each_side_of_the_window(db, people):
    assert contests.window_state(None, RULES, INSIDE) == "not_open"  # never opened: no invitation went out
    contest = opened(db)
    assert [contests.window_state(contest, RULES, at) for at in (OPENS - timedelta(seconds=1), OPENS, CLOSES, AFTER)] \
        == ["not_open", "open", "open", "closed"]


def test_a_confirmation_link_names_contest_address_and_referrer_and_expires():
    token = contests.confirm_token("secret", CAMPAIGN, "Friend@example.org", 42, now=INSIDE)
    wanted = contests.Confirmation(CAMPAIGN, "Friend@example.org", 42)
    assert contests.confirmation_of("secret", token, now=INSIDE + contests.CONFIRM_MAX_AGE) == wanted
    with pytest.raises(contests.ConfirmationExpired) as expired:
        contests.confirmation_of("secret", token, now=INSIDE + contests.CONFIRM_MAX_AGE + timedelta(seconds=1))
    assert expired.value.confirmation == wanted and isinstance(expired.value, BadToken)
    for bad in (token[:-2] + "xx", contests.confirm_token("other", CAMPAIGN, "a@b.c", 42, now=INSIDE),
                contests.referral_token("secret", CAMPAIGN, 42), TokenSigner("secret").sign("contest", 42)):
        with pytest.raises(BadToken):
            contests.confirmation_of("secret", bad, now=INSIDE)
    assert contests.confirm_url("secret", "https://m.example.com", CAMPAIGN, "a@b.c", None, now=INSIDE).startswith(
        "https://m.example.com/c/confirm/")


def test_confirming_enters_once_credits_the_referrer_once_and_refuses_self_referral(db, people):
    opened(db)
    enter(db, people[0])
    confirmation = contests.Confirmation(CAMPAIGN, "New.Friend@example.org", people[0])
    for _ in range(2):
        with session_scope(db) as s:
            done = contests.confirm_entry(s, confirmation, rules=RULES, language="nl", newsletter=False, now=INSIDE)
    with Session(db) as s:
        friend = s.get(Contact, done.contact_id)
        assert (friend.email_key, friend.status, friend.language) == ("new.friend@example.org", "transactional", "nl")
    assert not done.entry.created and done.entry.referred_by == people[0]
    assert tickets(db, people[0]) == 1 + 2
    with session_scope(db) as s, pytest.raises(EntryRefused) as own:
        contests.confirm_entry(s, contests.Confirmation(CAMPAIGN, "USER1@example.com", people[1]), rules=RULES,
                               language=None, newsletter=False, now=INSIDE)
    assert own.value.reason == "self_referral"


def test_the_confirmation_mail_swaps_subject_and_template_and_keeps_the_variants_texts(settings):
    from engine.campaigns import load_campaign

    campaign = load_campaign(settings.campaigns_dir / f"{CAMPAIGN}.toml", settings=settings, segment_names=None,
                             today=None)
    mail = contests.confirmation_campaign(campaign, settings=settings)
    assert mail.id == campaign.id and mail.schedule is None and mail.section == campaign.section
    assert {v.template for v in mail.variants.values()} == {contests.CONFIRM_TEMPLATE}
    assert {v.subject for v in mail.variants.values()} == {"{{ t.confirm_subject }}"}
    assert mail.variant("benelux_dutch").section.headline == campaign.variant("benelux_dutch").section.headline
