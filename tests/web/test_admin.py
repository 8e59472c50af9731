"""The admin runs list and run detail pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event

from engine.db import session_scope
from engine.web import admin

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

ROW_ID = re.compile(r'<tr id="d(\d+)">')


def _ids(html: str) -> list[int]:
    return [int(i) for i in ROW_ID.findall(html)]


def _next_link(html: str) -> str | None:
    m = re.search(r'<a rel="next" href="([^"]+)"', html)
    return m.group(1).replace("&amp;", "&") if m else None


def _walk(client, url: str) -> tuple[list[int], int]:
    """Follow "next" links from `url`; returns every row id seen and the number of pages."""
    seen: list[int] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += _ids(response.text)
        pages += 1
        url = _next_link(response.text)
    return seen, pages


@pytest.fixture
def client(admin_client):
    """Every page here is seen logged in as an admin (tests/web/test_auth.py covers the anonymous side)."""
    return admin_client


@pytest.fixture
def big_run(db):
    """Run A with 250 deliveries in every status, interleaved by id with run B's 50."""
    statuses = ["queued", "claimed", "sent", "sent", "failed", "skipped"]
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run_a = make_run(s, campaign, total=250)
        run_b = make_run(s, campaign, occurrence_at=T0 + timedelta(days=1))
        expected: dict[str, list[int]] = {}
        for i in range(250):
            contact = make_contact(s, f"user{i:03d}@{'shop' if i % 2 else 'mail'}.example")
            status = statuses[i % len(statuses)]
            expected.setdefault(status, []).append(make_delivery(s, run_a, contact, status=status).id)
            if i % 5 == 0:
                make_delivery(s, run_b, contact)
        return run_a.id, expected


def test_root_and_admin_index_redirect_to_runs(client):
    for path in ("/", "/admin/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].endswith("/admin/runs")


def test_runs_page_lists_runs_newest_first_with_counts(client, db):
    with session_scope(db) as s:
        campaign = make_campaign(s, "loyalty", "Loyalty statement")
        old = make_run(s, campaign, status="finished", total=3)
        new = make_run(s, campaign, occurrence_at=T0 + timedelta(days=30), status="paused",
                       pause_reason="25 consecutive failures", total=4)
        contacts = [make_contact(s, f"c{i}@example.com") for i in range(4)]
        for c, status in zip(contacts, ["sent", "sent", "failed"]):
            make_delivery(s, old, c, status=status)
        for c, status in zip(contacts, ["sent", "queued", "queued", "skipped"]):
            make_delivery(s, new, c, status=status)
        old_id, new_id = old.id, new.id
    html = client.get("/admin/runs").text
    assert html.index(f"#{new_id}<") < html.index(f"#{old_id}<")
    assert "Loyalty statement" in html and "loyalty" in html
    assert "25 consecutive failures" in html
    # 09:00 CET in the configured Europe/Amsterdam, not the stored 08:00 UTC.
    assert "2027-03-20 09:00 CET" in html
    new_row = html[html.index(f"#{new_id}<"):html.index(f"#{old_id}<")]
    assert 'data-status="queued">2<' in new_row and 'data-status="sent">1<' in new_row
    assert 'data-status="skipped">1<' in new_row and 'data-status="failed">0<' in new_row
    assert "50%" in new_row  # sent + skipped of 4
    old_row = html[html.index(f"#{old_id}<"):]
    assert 'data-status="sent">2<' in old_row and 'data-status="failed">1<' in old_row
    assert "100%" in old_row


def test_runs_page_counts_with_one_grouped_query(client, db, app):
    with session_scope(db) as s:
        campaign = make_campaign(s)
        contact = make_contact(s, "one@example.com")
        for day in range(12):
            make_delivery(s, make_run(s, campaign, occurrence_at=T0 + timedelta(days=day)), contact)
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db, "before_cursor_execute", record)
    try:
        assert client.get("/admin/runs").status_code == 200
    finally:
        event.remove(db, "before_cursor_execute", record)
    logins = [s for s in statements if "admin_users" in s]
    assert len(logins) == 1  # the session's account, checked once per request
    statements = [s for s in statements if s not in logins]
    # The runs, then one GROUP BY for every run on the page, then the count of uncertain deliveries.
    assert len(statements) == 3
    assert "GROUP BY" in statements[1].upper()
    assert "COUNT(*)" in statements[2].upper() and "FROM DELIVERIES" in statements[2].upper()


