"""Recipient pages: unsubscribe (form with CSRF, and RFC 8058 one-click), preferences, view in browser."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from engine.db import session_scope
from engine.models import Contact, Delivery, Suppression
from engine.web import create_app
from tests.support.data import database_state

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def mail(db):
    """Alice got run 1 and is queued in run 2 and claimed in run 3; Bob is queued in run 1."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run1 = make_run(s, campaign)
        run2 = make_run(s, campaign, occurrence_at=T0 + timedelta(days=1))
        run3 = make_run(s, campaign, occurrence_at=T0 + timedelta(days=2))
        alice = make_contact(s, "alice@example.com")
        bob = make_contact(s, "bob@example.com")
        return {
            "delivery": make_delivery(s, run1, alice).id,
            "alice_later": make_delivery(s, run2, alice).id,
            "alice_claimed": make_delivery(s, run3, alice, status="claimed").id,
            "bob": make_delivery(s, run1, bob).id,
            "alice_id": alice.id,
            "bob_id": bob.id,
        }


def _snapshot(db) -> dict:
    """Everything an unsubscribe could change."""
    with Session(db) as s:
        return {
            "contacts": {c.id: c.status for c in s.exec(select(Contact)).all()},
            "deliveries": {d.id: (d.status, d.last_error) for d in s.exec(select(Delivery)).all()},
            "suppressions": [(x.email_key, x.reason) for x in s.exec(select(Suppression)).all()],
        }


def _csrf_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _assert_alice_unsubscribed(db, mail) -> None:
    state = _snapshot(db)
    assert state["contacts"] == {mail["alice_id"]: "unsubscribed", mail["bob_id"]: "subscribed"}
    assert state["suppressions"] == [("alice@example.com", "unsubscribe")]
    deliveries = state["deliveries"]
    assert deliveries[mail["delivery"]] == ("skipped", "unsubscribed")
    assert deliveries[mail["alice_later"]] == ("skipped", "unsubscribed")
    assert deliveries[mail["alice_claimed"]] == ("claimed", None)  # the sender re-checks these
    assert deliveries[mail["bob"]] == ("queued", None)


def test_unsubscribe_page_asks_for_confirmation(client, signer, mail, db):
    before = _snapshot(db)
    response = client.get(f"/u/{signer.sign('unsubscribe', mail['delivery'])}")
    assert response.status_code == 200
    assert "Unsubscribe <span class=\"email\">alice@example.com</span> from Example Shop mails?" in response.text
    assert 'name="csrf_token"' in response.text
    assert 'id="confirm"' in response.text
    assert _snapshot(db) == before  # looking is not unsubscribing (link scanners GET every URL)


def test_confirm_with_csrf_token_unsubscribes(client, signer, mail, db):
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    token = _csrf_token(client.get(url).text)
    response = client.post(url, data={"csrf_token": token})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    _assert_alice_unsubscribed(db, mail)


def test_confirm_without_csrf_token_is_refused(client, signer, mail, db):
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    client.get(url)  # a session cookie, but no token in the form
    before = _snapshot(db)
    for data in ({}, {"csrf_token": "forged"}, {"List-Unsubscribe": "Yes please"}):
        response = client.post(url, data=data)
        assert response.status_code == 400
        assert "Please try again" in response.text
    assert _snapshot(db) == before


def test_one_click_post_unsubscribes_without_cookies(app, signer, mail, db):
    client = app.test_client(use_cookies=False)
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    response = client.post(url, data=ONE_CLICK)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "Location" not in response.headers
    _assert_alice_unsubscribed(db, mail)
    # Mailbox providers retry; repeating changes nothing and still answers 200.
    again = client.post(url, data="List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded")
    assert again.status_code == 200
    _assert_alice_unsubscribed(db, mail)


def test_one_click_post_as_multipart(app, signer, mail, db):
    client = app.test_client(use_cookies=False)
    response = client.post(f"/u/{signer.sign('unsubscribe', mail['delivery'])}", data=ONE_CLICK,
                           content_type="multipart/form-data")
    assert response.status_code == 200
    _assert_alice_unsubscribed(db, mail)


