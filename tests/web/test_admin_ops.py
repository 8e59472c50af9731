"""Admin pages for what providers report: uncertain deliveries (resend, accept) and the webhook log."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.db import session_scope
from engine.models import Delivery, Run, WebhookLog
from engine.web import admin_ops

from .factories import T0, make_campaign, make_contact, make_delivery, make_run
from .logins import csrf_token, log_in, make_admin

HOSTILE_ADDRESS = 'x"<script>alert(1)</script>@example.com'
HOSTILE_REASON = "<img src=x onerror=alert(2)> no reply after the end of the message"
_ROW = re.compile(r'<tr id="d(\d+)">')
_WEBHOOK_ROW = re.compile(r'<tr id="w(\d+)">')


def logged_in(app, db, email: str, role: str):
    make_admin(db, email, role=role)
    client = app.test_client()
    assert log_in(client, email).status_code == 302
    return client


def state(db, delivery_id: int) -> tuple[str, str]:
    """The delivery's status and its run's status."""
    with Session(db) as s:
        delivery = s.get(Delivery, delivery_id)
        return delivery.status, s.get(Run, delivery.run_id).status


@pytest.fixture
def ledger(db):
    """A finished run with three uncertain deliveries (one to a hostile address) and one sent; a cancelled
    run with one uncertain delivery. Their ids by name."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run = make_run(s, campaign, status="finished")
        ids = {}
        for name in ("anna@example.com", "ben@example.com", HOSTILE_ADDRESS):
            ids[name] = make_delivery(s, run, make_contact(s, name), status="uncertain", provider="smtp",
                                      sent_at=T0, last_error=HOSTILE_REASON if name == HOSTILE_ADDRESS
                                      else "no reply after the end of the message").id
        ids["sent"] = make_delivery(s, run, make_contact(s, "sent@example.com"), status="sent", sent_at=T0).id
        cancelled = make_run(s, campaign, status="cancelled", occurrence_at=T0 + timedelta(days=1))
        ids["cancelled"] = make_delivery(s, cancelled, make_contact(s, "cara@example.com"), status="uncertain",
                                         provider="smtp", sent_at=T0, last_error="timeout").id
        ids["run"] = run.id
    return ids


def post(client, path: str, **form):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/uncertain"), **form})


# -- uncertain deliveries ---------------------------------------------------------------------------

def test_the_list_shows_uncertain_deliveries_newest_first_with_their_links(admin_client, ledger):
    page = admin_client.get("/admin/uncertain")
    assert page.status_code == 200
    listed = [int(i) for i in _ROW.findall(page.text)]
    uncertain = [ledger["anna@example.com"], ledger["ben@example.com"], ledger[HOSTILE_ADDRESS], ledger["cancelled"]]
    assert listed == sorted(uncertain, reverse=True)  # the sent one is not there
    anna = ledger["anna@example.com"]
    assert f'href="/admin/deliveries/{anna}"' in page.text
    assert f'href="/admin/runs/{ledger["run"]}"' in page.text
    row = page.text.split(f'<tr id="d{anna}">')[1].split("</tr>")[0]
    assert "anna@example.com" in row and "spring-sale" in row and "smtp" in row
    assert "2027-03-20 09:00 CET" in row and "no reply after the end of the message" in row
    assert "Resend…" in row and "Accept as sent" in row and 'name="csrf_token"' in row


def test_hostile_addresses_and_reasons_are_shown_escaped(admin_client, ledger):
    for path in ("/admin/uncertain", None):
        if path is None:  # the confirmation page shows them too
            page = post(admin_client, "/admin/uncertain/resend", id=str(ledger[HOSTILE_ADDRESS]))
        else:
            page = admin_client.get(path)
        assert page.status_code == 200
        assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
        assert "x&#34;&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in page.text
        assert "&lt;img src=x onerror=alert(2)&gt;" in page.text