def test_runs_page_keyset_pagination(client, db, monkeypatch):
    monkeypatch.setattr(admin, "RUNS_PER_PAGE", 2)
    with session_scope(db) as s:
        campaign = make_campaign(s)
        ids = [make_run(s, campaign, occurrence_at=T0 + timedelta(days=d)).id for d in (3, 1, 4, 0, 2)]
    seen: list[int] = []
    url, pages = "/admin/runs", 0
    while url:
        html = client.get(url).text
        seen += [int(i) for i in re.findall(r"#(\d+)</a>", html)]
        pages += 1
        url = _next_link(html)
    by_occurrence_desc = [ids[2], ids[0], ids[4], ids[1], ids[3]]
    assert seen == by_occurrence_desc
    assert pages == 3


def test_run_detail_pages_cover_every_delivery_exactly_once(client, big_run):
    run_id, expected = big_run
    seen, pages = _walk(client, f"/admin/runs/{run_id}")
    everything = sorted(i for ids in expected.values() for i in ids)
    assert seen == everything  # ascending, no duplicates, nothing missing, nothing from run B
    assert pages == 3


def test_run_detail_status_filter(client, big_run):
    run_id, expected = big_run
    seen, _ = _walk(client, f"/admin/runs/{run_id}?status=sent")
    assert seen == expected["sent"]
    assert len(seen) > 50
    seen, _ = _walk(client, f"/admin/runs/{run_id}?status=failed")
    assert seen == expected["failed"]


def test_run_detail_filter_by_status_absent_from_run(client, db):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        make_delivery(s, run, make_contact(s, "a@example.com"), status="sent")
        run_id = run.id
    response = client.get(f"/admin/runs/{run_id}?status=failed")
    assert response.status_code == 200
    assert _ids(response.text) == []


def test_run_detail_email_filter(client, db, big_run):
    run_id, expected = big_run
    seen, _ = _walk(client, f"/admin/runs/{run_id}?q=SHOP.example")
    everything = sorted(i for ids in expected.values() for i in ids)
    assert seen == everything[1::2]  # odd-numbered users are on shop.example
    # user007 is the 8th delivery: status "claimed" in the cycle.
    assert _walk(client, f"/admin/runs/{run_id}?q=user007@&status=claimed")[0] == [expected["claimed"][1]]
    assert _walk(client, f"/admin/runs/{run_id}?q=user007@&status=sent")[0] == []
    html = client.get(f"/admin/runs/{run_id}?q=user007@").text
    assert "user007@shop.example" in html and len(_ids(html)) == 1
    # LIKE wildcards are taken literally.
    assert _ids(client.get(f"/admin/runs/{run_id}?q=user_07").text) == []
    assert _ids(client.get(f"/admin/runs/{run_id}?q=%25").text) == []


def test_run_detail_header(client, db):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s, "spring", "Spring sale"), status="paused",
                       pause_reason="provider rejected credentials", total=2)
        make_delivery(s, run, make_contact(s, "a@example.com"), status="sent", attempts=1,
                      message_id="<m1@example.com>", provider_message_id="pm-1",
                      sent_at=T0 + timedelta(minutes=5))
        make_delivery(s, run, make_contact(s, "b@example.com"), status="failed", attempts=5,
                      last_error="550 mailbox unavailable")
        run_id = run.id
    html = client.get(f"/admin/runs/{run_id}").text
    for text in ("Spring sale", "paused", "provider rejected credentials", "&lt;m1@example.com&gt;", "pm-1",
                 "550 mailbox unavailable", "2027-03-20 09:05 CET", "100%"):
        assert text in html
    assert "admin@example.com" in html and "Log out" in html  # who is logged in, and the way out


def test_hostile_data_is_escaped(client, db):
    payload = "<script>alert(1)</script>"
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s, "evil", f"Campaign {payload}"), pause_reason=f"paused {payload}")
        contact = make_contact(s, f'"{payload}"@example.com')
        make_delivery(s, run, contact, segment=f"seg{payload}", last_error=f'<img src=x onerror="alert(2)">',
                      message_id=payload, provider_message_id=payload)
        run_id = run.id
    for url in ("/admin/runs", f"/admin/runs/{run_id}", f"/admin/runs/{run_id}?q=<script>"):
        html = client.get(url).text
        assert "<script>" not in html
        assert "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    html = client.get(f"/admin/runs/{run_id}?q=<script>").text
    assert len(_ids(html)) == 1


@pytest.mark.parametrize("query", ["after=abc", "after=-1", "after=1e3", "after=²", "status=bogus",
                                   "after=" + "9" * 40])
def test_run_detail_bad_parameters_are_a_400_page(client, db, query):
    with session_scope(db) as s:
        run_id = make_run(s, make_campaign(s)).id
    response = client.get(f"/admin/runs/{run_id}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Traceback" not in response.text


def test_unknown_run_is_a_404_page(client, db):
    response = client.get("/admin/runs/424242")
    assert response.status_code == 404
    assert "Not found" in response.text
    assert client.get("/admin/runs?before=424242").status_code == 400
