"""A real browser (Debian's Chromium via Playwright) unsubscribes on a phone-sized screen."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from engine.commands.web import start_in_thread
from engine.db import session_scope
from engine.models import Contact, Delivery, Suppression
from engine.web import create_app

from tests.support.browser import ARTIFACTS, chromium

from .factories import make_campaign, make_contact, make_delivery, make_run


@pytest.fixture
def live_server(settings, db, clock):
    """The app served by waitress on a free loopback port, as in production."""
    app = create_app(settings=settings, engine=db, clock=clock)
    background = start_in_thread(app, host="127.0.0.1", port=0)
    yield background.url
    background.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unsubscribe_in_chromium_on_a_phone(live_server, db, signer):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        alice = make_contact(s, "alice@example.com")
        delivery_id = make_delivery(s, run, alice).id
        bob_delivery = make_delivery(s, run, make_contact(s, "bob@example.com")).id
        alice_id = alice.id
    url = f"{live_server}/u/{signer.sign('unsubscribe', delivery_id)}"
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2,
                                is_mobile=True, has_touch=True)
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        assert page.locator("h1").inner_text() == "Unsubscribe alice@example.com from Example Shop mails?"
        button = page.locator("#confirm")
        box = button.bounding_box()
        assert box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= 375
        # The page fits the phone: nothing wider than the viewport.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=str(ARTIFACTS / "unsubscribe-confirm-375.png"), full_page=True)
        button.click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "You are unsubscribed"
        page.screenshot(path=str(ARTIFACTS / "unsubscribe-done-375.png"), full_page=True)
        assert console_errors == []  # e.g. no CSP violations for our own stylesheet

    with Session(db) as s:
        assert s.get(Contact, alice_id).status == "unsubscribed"
        assert s.exec(select(Suppression.email_key)).all() == ["alice@example.com"]
        assert s.get(Delivery, delivery_id).status == "skipped"
        assert s.get(Delivery, bob_delivery).status == "queued"