def test_the_list_pages_by_keyset(admin_client, db, ledger, monkeypatch):
    monkeypatch.setattr(admin_ops, "UNCERTAIN_PER_PAGE", 3)
    with session_scope(db) as s:
        run = s.get(Run, ledger["run"])
        extra = [make_delivery(s, run, make_contact(s, f"late{n}@example.com"), status="uncertain").id
                 for n in range(3)]
    expected = sorted([ledger["anna@example.com"], ledger["ben@example.com"], ledger[HOSTILE_ADDRESS],
                       ledger["cancelled"], *extra], reverse=True)
    seen, path = [], "/admin/uncertain"
    for _ in range(5):
        page = admin_client.get(path)
        rows = [int(i) for i in _ROW.findall(page.text)]
        assert 1 <= len(rows) <= 3
        seen += rows
        older = re.search(r'<a rel="next" href="([^"]+)">', page.text)
        if older is None:
            break
        path = older.group(1).replace("&amp;", "&")
        assert path == f"/admin/uncertain?before={rows[-1]}"
    assert seen == expected  # every row once, in order, over three pages
    assert "Newest" in page.text
    assert admin_client.get("/admin/uncertain?before=x").status_code == 400


def test_resend_asks_first_then_requeues_and_reopens_the_run(admin_client, db, ledger):
    anna, ben = ledger["anna@example.com"], ledger["ben@example.com"]
    page = post(admin_client, "/admin/uncertain/resend", id=[str(anna), str(ben)])
    assert page.status_code == 200 and "Resend 2 uncertain deliveries?" in page.text
    assert "The recipient may get the mail twice." in page.text
    assert [int(i) for i in _ROW.findall(page.text)] == [anna, ben]
    assert 'name="confirm" value="yes"' in page.text and page.text.count('type="hidden" name="id"') == 2
    assert state(db, anna) == ("uncertain", "finished")  # nothing changes before the confirmation

    response = post(admin_client, "/admin/uncertain/resend", id=[str(anna), str(ben)], confirm="yes")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/uncertain"
    assert state(db, anna) == ("queued", "sending") and state(db, ben) == ("queued", "sending")
    with Session(db) as s:
        row = s.get(Delivery, anna)
        assert row.sent_at is None and row.next_attempt_at is None
    assert state(db, ledger[HOSTILE_ADDRESS]) == ("uncertain", "sending")  # not chosen
    page = admin_client.get("/admin/uncertain")
    assert "Requeued 2 uncertain deliveries; their recipients may get the mail twice." in page.text
    assert [int(i) for i in _ROW.findall(page.text)] == sorted([ledger[HOSTILE_ADDRESS], ledger["cancelled"]],
                                                               reverse=True)


def test_resend_leaves_rows_of_a_cancelled_run_and_says_so(admin_client, db, ledger):
    cancelled, ben = ledger["cancelled"], ledger["ben@example.com"]
    response = post(admin_client, "/admin/uncertain/resend", id=[str(cancelled), str(ben)], confirm="yes")
    assert response.status_code == 302
    assert state(db, cancelled) == ("uncertain", "cancelled") and state(db, ben)[0] == "queued"
    text = admin_client.get("/admin/uncertain").text
    assert "Requeued 1 uncertain deliveries" in text and "1 of the chosen were not uncertain any more" in text


def test_accept_marks_sent_per_row_and_for_a_selection(admin_client, db, ledger):
    anna, ben, hostile = ledger["anna@example.com"], ledger["ben@example.com"], ledger[HOSTILE_ADDRESS]
    assert post(admin_client, "/admin/uncertain/accept", id=str(anna)).status_code == 302
    assert state(db, anna) == ("sent", "finished") and state(db, ben)[0] == "uncertain"
    assert "Marked 1 uncertain deliveries sent." in admin_client.get("/admin/uncertain").text

    # A selection, naming one already decided: it stays sent and the message counts it out.
    assert post(admin_client, "/admin/uncertain/accept", id=[str(ben), str(hostile), str(anna)]).status_code == 302
    assert [state(db, i)[0] for i in (anna, ben, hostile)] == ["sent", "sent", "sent"]
    with Session(db) as s:
        assert s.get(Delivery, ben).last_error == "no reply after the end of the message"  # the reason stays
    text = admin_client.get("/admin/uncertain").text
    assert "Marked 2 uncertain deliveries sent. 1 of the chosen were not uncertain any more" in text
    # Neither accept nor resend touches a delivery that is not uncertain.
    assert post(admin_client, "/admin/uncertain/resend", id=str(ledger["sent"]), confirm="yes").status_code == 302
    assert state(db, ledger["sent"])[0] == "sent"


