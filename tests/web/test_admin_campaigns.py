"""Admin campaign pages: list with status and next occurrence, detail with results, previews, test sends and run control."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.db import session_scope
from engine.models import Delivery, Run
from tests.support.data import add_contacts

from .factories import T0, make_campaign, make_contact, make_delivery, make_run
from .logins import csrf_token, log_in, make_admin


@pytest.fixture
def members(db):
    """Two subscribed contacts: a Dutch speaker in NL and an English speaker in DE (two variants of eco-newsletter)."""
    add_contacts(db, 1)
    add_contacts(db, 1, start=1, country="DE", language="en")


@pytest.fixture
def sale_run(db):
    """A finished spring-sale run: two gold deliveries (one opened and clicked), one everyone delivery skipped."""
    with session_scope(db) as s:
        sale = make_campaign(s)
        run = make_run(s, sale, status="finished")
        a, b, c = (make_contact(s, e) for e in ("a@example.com", "b@example.com", "c@example.com"))
        make_delivery(s, run, a, status="sent", segment="gold", opened_at=T0, clicked_at=T0)
        make_delivery(s, run, b, status="failed", segment="gold")
        make_delivery(s, run, c, status="skipped", segment="everyone")
        return run.id


def _viewer(app, db):
    make_admin(db, "viewer@example.com", role="viewer")
    client = app.test_client()
    assert log_in(client, "viewer@example.com").status_code == 302
    return client


def test_the_list_shows_every_campaign_file_with_status_schedule_and_next_occurrence(admin_client, settings, sale_run):
    (settings.campaigns_dir / "broken.toml").write_text('name = "Broken"\nkind = "no_such_kind"\n')
    page = admin_client.get("/admin/campaigns")
    assert page.status_code == 200
    text = page.text
    for campaign_id in ("eco-newsletter", "loyalty-statement", "order-survey", "spring-contest", "spring-sale", "broken"):
        assert f'data-campaign="{campaign_id}"' in text
    assert 'href="/admin/campaigns"' in text  # the nav link
    row = _row(text, "loyalty-statement")
    # The monthly statement's cron (09:00 on the 1st, Amsterdam) fires next on 1 April, after the summer-time change.
    assert "cron 0 9 1 * *" in row and "2027-04-01 09:00 CEST" in row and "scheduled" in row
    assert "on each order + 1w" in _row(text, "order-survey")
    assert "scheduled" in _row(text, "spring-contest") and "2027-04-06 09:00" in _row(text, "spring-contest")
    sale = _row(text, "spring-sale")
    assert "finished" in sale and f"#{sale_run}" in sale and "sent 1" in sale and "failed 1" in sale
    broken = _row(text, "broken")
    assert "invalid" in broken and "broken.toml:" in broken


def test_the_detail_shows_results_per_segment_runs_and_sandboxed_previews(admin_client, sale_run, members):
    page = admin_client.get("/admin/campaigns/spring-sale")
    assert page.status_code == 200
    text = page.text
    gold = re.search(r'<tr data-segment="gold">.*?</tr>', text, re.S).group(0)
    assert all(f'data-status="{s}">{n}<' in gold for s, n in (("sent", 1), ("failed", 1), ("opened", 1), ("clicked", 1)))
    assert 'data-status="skipped">1<' in re.search(r'<tr data-segment="everyone">.*?</tr>', text, re.S).group(0)
    assert f'data-run="{sale_run}"' in text
    frames = re.findall(r"<iframe[^>]*>", text)
    assert len(frames) == 2  # gold and everyone
    for frame in frames:
        assert 'sandbox=""' in frame and "allow-scripts" not in frame and "allow-same-origin" not in frame
        srcdoc = re.search(r'srcdoc="([^"]*)"', frame).group(1)
        assert "<" not in srcdoc and "&lt;" in srcdoc  # escaped: the mail cannot end the attribute
        assert "<html" in html.unescape(srcdoc).lower()
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert admin_client.get("/admin/campaigns/no-such").status_code == 404
    assert admin_client.get("/admin/campaigns/segments").status_code == 404


def test_send_test_queues_one_message_per_variant_to_the_given_address_only(admin_client, db, members):
    token = csrf_token(admin_client, "/admin/campaigns/eco-newsletter")
    response = admin_client.post("/admin/campaigns/eco-newsletter/test", data={"csrf_token": token, "to": "qa@example.org"})
    assert response.status_code == 302
    with Session(db) as s:
        run = s.execute(select(Run).where(Run.is_test.is_(True))).scalars().one()
        deliveries = s.execute(select(Delivery).where(Delivery.run_id == run.id)).scalars().all()
        assert s.execute(select(Delivery).where(Delivery.run_id != run.id)).first() is None
    assert run.campaign_id == "eco-newsletter" and run.status == "sending"
    assert sorted(d.segment for d in deliveries) == ["benelux_dutch", "everyone"]
    assert {d.email for d in deliveries} == {"qa@example.org"} and {d.status for d in deliveries} == {"queued"}
    assert "queued: 2 message(s)" in admin_client.get(response.headers["Location"]).text
    bad = admin_client.post("/admin/campaigns/eco-newsletter/test", data={"csrf_token": token, "to": "not an address"})
    assert "Test not sent" in admin_client.get(bad.headers["Location"]).text


def test_cancel_skips_the_queued_deliveries_of_a_run(admin_client, db):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        make_delivery(s, run, make_contact(s, "a@example.com"), status="sent")
        make_delivery(s, run, make_contact(s, "b@example.com"))
        run_id = run.id
    token = csrf_token(admin_client, "/admin/campaigns/spring-sale")
    assert "Cancel run" in admin_client.get("/admin/campaigns/spring-sale").text
    assert 'id="cancel_run"' in admin_client.get(f"/admin/runs/{run_id}").text  # on the run's own page too
    response = admin_client.post(f"/admin/runs/{run_id}/cancel", data={"csrf_token": token, "back": "campaign"})
    assert response.headers["Location"].endswith("/admin/campaigns/spring-sale")
    with Session(db) as s:
        assert s.get(Run, run_id).status == "cancelled"
        assert sorted(d.status for d in s.execute(select(Delivery).where(Delivery.run_id == run_id)).scalars()) == ["sent", "skipped"]
    again = admin_client.post(f"/admin/runs/{run_id}/cancel", data={"csrf_token": token})
    assert "can be cancelled" in admin_client.get(again.headers["Location"]).text
    assert admin_client.post("/admin/runs/999999/cancel", data={"csrf_token": token}).status_code == 404


def test_a_viewer_sees_the_pages_but_every_post_is_refused_and_changes_nothing(app, db, members):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        make_delivery(s, run, make_contact(s, "b@example.com"))
        run_id = run.id
    viewer = _viewer(app, db)
    page = viewer.get("/admin/campaigns/spring-sale")
    assert page.status_code == 200 and "Cancel run" not in page.text and "Send a test" not in page.text
    token = csrf_token(viewer, "/admin/campaigns/spring-sale")
    for path in ("/admin/campaigns/eco-newsletter/test", f"/admin/runs/{run_id}/cancel",
                 f"/admin/runs/{run_id}/pause"):
        assert viewer.post(path, data={"csrf_token": token, "to": "qa@example.org"}).status_code == 403
    with Session(db) as s:
        assert s.get(Run, run_id).status == "sending"
        assert s.execute(select(Run).where(Run.is_test.is_(True))).first() is None
        assert s.execute(select(Delivery.status)).scalars().all() == ["queued"]


def test_posts_without_a_csrf_token_are_refused(admin_client, db, members):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        make_delivery(s, run, make_contact(s, "b@example.com"))
        run_id = run.id
    assert admin_client.post("/admin/campaigns/eco-newsletter/test", data={"to": "qa@example.org"}).status_code == 400
    assert admin_client.post(f"/admin/runs/{run_id}/cancel", data={"csrf_token": "forged"}).status_code == 400
    with Session(db) as s:
        assert s.get(Run, run_id).status == "sending"
        assert s.execute(select(Run).where(Run.is_test.is_(True))).first() is None


def _row(text: str, campaign_id: str) -> str:
    return re.search(rf'<tr data-campaign="{campaign_id}">.*?</tr>', text, re.S).group(0)
