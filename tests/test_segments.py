"""Segments from segments.toml, compiled to SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import re
import textwrap
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event, insert, literal, select
from sqlmodel import Session

from engine.cli import main
from engine.errors import CampaignError
from engine.db import utcnow_param
from engine.models import Campaign, Contact, ContactTag, Delivery, Order, Run, Suppression
from engine.segments import (
    SegmentRow, Segments, UnknownSegment, audience_summary, load_segments, membership_query, segment_report,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2027, 1, 1, 9, 0, tzinfo=timezone.utc)
_order_numbers = itertools.count(1)


# --- helpers ---------------------------------------------------------------------------------


def write_segments(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "segments.toml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def segments_from(tmp_path: Path, text: str) -> Segments:
    return load_segments(write_segments(tmp_path, text))


def add_contact(session: Session, email: str, *, tags=(), created_days_ago: float = 400, now: datetime = NOW,
                **fields) -> Contact:
    contact = Contact(email=email, email_key=email.lower(), created_at=now - timedelta(days=created_days_ago),
                      updated_at=now, **fields)
    session.add(contact)
    session.flush()
    for tag in tags:
        session.add(ContactTag(contact_id=contact.id, tag=tag))
    return contact


def add_order(session: Session, contact: Contact, *, days_ago: float, total: str, margin: float | None = None,
              status: str = "paid", now: datetime = NOW) -> None:
    session.add(Order(order_id=f"o-{next(_order_numbers)}", contact_id=contact.id,
                      placed_at=now - timedelta(days=days_ago), total_cents=int(Decimal(total) * 100),
                      currency="EUR", margin=margin, status=status, updated_at=now))


def suppress(session: Session, email: str) -> None:
    session.add(Suppression(email_key=email.lower(), reason="hard_bounce", created_at=NOW))


@pytest.fixture
def people(db):
    """A small audience with one contact per interesting case; returns {name: contact id}."""
    with Session(db) as session:
        ann = add_contact(session, "Ann@Example.com", country="NL", language="nl", tags=["VIP", "tea"],
                          attributes={"plan": "pro", "account_type": "business", "employees": 10})
        add_order(session, ann, days_ago=200, total="600.00", margin=1.0)

        bob = add_contact(session, "bob@example.com", country="be", language="FR", tags=["coffee"],
                          attributes={"plan": "free"}, created_days_ago=10)
        add_order(session, bob, days_ago=5, total="100.00", margin=0.3)

        cem = add_contact(session, "cem@example.com", country="NO", language="nb", created_days_ago=100)

        dee = add_contact(session, "dee@example.com", country="SE", language="sv", tags=["vip", "coffee"],
                          attributes={"plan": "enterprise", "account_type": "business"}, created_days_ago=800)
        for days in (80, 50, 20):
            add_order(session, dee, days_ago=days, total="100.00", margin=0.5)
        add_order(session, dee, days_ago=30, total="1000.00", margin=0.5, status="returned")

        eve = add_contact(session, "eve@example.com", country="NL", language="nl", tags=["vip"],
                          status="unsubscribed", attributes={"plan": "pro"})
        add_order(session, eve, days_ago=20, total="5000.00")

        fay = add_contact(session, "fay@example.com", country="NL", language="nl", tags=["vip"],
                          attributes={"plan": "pro"})
        add_order(session, fay, days_ago=20, total="5000.00")
        suppress(session, "FAY@example.com")

        gus = add_contact(session, "gus@example.com", attributes={"employees": "10"}, created_days_ago=50)
        session.commit()
        return {c.email.split("@")[0].lower(): c.id for c in (ann, bob, cem, dee, eve, fay, gus)}


def members(db, segments: Segments, names: list[str], settings, **kwargs) -> list[tuple[int, str, str]]:
    with Session(db) as session:
        query = membership_query(segments, names, now=NOW, settings=settings, **kwargs)
        return [tuple(row) for row in session.execute(query)]


def names_in(db, tmp_path, rules: str, settings) -> set[str]:
    segments = segments_from(tmp_path, f"[picked]\n{rules}\n")
    return {email.split("@")[0].lower() for _, email, _ in members(db, segments, ["picked"], settings)}


# --- loading ---------------------------------------------------------------------------------


def test_the_shipped_segments_file_loads():
    segments = load_segments(ROOT / "campaigns" / "segments.toml")
    assert list(segments)[:3] == ["gold", "silver", "bronze"]
    for name in ("vip", "b2b", "benelux_dutch", "nordics", "lapsed", "new_customers", "everyone"):
        assert name in segments
    assert segments["benelux_dutch"].rules.country == ["NL", "BE"]
    assert segments["lapsed"].rules.orders_min == 1
    assert segments["everyone"].rules.rule_names() == []


def test_unknown_segment_is_a_key_error_naming_the_defined_ones(tmp_path):
    segments = segments_from(tmp_path, "[gold]\nltv_min = 500\n[everyone]\n")
    with pytest.raises(KeyError) as caught:
        segments.require("platinum")
    assert isinstance(caught.value, UnknownSegment)
    assert str(caught.value) == "unknown segment 'platinum' (segments.toml defines: gold, everyone)"
    with pytest.raises(UnknownSegment):
        segments["platinum"]


@pytest.mark.parametrize(("text", "expected"), [
    ("[gold]\nltv_min = 500\nltv_mn = 5\n", "segments.toml:3: unknown key 'gold.ltv_mn'"),
    ("[a]\n\n[gold]\n# comment\nltv_min = \"500\"\n", "segments.toml:5: 'gold.ltv_min': Input should be a valid number"),
    ("[nl]\ncountry = [\"NL\", \"XX\"]\n", "segments.toml:2: 'nl.country': unknown country code 'XX'"),
    ("[nl]\ncountry = 31\n", "segments.toml:2: 'nl.country': must be a country code or a list of them"),
    ("[nl]\nlanguage = \"dutch\"\n", "segments.toml:2: 'nl.language': unknown language code 'dutch'"),
    ("[gold]\nltv_min = 500\nltv_max = 100\n", "segments.toml:2: 'gold.ltv_min': is greater than ltv_max"),
    ("[x]\norders_min = 1.5\n", "segments.toml:2: 'x.orders_min': Input should be a valid integer"),
    ("[x]\norders_min = -1\n", "segments.toml:2: 'x.orders_min': Input should be greater than or equal to 0"),
    ("[x]\ntags_any = \"vip\"\n", "segments.toml:2: 'x.tags_any': must be a list of tags"),
    ("[x]\ntags = [\"a\"]\ntags_any = [\"b\"]\n", "segments.toml:2: 'x.tags': 'tags' means tags_any"),
    ("[x]\ntags_all = [\"vip\"]\ntags_none = [\"VIP\"]\n", "segments.toml:3: 'x.tags_none': excludes tags"),
    ("[x]\nattributes = { plan = true }\n", "segments.toml:2: 'x.attributes': attribute 'plan' must be a string"),
    ("[x]\n\n[x.attributes]\nplan = 1.5\n", "segments.toml:3: 'x.attributes': attribute 'plan' must be a string"),
    ("[Gold]\n", "segments.toml:1: segment name 'Gold' may only contain"),
    ("gold = 500\n", "segments.toml:1: 'gold' must be a table"),
    ("[gold]\nltv_min = 500\n[silver\n", "segments.toml:3: invalid TOML"),
    ("[gold]\nltv_min = 500\n[gold]\n", "segments.toml:3: invalid TOML"),
])
def test_loader_errors_name_file_and_line(tmp_path, text, expected):
    path = write_segments(tmp_path, text)
    with pytest.raises(CampaignError) as caught:
        load_segments(path)
    message = str(caught.value)
    assert message.startswith(str(tmp_path) + "/"), message
    assert expected in message, message


def test_every_problem_in_the_file_is_reported(tmp_path):
    path = write_segments(tmp_path, """
        [gold]
        ltv_min = 500
        ltv_mn = 5

        [nl]
        country = "XX"

        [fine]
        orders_min = 1
    """)
    with pytest.raises(CampaignError) as caught:
        load_segments(path)
    assert [(p.line, p.message.split(":")[0]) for p in caught.value.problems] == [
        (3, "unknown key 'gold.ltv_mn'"), (6, "'nl.country'"),
    ]


# --- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "expected"), [
    ("", {"ann", "bob", "cem", "dee", "gus"}),
    ('country = "nl"', {"ann"}),
    ('country = ["NL", "BE"]', {"ann", "bob"}),
    ('language = "NL"', {"ann"}),
    ('language = ["nl", "fr"]', {"ann", "bob"}),
    ('country = ["NL", "BE"]\nlanguage = "nl"', {"ann"}),
    ('tags = ["vip"]', {"ann", "dee"}),
    ('tags_any = ["tea", "Coffee"]', {"ann", "bob", "dee"}),
    ('tags_all = ["vip", "coffee"]', {"dee"}),
    ('tags_none = ["vip"]', {"bob", "cem", "gus"}),
    ("ltv_min = 150", {"ann", "dee"}),  # dee: 3 × 100 × 0.5; the returned order does not count
    ("ltv_min = 150.01", {"ann"}),
    ("ltv_max = 30", {"bob", "cem", "gus"}),
    ("ltv_min = 30\nltv_max = 150", {"bob", "dee"}),
    ("orders_min = 1", {"ann", "bob", "dee"}),
    ("orders_max = 0", {"cem", "gus"}),
    ("orders_min = 3\norders_max = 3", {"dee"}),
    ("spend_min = 300", {"ann", "dee"}),
    ("spend_max = 100", {"bob", "cem", "gus"}),
    ("spend_min = 100.01", {"ann", "dee"}),
    ("last_order_days_min = 180", {"ann"}),
    ("last_order_days_max = 30", {"bob", "dee"}),
    ("created_days_max = 60", {"bob", "gus"}),
    ("created_days_min = 365", {"ann", "dee"}),
    ('attributes = { plan = "pro" }', {"ann"}),
    ('attributes = { plan = ["pro", "enterprise"] }', {"ann", "dee"}),
    ('attributes = { account_type = "business", plan = "enterprise" }', {"dee"}),
    ("attributes = { employees = 10 }", {"ann", "gus"}),  # stored as number and as text
    ('attributes = { missing = "x" }', set()),
    ('description = "only words"', {"ann", "bob", "cem", "dee", "gus"}),
])
def test_rules(db, people, tmp_path, settings, rules, expected):
    assert names_in(db, tmp_path, rules, settings) == expected


def test_unsubscribed_and_suppressed_contacts_are_never_members(db, people, tmp_path, settings):
    segments = segments_from(tmp_path, '[nl]\ncountry = "NL"\n[rich]\nltv_min = 1000\n[everyone]\n')
    rows = members(db, segments, ["nl", "rich", "everyone"], settings)
    ids = {contact_id for contact_id, _, _ in rows}
    assert people["eve"] not in ids and people["fay"] not in ids
    assert len(ids) == 5


def test_first_listed_segment_wins(db, people, tmp_path, settings):
    segments = segments_from(tmp_path, """
        [vip]
        tags = ["vip"]
        [gold]
        ltv_min = 150
        [everyone]
    """)
    by_gold_first = {cid: seg for cid, _, seg in members(db, segments, ["gold", "vip", "everyone"], settings)}
    assert by_gold_first == {people["ann"]: "gold", people["dee"]: "gold", people["bob"]: "everyone",
                             people["cem"]: "everyone", people["gus"]: "everyone"}
    by_vip_first = {cid: seg for cid, _, seg in members(db, segments, ["vip", "gold"], settings)}
    assert by_vip_first == {people["ann"]: "vip", people["dee"]: "vip"}  # matching none: left out


def test_rows_are_contact_id_email_segment_by_id(db, people, tmp_path, settings):
    segments = segments_from(tmp_path, "[everyone]\n")
    with Session(db) as session:
        result = session.execute(membership_query(segments, ["everyone"], now=NOW, settings=settings))
        assert list(result.keys()) == ["contact_id", "email", "segment"]
        rows = result.all()
    assert [r.contact_id for r in rows] == sorted(r.contact_id for r in rows)
    assert rows[0].email == "Ann@Example.com" and rows[0].segment == "everyone"


def test_unknown_name_in_membership_query(tmp_path, settings):
    segments = segments_from(tmp_path, "[everyone]\n")
    with pytest.raises(UnknownSegment):
        membership_query(segments, ["everyone", "gold"], now=NOW, settings=settings)


def test_no_names_means_no_members(db, people, tmp_path, settings):
    assert members(db, segments_from(tmp_path, "[everyone]\n"), [], settings) == []


# --- batches and scale -----------------------------------------------------------------------


def _crowd(db, count: int) -> None:
    with Session(db) as session:
        for n in range(count):
            contact = add_contact(session, f"p{n}@example.com", country=("NL", "DE", "BE")[n % 3],
                                  status="unsubscribed" if n % 7 == 0 else "subscribed")
            if n % 2:
                add_order(session, contact, days_ago=n % 300 + 1, total=f"{n % 50 + 1}.00", margin=0.5)
            if n % 11 == 0:
                suppress(session, contact.email)
        session.commit()


def test_keyset_batches_cover_every_member_exactly_once(db, tmp_path, settings):
    _crowd(db, 60)
    segments = segments_from(tmp_path, '[buyers]\norders_min = 1\nltv_min = 5\n[nl]\ncountry = "NL"\n')
    names = ["buyers", "nl"]
    everything = members(db, segments, names, settings)
    batches, after = [], 0
    while True:
        batch = members(db, segments, names, settings, after_id=after, limit=7)
        if not batch:
            break
        assert len(batch) <= 7
        batches.append(batch)
        after = batch[-1][0]
    assert [row for batch in batches for row in batch] == everything
    assert all(len(batch) == 7 for batch in batches[:-1])
    assert len({row[0] for row in everything}) == len(everything) > 10


@pytest.mark.parametrize("query", ["membership", "batch", "report"])
def test_statement_count_does_not_grow_with_contacts(db, tmp_path, settings, query):
    segments = segments_from(tmp_path, """
        [gold]
        ltv_min = 20
        [vip]
        tags_any = ["vip"]
        [b2b]
        attributes = { plan = "pro" }
        [nl]
        country = "NL"
        [everyone]
    """)

    def run() -> int:
        statements: list[str] = []

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db, "before_cursor_execute", count)
        try:
            with Session(db) as session:
                if query in ("membership", "batch"):
                    limit = 1000 if query == "batch" else None
                    session.execute(membership_query(segments, list(segments), now=NOW, settings=settings,
                                                     limit=limit)).all()
                else:
                    segment_report(session, segments, now=NOW, settings=settings)
        finally:
            event.remove(db, "before_cursor_execute", count)
        return len([s for s in statements if s.lstrip().upper().startswith("SELECT")])

    _crowd(db, 10)
    small = run()
    with Session(db) as session:
        for n in range(190):
            contact = add_contact(session, f"q{n}@example.com", tags=["vip"] if n % 5 == 0 else [])
            add_order(session, contact, days_ago=3, total="40.00")
        session.commit()
    assert small == run() == 1


def test_membership_query_feeds_an_insert_select(db, people, tmp_path, settings):
    # How the delivery ledger is filled: INSERT ... SELECT over one batch, next to the
    # caller's own `now_utc` parameter, which must not leak into the segment conditions.
    segments = segments_from(tmp_path, "[lapsed]\norders_min = 1\nlast_order_days_min = 180\n[everyone]\n")
    later = NOW + timedelta(days=400)
    with Session(db) as session:
        session.add(Campaign(id="spring", name="Spring", kind="seasonal_discount", source_hash="x", synced_at=NOW))
        run = Run(campaign_id="spring", occurrence_at=NOW, created_at=NOW, status="populating")
        session.add(run)
        session.flush()
        batch = membership_query(segments, ["lapsed", "everyone"], now=NOW, settings=settings,
                                 after_id=people["ann"], limit=3).subquery()
        stamp = utcnow_param(later)
        rows = select(literal(run.id), batch.c.contact_id, batch.c.email, batch.c.segment, literal("queued"),
                      literal(0), stamp, stamp)
        session.execute(insert(Delivery).from_select(
            ["run_id", "contact_id", "email", "segment", "status", "attempts", "created_at", "updated_at"], rows))
        session.commit()
        stored = session.execute(select(Delivery.contact_id, Delivery.segment, Delivery.created_at)
                                 .order_by(Delivery.contact_id)).all()
    # Measured from `later`, bob (5 days) and dee (20 days) would both have lapsed.
    assert [(cid, seg) for cid, seg, _ in stored] == [(people["bob"], "everyone"), (people["cem"], "everyone"),
                                                     (people["dee"], "everyone")]
    assert {created_at for _, _, created_at in stored} == {later}


# --- report ----------------------------------------------------------------------------------


def test_segment_report_counts_each_segment_independently(db, people, tmp_path, settings):
    segments = segments_from(tmp_path, """
        [gold]
        ltv_min = 150
        [vip]
        tags = ["vip"]
        [nobody]
        country = "JP"
        [everyone]
    """)
    with Session(db) as session:
        rows = segment_report(session, segments, now=NOW, settings=settings)
        total = audience_summary(session, now=NOW, settings=settings)
    # ann 600.00, bob 30.00, dee 150.00, cem and gus 0; eve unsubscribed, fay suppressed
    assert rows == [
        SegmentRow("gold", 2, Decimal("375.00"), Decimal("750.00")),
        SegmentRow("vip", 2, Decimal("375.00"), Decimal("750.00")),
        SegmentRow("nobody", 0, None, Decimal("0.00")),
        SegmentRow("everyone", 5, Decimal("156.00"), Decimal("780.00")),
    ]
    assert total == SegmentRow("subscribed", 5, Decimal("156.00"), Decimal("780.00"))


# --- command line ----------------------------------------------------------------------------


@pytest.mark.usefixtures("system_clock")
def test_cli_prints_each_segment_with_ltv(db, settings):
    now = datetime.now(timezone.utc)  # the command runs on the system clock
    with Session(db) as session:
        big = add_contact(session, "big@example.com", now=now, country="NL", language="nl")
        add_order(session, big, days_ago=400, total="1000.00", margin=0.6, now=now)
        mid = add_contact(session, "mid@example.com", now=now, country="SE", tags=["vip"])
        add_order(session, mid, days_ago=10, total="500.00", margin=0.4, now=now)
        add_contact(session, "new@example.com", now=now, created_days_ago=1)
        session.commit()

    result = CliRunner().invoke(main, ["--config", str(settings.source), "segments"])
    assert result.exit_code == 0, result.output
    cells = [[cell.strip() for cell in line.strip().strip("│").split("│")]
             for line in result.stdout.splitlines() if line.startswith("│")]
    lines = {row[0]: row[1:] for row in cells}
    assert lines["gold"] == ["1", "600.00 EUR", "600.00 EUR"]
    assert lines["silver"] == ["1", "200.00 EUR", "200.00 EUR"]
    assert lines["bronze"] == ["0", "–", "0.00 EUR"]
    assert lines["vip"] == ["1", "200.00 EUR", "200.00 EUR"]
    assert lines["benelux_dutch"] == ["1", "600.00 EUR", "600.00 EUR"]
    assert lines["nordics"] == ["1", "200.00 EUR", "200.00 EUR"]
    assert lines["lapsed"] == ["1", "600.00 EUR", "600.00 EUR"]
    assert lines["new_customers"] == ["1", "200.00 EUR", "200.00 EUR"]
    assert lines["everyone"] == ["3", "266.67 EUR", "800.00 EUR"]
    assert lines["all subscribed"] == ["3", "266.67 EUR", "800.00 EUR"]


def test_cli_reports_segment_file_errors_with_line(db, settings):
    (settings.campaigns_dir / "segments.toml").write_text("[gold]\nltv_min = 500\nltv_mx = 1\n")
    result = CliRunner().invoke(main, ["--config", str(settings.source), "segments"])
    assert result.exit_code == 1
    assert re.search(r"segments\.toml:3: unknown key 'gold\.ltv_mx'", result.stderr), result.stderr