def test_one_click_needs_a_form_body(app, signer, mail, db):
    client = app.test_client(use_cookies=False)
    before = _snapshot(db)
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    assert client.post(url, data="List-Unsubscribe=One-Click", content_type="text/plain").status_code == 400
    assert client.post(url, json=ONE_CLICK).status_code == 400
    assert _snapshot(db) == before


def _tampered(token: str) -> str:
    return ("B" if token[0] != "B" else "C") + token[1:]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", ["forged", "other_purpose", "garbage", "empty", "zero"])
def test_bad_tokens_are_a_friendly_400(app, signer, mail, db, kind, method):
    good = signer.sign("unsubscribe", mail["delivery"])
    token = {
        "forged": _tampered(good),
        "other_purpose": signer.sign("view", mail["delivery"]),
        "garbage": "not-a-token.at-all",
        "empty": "",
        "zero": signer.sign("unsubscribe", 0),
    }[kind]
    client = app.test_client(use_cookies=False)
    before = _snapshot(db)
    response = client.open(f"/u/{token}", method=method, data=ONE_CLICK if method == "POST" else None)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "This link is not valid" in response.text
    assert "Traceback" not in response.text
    assert _snapshot(db) == before


def test_token_signed_with_another_key_is_refused(app, mail, db):
    from engine.tokens import TokenSigner

    foreign = TokenSigner("some-other-secret").sign("unsubscribe", mail["delivery"])
    response = app.test_client().post(f"/u/{foreign}", data=ONE_CLICK)
    assert response.status_code == 400


def test_token_of_a_deleted_delivery_is_a_404(app, signer, mail, db):
    with session_scope(db) as s:
        s.delete(s.get(Delivery, mail["delivery"]))
    before = _snapshot(db)
    client = app.test_client(use_cookies=False)
    for path, purpose in (("u", "unsubscribe"), ("p", "preferences"), ("v", "view")):
        url = f"/{path}/{signer.sign(purpose, mail['delivery'])}"
        response = client.get(url)
        assert response.status_code == 404, url
        assert "no longer exists" in response.text
    assert client.post(f"/u/{signer.sign('unsubscribe', mail['delivery'])}", data=ONE_CLICK).status_code == 404
    assert _snapshot(db) == before


def test_preferences_refuses_an_unsubscribe_token(client, signer, mail):
    assert client.get(f"/p/{signer.sign('unsubscribe', mail['delivery'])}").status_code == 400
    assert client.get("/p/").status_code == 400


def test_view_in_browser_without_renderer(client, signer, mail):
    response = client.get(f"/v/{signer.sign('view', mail['delivery'])}")
    assert response.status_code == 404
    assert "Not available yet" in response.text
    assert client.get(f"/v/{signer.sign('preferences', mail['delivery'])}").status_code == 400


def test_view_in_browser_with_renderer(settings, db, clock, signer, mail):
    calls = []

    def render(session, delivery_id):
        calls.append(delivery_id)
        email = session.get(Delivery, delivery_id).email
        return f"<html><body><p style='color:red'>Hello {email}</p></body></html>"

    app = create_app(settings=settings, engine=db, clock=clock, testing=True, view_renderer=render)
    response = app.test_client().get(f"/v/{signer.sign('view', mail['delivery'])}")
    assert response.status_code == 200
    assert "Hello alice@example.com" in response.text
    assert calls == [mail["delivery"]]
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_error_pages_follow_the_browser_language(client, signer, mail):
    dutch = {"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.5"}
    response = client.get("/u/not-a-token", headers=dutch)
    assert response.status_code == 400
    assert '<html lang="nl">' in response.text and "Ongeldige link" in response.text
    assert "Invalid link" in client.get("/u/not-a-token", headers={"Accept-Language": "de"}).text
    assert "Op dit adres staat geen pagina." in client.get("/nowhere", headers=dutch).text


def test_head_and_options_never_unsubscribe_even_with_the_one_click_body(client, signer, db, mail):
    """Link scanners send HEAD to List-Unsubscribe URLs; HEAD is answered as GET and changes nothing."""
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    before = database_state(db)
    assert client.head(url, data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded").status_code == 200
    assert client.head(url).status_code == 200
    assert client.options(url).status_code == 200
    assert database_state(db) == before