def test_a_form_naming_nothing_or_garbage(admin_client, db, ledger):
    response = post(admin_client, "/admin/uncertain/accept")
    assert response.status_code == 302
    assert "Tick at least one delivery." in admin_client.get("/admin/uncertain").text
    for bad in ("1 OR 1=1", "-1", "9" * 19, "١"):
        assert post(admin_client, "/admin/uncertain/accept", id=bad).status_code == 400, bad
    assert post(admin_client, "/admin/uncertain/accept", id=[str(n) for n in range(501)]).status_code == 400
    # Only deliveries that are no longer uncertain: nothing to confirm.
    response = post(admin_client, "/admin/uncertain/resend", id=str(ledger["sent"]))
    assert response.status_code == 302
    assert "None of the chosen deliveries is uncertain any more." in admin_client.get("/admin/uncertain").text
    assert state(db, ledger["anna@example.com"])[0] == "uncertain"


def test_a_viewer_sees_the_list_without_buttons_and_cannot_decide(app, db, ledger):
    viewer = logged_in(app, db, "viewer@example.com", "viewer")
    page = viewer.get("/admin/uncertain")
    assert page.status_code == 200 and len(_ROW.findall(page.text)) == 4
    # No button a viewer cannot use: the only form posting anything is the logout.
    assert page.text.count("<button") == 1 and page.text.count('method="post"') == 1
    assert "Resend…" not in page.text and "Accept as sent" not in page.text and 'type="checkbox"' not in page.text
    anna = str(ledger["anna@example.com"])
    token = csrf_token(viewer, "/admin/uncertain")
    for path, form in (("/admin/uncertain/resend", {"id": anna}),
                       ("/admin/uncertain/resend", {"id": anna, "confirm": "yes"}),
                       ("/admin/uncertain/accept", {"id": anna})):
        response = viewer.post(path, data={"csrf_token": token, **form})
        assert response.status_code == 403 and "Ask an admin" in response.text
    assert state(db, int(anna)) == ("uncertain", "finished")


def test_forged_or_missing_csrf_tokens_are_refused(admin_client, db, ledger):
    anna = str(ledger["anna@example.com"])
    for path in ("/admin/uncertain/resend", "/admin/uncertain/accept"):
        for form in ({"id": anna, "confirm": "yes", "csrf_token": "forged"}, {"id": anna, "confirm": "yes"}):
            assert admin_client.post(path, data=form).status_code == 400, (path, form)
    # A token from another session is no better.
    other = logged_in(admin_client.application, db, "other@example.com", "admin")
    stolen = csrf_token(other, "/admin/uncertain")
    assert admin_client.post("/admin/uncertain/accept", data={"id": anna, "csrf_token": stolen}).status_code == 400
    assert state(db, int(anna)) == ("uncertain", "finished")


def test_the_runs_page_shows_the_uncertain_count_and_the_nav_links_the_pages(admin_client, db, ledger):
    page = admin_client.get("/admin/runs")
    assert '<a href="/admin/uncertain">4 uncertain deliveries</a>' in page.text
    assert '<a href="/admin/uncertain">Uncertain</a>' in page.text
    assert '<a href="/admin/webhooks">Webhooks</a>' in page.text
    ids = [str(ledger[k]) for k in ("anna@example.com", "ben@example.com", HOSTILE_ADDRESS, "cancelled")]
    assert post(admin_client, "/admin/uncertain/accept", id=ids).status_code == 302
    page = admin_client.get("/admin/runs")
    assert 'id="uncertain-count"' not in page.text
    assert "No uncertain deliveries." in admin_client.get("/admin/uncertain").text


# -- the webhook log --------------------------------------------------------------------------------

