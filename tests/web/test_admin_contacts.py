"""Admin contact search and page, suppress and lift, the suppression list and its CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.db import session_scope
from engine.models import Contact, ContestEntry, Order, PointsEntry, Suppression, SurveyAnswer, SurveyResponse
from engine.privacy import erase
from engine.suppression import fingerprint

from .factories import T0, make_campaign, make_contact, make_delivery, make_run
from .logins import csrf_token, log_in, make_admin

HOSTILE_NAME = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://x","y")'


@pytest.fixture
def people(db):
    """Anna (two orders, points, a delivery, a survey answer, a contest entry), Bob (hostile data), Carol."""
    with session_scope(db) as s:
        sale = make_campaign(s)
        run = make_run(s, sale, status="finished")
        anna = make_contact(s, "anna@example.com")
        anna.first_name, anna.last_name, anna.language, anna.country = "Anna", "Berg", "nl", "NL"
        bob = make_contact(s, "bob@example.com")
        bob.first_name, bob.last_name = HOSTILE_NAME, FORMULA
        bob.attributes = {"plan": "<img src=x onerror=alert(2)>", "score": 3}
        carol = make_contact(s, "carol@shop.example")
        s.add(Order(order_id="A-1", contact_id=anna.id, placed_at=T0 - timedelta(days=100), total_cents=40000,
                    currency="EUR", margin=0.5, status="delivered", updated_at=T0))
        s.add(Order(order_id="A-2", contact_id=anna.id, placed_at=T0 - timedelta(days=10), total_cents=60000,
                    currency="EUR", margin=0.5, status="paid", updated_at=T0))
        s.add(Order(order_id="A-3", contact_id=anna.id, placed_at=T0 - timedelta(days=5), total_cents=1000,
                    currency="EUR", status="returned", updated_at=T0))
        s.add(PointsEntry(contact_id=anna.id, kind="earn", points=400, source_key="earn:A-1",
                          occurred_at=T0 - timedelta(days=100), created_at=T0))
        delivery = make_delivery(s, run, anna, status="sent", sent_at=T0)
        response = SurveyResponse(delivery_id=delivery.id, campaign_id=sale.id, contact_id=anna.id,
                                  first_answered_at=T0, submitted_at=T0, updated_at=T0)
        s.add(response)
        s.flush()
        s.add(SurveyAnswer(response_id=response.id, question="nps", value_number=9))
        s.add(ContestEntry(campaign_id=sale.id, contact_id=anna.id, entered_at=T0))
        return {"anna": anna.id, "bob": bob.id, "carol": carol.id, "delivery": delivery.id}


def _suppressions(db) -> dict[str, tuple[str, str]]:
    with Session(db) as s:
        return {r.email_key: (r.reason, r.note) for r in s.execute(select(Suppression)).scalars()}


def _status(db, contact_id: int) -> str:
    with Session(db) as s:
        return s.get(Contact, contact_id).status


def _post(client, path: str, **form):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/suppressions"), **form})


def _found(html: str) -> set[int]:
    return {int(m) for m in re.findall(r'<tr id="c(\d+)">', html)}


def test_search_finds_a_contact_by_address_prefix_and_by_name(admin_client, people):
    assert _found(admin_client.get("/admin/contacts?q=ANNA@ex").text) == {people["anna"]}
    assert _found(admin_client.get("/admin/contacts?q=berg").text) == {people["anna"]}
    # No address starts so: names and the inside of addresses are searched instead.
    assert _found(admin_client.get("/admin/contacts?q=@shop.example").text) == {people["carol"]}
    assert _found(admin_client.get("/admin/contacts?q=example.com&sub=1").text) == {people["anna"], people["bob"]}
    assert _found(admin_client.get("/admin/contacts?q=100%25").text) == set()  # LIKE wildcards are literal
    assert "No contacts" in admin_client.get("/admin/contacts?q=nobody@").text


def test_contacts_are_keyset_paged(admin_client, db, people, monkeypatch):
    from engine.web import admin_contacts
    monkeypatch.setattr(admin_contacts, "CONTACTS_PER_PAGE", 2)
    first = admin_client.get("/admin/contacts").text
    assert _found(first) == {people["anna"], people["bob"]} and f"after={people['bob']}" in first
    assert _found(admin_client.get(f"/admin/contacts?after={people['bob']}").text) == {people["carol"]}
    assert admin_client.get("/admin/contacts?after=x").status_code == 400


def test_the_contact_page_shows_ltv_factors_orders_and_the_rest(admin_client, people):
    page = admin_client.get(f"/admin/contacts/{people['anna']}")
    assert page.status_code == 200
    html = page.text
    # Two countable orders (the returned one does not count): S = 500.00, P = 50 %, tenure 100 days.
    assert '<dd id="ltv-s">500.00 EUR</dd>' in html
    assert '<dd id="ltv-p">50.0 %</dd>' in html
    assert 'id="ltv-c"' in html and 'id="ltv-t"' in html and 'id="ltv-value"' in html
    for order in ("A-1", "A-2", "A-3"):
        assert order in html
    assert "returned" in html and "delivered" in html
    assert '<strong id="points-balance">400</strong>' in html
    assert f'/admin/deliveries/{people["delivery"]}"' in html
    assert "<dt>nps</dt><dd>9.0</dd>" in html
    assert "spring-sale" in html
    # 500 EUR at 50 % over 100 days: LTV 500 -> the "gold" segment of the shipped segments.toml.
    assert '<dd id="segment">gold' in html
    assert "Not suppressed." in html
    assert admin_client.get("/admin/contacts/999999").status_code == 404


def test_hostile_contact_data_is_escaped_in_pages(admin_client, people):
    html = admin_client.get(f"/admin/contacts/{people['bob']}").text
    assert HOSTILE_NAME not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    listing = admin_client.get("/admin/contacts?q=bob").text
    assert HOSTILE_NAME not in listing and "&lt;script&gt;" in listing


def test_suppress_and_lift_from_the_contact_page(admin_client, db, people):
    anna = people["anna"]
    response = _post(admin_client, f"/admin/contacts/{anna}/suppress", note=FORMULA)
    assert response.status_code == 302
    assert _suppressions(db) == {"anna@example.com": ("manual", FORMULA)}
    assert _status(db, anna) == "unsubscribed"
    html = admin_client.get(f"/admin/contacts/{anna}").text
    assert "is suppressed (manual)" in html and '<dd id="mailable">no</dd>' in html
    assert "&#34;http://x&#34;" in html or "&quot;http://x&quot;" in html  # the note, escaped

    _post(admin_client, f"/admin/contacts/{anna}/unsuppress")
    assert _suppressions(db) == {}
    # Lifting never resubscribes: consent is the contact's to give again.
    assert _status(db, anna) == "unsubscribed"
    assert "stays unsubscribed" in admin_client.get(f"/admin/contacts/{anna}").text


@pytest.mark.parametrize("reason", ["hard_bounce", "complaint"])
def test_a_bounce_or_complaint_is_lifted_only_when_confirmed(admin_client, db, people, reason):
    with session_scope(db) as s:
        s.add(Suppression(email_key="carol@shop.example", reason=reason, note="", created_at=T0))
    carol = people["carol"]
    _post(admin_client, f"/admin/contacts/{carol}/unsuppress")
    assert "carol@shop.example" in _suppressions(db)
    assert "confirm box" in admin_client.get(f"/admin/contacts/{carol}").text
    _post(admin_client, f"/admin/contacts/{carol}/unsuppress", confirm="yes")
    assert _suppressions(db) == {}
    assert _status(db, carol) == "subscribed"  # it never changed


def test_the_suppression_list_adds_filters_pages_and_removes(admin_client, db, people, monkeypatch):
    assert _post(admin_client, "/admin/suppressions", email="  Dave@Example.com ", note="asked by phone").status_code == 302
    assert _suppressions(db) == {"dave@example.com": ("manual", "asked by phone")}
    _post(admin_client, "/admin/suppressions", email="not an address", note="x")
    assert len(_suppressions(db)) == 1
    _post(admin_client, "/admin/suppressions", email="bob@example.com", note="")
    assert _status(db, people["bob"]) == "unsubscribed"
    with session_scope(db) as s:
        s.add(Suppression(email_key="eve@example.com", reason="unsubscribe", note="", created_at=T0))
    html = admin_client.get("/admin/suppressions").text
    assert "dave@example.com" in html and "asked by phone" in html and "eve@example.com" in html
    only = admin_client.get("/admin/suppressions?reason=unsubscribe").text
    assert "eve@example.com" in only and "dave@example.com" not in only
    assert "dave@" not in admin_client.get("/admin/suppressions?q=EVE").text
    assert admin_client.get("/admin/suppressions?reason=bogus").status_code == 400

    from engine.web import admin_contacts
    monkeypatch.setattr(admin_contacts, "SUPPRESSIONS_PER_PAGE", 2)
    with Session(db) as s:
        ids = sorted(s.execute(select(Suppression.id)).scalars())
    first = admin_client.get("/admin/suppressions").text
    assert "eve@" in first and "dave@" not in first and f"before={ids[1]}" in first
    assert "dave@" in admin_client.get(f"/admin/suppressions?before={ids[1]}").text

    with Session(db) as s:
        eve = s.execute(select(Suppression.id).where(Suppression.email_key == "eve@example.com")).scalar_one()
    _post(admin_client, f"/admin/suppressions/{eve}/remove")
    assert "eve@example.com" not in _suppressions(db)
    assert admin_client.post("/admin/suppressions/999999/remove",
                             data={"csrf_token": csrf_token(admin_client, "/admin/suppressions")}).status_code == 404


def test_an_erased_suppression_is_never_lifted_nor_shown_as_an_address(admin_client, db, people):
    with session_scope(db) as s:
        erase(s, people["carol"], now=T0)
    key = fingerprint("carol@shop.example")
    with Session(db) as s:
        row = s.execute(select(Suppression.id).where(Suppression.email_key == key)).scalar_one()
    _post(admin_client, f"/admin/suppressions/{row}/remove", confirm="yes")
    assert _suppressions(db) == {key: ("erased", "")}
    assert "can never be lifted" in admin_client.get("/admin/suppressions").text
    _post(admin_client, f"/admin/contacts/{people['carol']}/unsuppress", confirm="yes")
    # Adding the address back by hand must not put the plain address on the list again.
    _post(admin_client, "/admin/suppressions", email="carol@shop.example", note="again")
    assert _suppressions(db) == {key: ("erased", "")}
    # The full address still finds its fingerprint.
    assert key in admin_client.get("/admin/suppressions?q=carol@shop.example").text
    exported = admin_client.get("/admin/suppressions.csv").text
    assert "carol@" not in exported and key in exported


def test_the_csv_export_neutralises_formulas(admin_client, db, people):
    _post(admin_client, f"/admin/contacts/{people['bob']}/suppress", note=FORMULA)
    with session_scope(db) as s:
        s.add(Suppression(email_key="=cmd@example.com", reason="manual", note="@SUM(A1)", created_at=T0))
    response = admin_client.get("/admin/suppressions.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert rows[0] == ["id", "address_or_fingerprint", "reason", "note", "created_at"]
    by_key = {r[1]: r for r in rows[1:]}
    assert by_key["bob@example.com"][3] == "'" + FORMULA
    assert by_key["'=cmd@example.com"][3] == "'@SUM(A1)"


def test_a_viewer_cannot_suppress_or_lift(app, db, people):
    with session_scope(db) as s:
        s.add(Suppression(email_key="carol@shop.example", reason="manual", note="", created_at=T0))
    make_admin(db, "viewer@example.com", role="viewer")
    viewer = app.test_client()
    assert log_in(viewer, "viewer@example.com").status_code == 302
    # The change buttons are not offered to a viewer; only the log-out form is.
    for path in (f"/admin/contacts/{people['anna']}", f"/admin/contacts/{people['carol']}", "/admin/suppressions"):
        page = viewer.get(path)
        assert page.status_code == 200 and page.text.count('method="post"') == 1, path
    assert viewer.get("/admin/suppressions.csv").status_code == 200
    before = _suppressions(db)
    with Session(db) as s:
        row = s.execute(select(Suppression.id)).scalar_one()
    for path, form in ((f"/admin/contacts/{people['anna']}/suppress", {"note": "x"}),
                       (f"/admin/contacts/{people['carol']}/unsuppress", {}),
                       ("/admin/suppressions", {"email": "zed@example.com", "note": "x"}),
                       (f"/admin/suppressions/{row}/remove", {})):
        assert _post(viewer, path, **form).status_code == 403, path
    assert _suppressions(db) == before
    assert _status(db, people["anna"]) == "subscribed"


def test_posts_without_a_csrf_token_are_refused(admin_client, db, people):
    for path, form in ((f"/admin/contacts/{people['anna']}/suppress", {"note": "x"}),
                       ("/admin/suppressions", {"email": "zed@example.com", "note": "x"}),
                       ("/admin/suppressions", {"email": "zed@example.com", "note": "x", "csrf_token": "forged"})):
        assert admin_client.post(path, data=form).status_code == 400, path
    assert _suppressions(db) == {}
    assert _status(db, people["anna"]) == "subscribed"
