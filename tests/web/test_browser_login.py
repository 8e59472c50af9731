"""Admin login in a real browser (Debian's Chromium via Playwright) on a 375 px phone screen."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from engine.commands.web import start_in_thread
from engine.db import session_scope
from engine.models import Run
from engine.web import create_app

from tests.support.browser import Phone, chromium

from .factories import make_campaign, make_contact, make_delivery, make_run
from .logins import PASSWORD, make_admin


@pytest.fixture
def live_server(settings, db, clock):
    """The app served by waitress on a free loopback port, as in production."""
    app = create_app(settings=settings, engine=db, clock=clock)
    background = start_in_thread(app, host="127.0.0.1", port=0)
    yield background.url
    background.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_log_in_see_runs_pause_and_log_out_on_a_phone(live_server, db):
    make_admin(db, "ops@example.com")
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s, "spring-sale", "Spring sale"), status="sending", total=1)
        make_delivery(s, run, make_contact(s, "alice@example.com"))
        run_id = run.id

    with chromium() as browser:
        phone = Phone(browser, live_server)
        # An admin page sends an anonymous visitor to the login form, remembering where they were going.
        phone.open(f"{live_server}/admin/runs/{run_id}")
        assert phone.page.url.startswith(f"{live_server}/admin/login?next=")
        assert phone.heading() == "Log in"
        assert "There is no admin account yet" not in phone.text()
        phone.check("admin-login")

        phone.page.fill("#email", "ops@example.com")
        phone.page.fill("#password", "not the password!")
        phone.click("button[type=submit]")
        assert "The email or password is wrong." in phone.text()
        assert phone.page.input_value("#email") == "ops@example.com"  # kept; the password is not
        assert phone.page.input_value("#password") == ""
        phone.check("admin-login-wrong")

        phone.page.fill("#password", PASSWORD)
        phone.click("button[type=submit]")
        assert phone.page.url == f"{live_server}/admin/runs/{run_id}"
        assert phone.heading() == f"Run #{run_id} · spring-sale"
        assert "ops@example.com" in phone.text()
        phone.check("admin-run-detail")

        phone.click("#pause_run")
        assert "paused by ops@example.com" in phone.text()
        phone.check("admin-run-paused")
        with Session(db) as s:
            assert s.get(Run, run_id).status == "paused"

        phone.click("nav.nav a:text-is('Runs')")
        assert phone.heading() == "Runs"
        assert "spring-sale" in phone.text()
        phone.check("admin-runs")

        phone.click("button.logout")
        assert phone.heading() == "Log in"
        assert "You are logged out." in phone.text()
        phone.check("admin-logged-out")

        phone.open(f"{live_server}/admin/runs")
        assert phone.heading() == "Log in"  # the session is gone
        phone.close()