@pytest.fixture
def webhook_rows(db):
    """Requests over two days (T0 is the app clock's now); ids by label."""
    rows = {
        "old-refusal": WebhookLog(provider="ses", received_at=T0 - timedelta(hours=25), status="refused",
                                  detail="bad signature", remote="203.0.113.9"),
        "accepted": WebhookLog(provider="postmark", received_at=T0 - timedelta(hours=5), status="accepted",
                               detail="1 applied", remote="192.0.2.1"),
        "hostile": WebhookLog(provider="sendgrid", received_at=T0 - timedelta(hours=3), status="refused",
                              detail='malformed: <script>alert("x")</script>', remote="<b>10.0.0.1</b>"),
        "ignored": WebhookLog(provider="postmark", received_at=T0 - timedelta(hours=2), status="ignored",
                              detail="0 applied, 1 for addresses never mailed", remote="192.0.2.1"),
        "refusal": WebhookLog(provider="postmark", received_at=T0 - timedelta(minutes=5), status="refused",
                              detail="replayed request", remote="192.0.2.7"),
    }
    with session_scope(db) as s:
        for row in rows.values():
            s.add(row)
        s.flush()
        return {label: row.id for label, row in rows.items()}


def listed(page) -> list[int]:
    return [int(i) for i in _WEBHOOK_ROW.findall(page.text)]


def test_the_webhook_log_newest_first_with_the_refusals_of_the_last_day(admin_client, webhook_rows):
    page = admin_client.get("/admin/webhooks")
    assert page.status_code == 200
    order = ("refusal", "ignored", "hostile", "accepted", "old-refusal")
    assert listed(page) == [webhook_rows[k] for k in order]
    # Two refusals within 24 hours of the app's clock; the one of 25 hours ago does not count.
    assert '<strong>2</strong> requests refused in the last 24 hours' in page.text
    row = page.text.split(f'<tr id="w{webhook_rows["accepted"]}">')[1].split("</tr>")[0]
    assert "postmark" in row and "accepted" in row and "1 applied" in row and "192.0.2.1" in row
    assert "2027-03-20 04:00 CET" in row
    assert page.text.count('method="post"') == 1  # only the logout form: the log is read-only


def test_the_webhook_log_shows_hostile_text_escaped(admin_client, webhook_rows):
    page = admin_client.get("/admin/webhooks")
    assert "<script>alert" not in page.text and "<b>10.0.0.1</b>" not in page.text
    assert "malformed: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;10.0.0.1&lt;/b&gt;" in page.text


def test_the_webhook_log_filters_by_provider_and_status(admin_client, webhook_rows):
    assert listed(admin_client.get("/admin/webhooks?provider=postmark")) == [
        webhook_rows["refusal"], webhook_rows["ignored"], webhook_rows["accepted"]]
    assert listed(admin_client.get("/admin/webhooks?status=refused")) == [
        webhook_rows["refusal"], webhook_rows["hostile"], webhook_rows["old-refusal"]]
    assert listed(admin_client.get("/admin/webhooks?provider=postmark&status=refused")) == [webhook_rows["refusal"]]
    page = admin_client.get("/admin/webhooks?provider=mailgun")
    assert listed(page) == [] and "No webhook requests match this filter." in page.text
    for bad in ("provider=acme", "status=pending", "before=-1"):
        assert admin_client.get(f"/admin/webhooks?{bad}").status_code == 400, bad


def test_the_webhook_log_pages_by_keyset_keeping_the_filter(admin_client, webhook_rows, monkeypatch):
    monkeypatch.setattr(admin_ops, "WEBHOOKS_PER_PAGE", 2)
    page = admin_client.get("/admin/webhooks?status=refused")
    assert listed(page) == [webhook_rows["refusal"], webhook_rows["hostile"]]
    older = re.search(r'<a rel="next" href="([^"]+)">', page.text).group(1).replace("&amp;", "&")
    assert older == f"/admin/webhooks?before={webhook_rows['hostile']}&status=refused"
    page = admin_client.get(older)
    assert listed(page) == [webhook_rows["old-refusal"]] and 'rel="next"' not in page.text
    assert 'href="/admin/webhooks?status=refused">Newest</a>' in page.text


def test_a_viewer_reads_the_webhook_log(app, db, webhook_rows):
    viewer = logged_in(app, db, "viewer@example.com", "viewer")
    assert len(listed(viewer.get("/admin/webhooks"))) == 5
