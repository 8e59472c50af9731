"""The uncertain-deliveries and webhook-log pages in a real browser (Debian's Chromium, Playwright).

What the test client cannot show: the selection checkboxes sit outside their form (the `form`
attribute) and "Accept selected" posts elsewhere (`formaction`); both must work in a browser, under
the page's CSP, with hostile text inert. Served by waitress on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from engine.clock import FixedClock
from engine.commands.web import start_in_thread
from engine.db import session_scope
from engine.models import Delivery, WebhookLog
from engine.web import create_app
from tests.conftest import BACKENDS
from tests.support.browser import chromium
from tests.support.smtpd import free_port

from .factories import T0, make_campaign, make_contact, make_delivery, make_run
from .logins import make_admin
from .test_admin_browser import IMG, SCRIPT, Desk

BOTH = pytest.mark.parametrize("database_url", [b for b in ("sqlite", "postgresql") if b in BACKENDS], indirect=True)


@pytest.fixture
def site(settings, db):
    """The app on a fixed clock, served by waitress on a free loopback port; its URL."""
    port = free_port()
    server = start_in_thread(create_app(settings=settings, engine=db, clock=FixedClock(T0)), host="127.0.0.1",
                             port=port)
    try:
        yield server.url
    finally:
        server.stop()


def status(db, delivery_id: int) -> str:
    with Session(db) as s:
        return s.get(Delivery, delivery_id).status


@BOTH
def test_resend_a_selection_accept_one_and_read_the_webhook_log(site, db):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s), status="finished")
        ids = [make_delivery(s, run, make_contact(s, f"user{n}@example.com"), status="uncertain", provider="smtp",
                             sent_at=T0, last_error=f"no reply {SCRIPT}").id for n in range(3)]
        s.add(WebhookLog(provider="sendgrid", received_at=T0 - timedelta(hours=1), status="refused",
                         detail=f"bad signature {IMG}", remote="192.0.2.4"))
        s.add(WebhookLog(provider="postmark", received_at=T0, status="accepted", detail="1 applied"))
    make_admin(db)
    make_admin(db, "viewer@example.com", role="viewer")
    with chromium() as browser:
        admin = Desk(browser, site)
        try:
            admin.log_in("admin@example.com")
            assert "3 uncertain deliveries" in admin.text()
            admin.click("nav.nav a:text-is('Uncertain')")
            assert admin.heading() == "Uncertain deliveries"
            admin.check("uncertain-list")
            admin.page.check(f'input[type=checkbox][value="{ids[0]}"]')
            admin.page.check(f'input[type=checkbox][value="{ids[2]}"]')
            admin.click("#selection button:text-is('Resend selected…')")
            assert admin.heading() == "Resend 2 uncertain deliveries?"
            assert "The recipient may get the mail twice." in admin.text()
            assert status(db, ids[0]) == "uncertain"
            admin.check("uncertain-confirm")
            admin.click("button:text('Yes, resend')")
            assert "Requeued 2 uncertain deliveries" in admin.text()
            assert [status(db, i) for i in ids] == ["queued", "uncertain", "queued"]

            admin.click(f"#d{ids[1]} button:text-is('Accept as sent')")
            assert "Marked 1 uncertain deliveries sent." in admin.text() and "No uncertain deliveries." in admin.text()
            assert status(db, ids[1]) == "sent"
            admin.check("uncertain-decided")

            admin.click("nav.nav a:text-is('Webhooks')")
            assert "1 request refused in the last 24 hours" in admin.text()
            assert f"bad signature {IMG}" in admin.text()  # shown as typed, never run
            admin.page.select_option("select[name=provider]", "postmark")
            admin.click("form.filters button[type=submit]")
            assert admin.page.locator("table.webhook-log tbody tr").count() == 1 and "1 applied" in admin.text()
            admin.check("webhook-log")
        finally:
            admin.close()
        viewer = Desk(browser, site)
        try:
            viewer.log_in("viewer@example.com")
            with session_scope(db) as s:
                s.get(Delivery, ids[0]).status = "uncertain"
            viewer.open("/admin/uncertain")
            assert "user0@example.com" in viewer.text()
            assert viewer.page.locator("button").count() == 1  # log out; nothing to resend or accept
            viewer.check("uncertain-viewer")
        finally:
            viewer.close()
