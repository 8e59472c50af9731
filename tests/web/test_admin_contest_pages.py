"""Admin contest pages: entries with referrals (real addresses), commitment, draw refused before close, audit data after."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlmodel import Session

from engine import contests
from engine.campaigns import load_campaign
from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import Contest, ContestEntry
from engine.sending import ledger
from engine.web import create_app
from tests.support.data import add_contacts

from .factories import make_contact
from .logins import csrf_token, log_in, make_admin

UTC = timezone.utc
INVITED = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)
BEFORE_CLOSE = datetime(2027, 4, 27, 21, 0, tzinfo=UTC)
AFTER_DRAW_AT = datetime(2027, 4, 28, 10, 30, tzinfo=UTC)


@pytest.fixture
def opened(settings, db):
    """spring-contest opened (as its invitation does), with three entries: bob referred by anna."""
    campaign = load_campaign(settings.campaigns_dir / "spring-contest.toml", settings=settings, segment_names=None, today=None)
    with session_scope(db) as s:
        ledger.sync_campaign(s, campaign, now=INVITED)
        contests.open_contest(s, campaign.id, now=INVITED)
        anna, bob, carol = (make_contact(s, e) for e in ("anna@example.com", "bob@example.com", "<b>carol</b>@example.com"))
        s.add(ContestEntry(campaign_id=campaign.id, contact_id=anna.id, entered_at=INVITED))
        s.add(ContestEntry(campaign_id=campaign.id, contact_id=bob.id, referred_by=anna.id, entered_at=INVITED))
        s.add(ContestEntry(campaign_id=campaign.id, contact_id=carol.id, entered_at=INVITED))
    add_contacts(db, 1)  # a subscribed member, so the winners' mail can be checked before the draw


def _client(settings, db, at, *, role="admin"):
    client = create_app(settings=settings, engine=db, clock=FixedClock(at), testing=True).test_client()
    make_admin(db, f"{role}@example.com", role=role)
    assert log_in(client, f"{role}@example.com").status_code == 302
    return client


def test_the_pages_show_entries_referrals_and_the_commitment(settings, db, opened):
    client = _client(settings, db, BEFORE_CLOSE)
    listing = client.get("/admin/contests").text
    assert 'data-campaign="spring-contest"' in listing and 'href="/admin/contests"' in listing
    text = client.get("/admin/contests/spring-contest").text
    with Session(db) as s:
        row = s.get(Contest, "spring-contest")
    assert row.seed_hash in text and row.seed not in text  # the seed stays secret until the draw
    assert "anna@example.com" in text and "bob@example.com" in text  # real addresses for admins
    assert "&lt;b&gt;carol&lt;/b&gt;@example.com" in text and "<b>carol</b>" not in text
    assert "Draw now" in text
    assert client.get("/admin/contests/spring-sale").status_code == 404


def test_draw_is_refused_before_the_window_closes_and_works_after(settings, db, opened):
    early = _client(settings, db, BEFORE_CLOSE)
    token = csrf_token(early, "/admin/contests/spring-contest")
    response = early.post("/admin/contests/spring-contest/draw", data={"csrf_token": token})
    assert response.status_code == 302
    assert "Not drawn:" in early.get(response.headers["Location"]).text
    with Session(db) as s:
        assert s.get(Contest, "spring-contest").drawn_at is None
    late = create_app(settings=settings, engine=db, clock=FixedClock(AFTER_DRAW_AT), testing=True).test_client()
    assert log_in(late, "admin@example.com").status_code == 302
    token = csrf_token(late, "/admin/contests/spring-contest")
    response = late.post("/admin/contests/spring-contest/draw", data={"csrf_token": token})
    page = late.get(response.headers["Location"]).text
    assert "Drawn:" in page
    with Session(db) as s:
        row = s.get(Contest, "spring-contest")
    assert row.drawn_at is not None and row.seed in page and "verified" in page and "Draw now" not in page
    assert page.count('<li data-entry="') == len(row.winners) >= 1
    again = late.post("/admin/contests/spring-contest/draw", data={"csrf_token": token})
    assert "Not drawn:" in late.get(again.headers["Location"]).text


def test_a_viewer_cannot_draw_and_a_post_without_csrf_is_refused(settings, db, opened):
    viewer = _client(settings, db, AFTER_DRAW_AT, role="viewer")
    assert "Draw now" not in viewer.get("/admin/contests/spring-contest").text
    token = csrf_token(viewer, "/admin/contests/spring-contest")
    assert viewer.post("/admin/contests/spring-contest/draw", data={"csrf_token": token}).status_code == 403
    admin = _client(settings, db, AFTER_DRAW_AT)
    assert admin.post("/admin/contests/spring-contest/draw", data={}).status_code == 400
    with Session(db) as s:
        assert s.get(Contest, "spring-contest").drawn_at is None


def test_a_contest_never_sent_is_linked_and_its_page_shows_the_file(settings, db):
    client = _client(settings, db, BEFORE_CLOSE)
    listing = client.get("/admin/contests").text
    assert 'href="/admin/contests/spring-contest"' in listing and "not opened (no invitation sent yet)" in listing
    page = client.get("/admin/contests/spring-contest")
    assert page.status_code == 200
    text = page.text
    assert 'id="not-opened"' in text and "not_open" in text and "No entries yet." in text
    assert "Draw now" not in text and 'class="commitment"' not in text
    with Session(db) as s:
        assert s.get(Contest, "spring-contest") is None  # looking never opens the contest
    assert client.get("/admin/contests/spring-sale").status_code == 404  # a file of another kind
    assert client.get("/admin/contests/no-such-contest").status_code == 404
    assert client.get("/admin/contests/..%2Fconfig").status_code == 404
