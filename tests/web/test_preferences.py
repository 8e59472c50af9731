"""The preference centre: kinds of mail, language, points, orders, surveys, download my data, erase me."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine import privacy
from engine.db import session_scope
from engine.models import (
    Campaign, Contact, ContactTag, Delivery, Event, KindOptOut, Order, PointsEntry, Suppression, SurveyAnswer,
    SurveyResponse,
)
from engine.suppression import fingerprint, is_suppressed
from engine.web.i18n import _COUPON, _PREFERENCES, _UNSUBSCRIBE
from tests.support.data import database_state

from .factories import T0, make_campaign, make_contact, make_delivery, make_run


@pytest.fixture
def alice(db):
    """Alice got a spring-sale mail, is queued for the next, has orders, points, tags and a survey response."""
    with session_scope(db) as s:
        sale = make_campaign(s)
        s.add(Campaign(id="points", name="Points", kind="loyalty_points", values=[], definition={},
                       source_hash="0" * 64, synced_at=T0))
        s.flush()
        run = make_run(s, sale)
        later = make_run(s, sale, occurrence_at=T0 + timedelta(days=7))
        alice = make_contact(s, "Alice@Example.com")
        alice.first_name, alice.last_name, alice.language, alice.attributes = "Alice", "Smit", "en", {"tier": "gold"}
        bob = make_contact(s, "bob@example.com")
        s.add(ContactTag(contact_id=alice.id, tag="vip"))
        delivered = make_delivery(s, run, alice, status="sent", sent_at=T0, data={"order_id": "A-2"})
        queued = make_delivery(s, later, alice)
        bobs = make_delivery(s, run, bob)
        placed = [("A-1", "delivered", 40), ("A-2", "shipped", 20), ("A-3", "returned", 10)]
        orders = []
        for i, (number, status, days_ago) in enumerate(placed):
            order = Order(order_id=number, contact_id=alice.id, placed_at=T0 - timedelta(days=days_ago),
                          total_cents=4990 + i, currency="EUR", status=status, updated_at=T0)
            s.add(order)
            orders.append(order)
        s.flush()
        s.add(PointsEntry(contact_id=alice.id, kind="earn", points=50, order_id=orders[0].id,
                          source_key="earn:order:1", occurred_at=T0 - timedelta(days=40), created_at=T0,
                          note="order A-1"))
        s.add(PointsEntry(contact_id=alice.id, kind="redeem", points=-20, source_key="redeem:x",
                          occurred_at=T0 - timedelta(days=2), created_at=T0, note="voucher"))
        s.add(Event(contact_id=alice.id, type="trial_started", occurred_at=T0, data={"product": "Pro"}))
        response = SurveyResponse(delivery_id=delivered.id, campaign_id=sale.id, contact_id=alice.id,
                                  first_answered_at=T0, submitted_at=T0, updated_at=T0)
        s.add(response)
        s.flush()
        s.add(SurveyAnswer(response_id=response.id, question="recommend", value_number=9.0))
        s.add(SurveyAnswer(response_id=response.id, question="why", value_text="Fast delivery to Smitstraat 4"))
        return {"id": alice.id, "bob": bob.id, "delivery": delivered.id, "queued": queued.id, "bobs": bobs.id}


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def prefs_url(signer, delivery_id: int) -> str:
    return f"/p/{signer.sign('preferences', delivery_id)}"


def test_page_shows_kinds_language_points_orders_and_surveys(client, signer, alice):
    html = client.get(prefs_url(signer, alice["delivery"])).text
    assert '<html lang="en">' in html
    assert "Alice@Example.com" in html
    # Only the kinds this sender mails, each ticked while wanted.
    assert re.findall(r'name="kind" value="(\w+)" checked', html) == ["loyalty_points", "seasonal_discount"]
    assert "Contests and prize draws" not in html
    assert '<option value="en" selected>English</option>' in html and '<option value="nl">Nederlands</option>' in html
    assert re.search(r"Balance</span> <strong>30</strong>", html)
    assert "+50" in html and "-20" in html and "Redeemed" in html
    # Every order, newest first, with its progress; a returned order shows its end state.
    assert [m for m in re.findall(r"Order (A-\d)", html)] == ["A-3", "A-2", "A-1"]
    shipped = html[html.index("Order A-2"):html.index("Order A-1")]
    assert shipped.count('class="done') == 3 and 'class="done current">Shipped' in shipped
    assert "status-returned" in html and ">Returned<" in html
    assert "Spring sale" in html and "Fast delivery to Smitstraat 4" in html and "9" in html
    assert 'href="' + prefs_url(signer, alice["delivery"]) + '/data.json"' in html


def test_a_dutch_contact_reads_dutch(client, signer, alice, db):
    with session_scope(db) as s:
        s.get(Contact, alice["id"]).language = "nl"
    html = client.get(prefs_url(signer, alice["delivery"])).text
    assert '<html lang="nl">' in html
    assert "Je voorkeuren" in html and "Je bestellingen" in html and "Verzonden" in html
    assert '<option value="nl" selected>Nederlands</option>' in html
    unsubscribe = client.get(f"/u/{signer.sign('unsubscribe', alice['delivery'])}").text
    assert "afmelden voor e-mails van Example Shop?" in unsubscribe and "Ja, meld me af" in unsubscribe


def test_labels_exist_in_both_languages():
    for table in (_PREFERENCES, _UNSUBSCRIBE, _COUPON):
        assert set(table["en"]) == set(table["nl"])


def test_saving_choices_opts_out_of_a_kind_and_changes_the_language(client, signer, alice, db):
    url = prefs_url(signer, alice["delivery"])
    token = csrf(client.get(url).text)
    response = client.post(url, data={"csrf_token": token, "kind": ["loyalty_points"], "language": "nl"})
    assert response.status_code == 303 and response.headers["Location"].endswith("?saved=choices")
    with Session(db) as s:
        assert s.execute(select(KindOptOut.kind).where(KindOptOut.contact_id == alice["id"])).scalars().all() == \
            ["seasonal_discount"]
        assert s.get(Contact, alice["id"]).language == "nl"
    html = client.get(response.headers["Location"]).text
    assert "Je keuzes zijn opgeslagen." in html
    assert re.findall(r'name="kind" value="(\w+)" checked', html) == ["loyalty_points"]
    # Saving the same again changes nothing; ticking it again removes the opt-out.
    client.post(url, data={"csrf_token": token, "kind": ["loyalty_points"], "language": "nl"})
    client.post(url, data={"csrf_token": token, "kind": ["loyalty_points", "seasonal_discount"], "language": "nl"})
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(KindOptOut)).scalar() == 0


def test_unknown_kinds_and_languages_are_ignored_not_stored(client, signer, alice, db):
    url = prefs_url(signer, alice["delivery"])
    token = csrf(client.get(url).text)
    response = client.post(url, data={"csrf_token": token, "kind": ["seasonal_discount", "loyalty_points", "<x>"],
                                      "language": "xx"})
    assert response.status_code == 303
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(KindOptOut)).scalar() == 0
        assert s.get(Contact, alice["id"]).language == "en"


def test_changes_need_the_csrf_token(client, signer, alice, db):
    url = prefs_url(signer, alice["delivery"])
    client.get(url)
    for path in (url, url + "/resubscribe", url + "/erase"):
        response = client.post(path, data={"kind": [], "language": "nl"})
        assert response.status_code == 400 and "Please try again" in response.text
    with Session(db) as s:
        contact = s.get(Contact, alice["id"])
        assert contact.language == "en" and contact.erased_at is None
        assert s.execute(select(func.count()).select_from(KindOptOut)).scalar() == 0


def test_unsubscribe_then_subscribe_again(client, signer, alice, db):
    url = prefs_url(signer, alice["delivery"])
    html = client.get(url).text
    action = re.search(r'<form method="post" action="(/u/[^"]+)"', html).group(1)
    assert client.post(action, data={"csrf_token": csrf(html)}).status_code == 200
    html = client.get(url).text
    assert "You are unsubscribed" in html and 'id="resubscribe"' in html and 'name="kind"' not in html
    response = client.post(url + "/resubscribe", data={"csrf_token": csrf(html)})
    assert response.status_code == 303
    with Session(db) as s:
        assert s.get(Contact, alice["id"]).status == "subscribed"
        assert s.execute(select(func.count()).select_from(Suppression)).scalar() == 0
    assert "Welcome back" in client.get(response.headers["Location"]).text


def test_a_bounced_address_cannot_be_switched_back_on(client, signer, alice, db):
    with session_scope(db) as s:
        s.get(Contact, alice["id"]).status = "unsubscribed"
        s.add(Suppression(email_key="alice@example.com", reason="hard_bounce", created_at=T0))
    url = prefs_url(signer, alice["delivery"])
    html = client.get(url).text
    assert 'id="resubscribe"' not in html and "blocked" in html
    token = csrf(client.get(f"/u/{signer.sign('unsubscribe', alice['delivery'])}").text)
    response = client.post(url + "/resubscribe", data={"csrf_token": token})
    assert response.status_code == 409
    with Session(db) as s:
        assert s.get(Contact, alice["id"]).status == "unsubscribed"
        assert s.execute(select(Suppression.reason)).scalars().all() == ["hard_bounce"]


def test_download_my_data(client, signer, alice):
    response = client.get(prefs_url(signer, alice["delivery"]) + "/data.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="my-data.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.text)
    assert data["format"] == "valuemail-personal-data/1"
    assert data["contact"]["email"] == "Alice@Example.com" and data["contact"]["tags"] == ["vip"]
    assert data["contact"]["attributes"] == {"tier": "gold"}
    assert [o["order_id"] for o in data["orders"]] == ["A-1", "A-2", "A-3"]
    assert data["orders"][0]["total"] == "49.90" and data["orders"][0]["currency"] == "EUR"
    assert [(p["kind"], p["points"]) for p in data["points"]] == [("earn", 50), ("redeem", -20)]
    assert data["events"] == [{"type": "trial_started", "occurred_at": T0.isoformat(), "data": {"product": "Pro"}}]
    assert len(data["mails"]) == 2 and data["mails"][0]["campaign"] == "spring-sale"
    assert data["surveys"][0]["answers"] == {"recommend": 9.0, "why": "Fast delivery to Smitstraat 4"}
    # Nobody else's data.
    assert "bob@example.com" not in response.text


def test_erase_asks_first_then_wipes_and_never_mails_again(client, signer, alice, db, clock):
    url = prefs_url(signer, alice["delivery"])
    confirm = client.get(url + "/erase")
    assert confirm.status_code == 200 and "This cannot be undone" in confirm.text
    with Session(db) as s:
        assert s.get(Contact, alice["id"]).erased_at is None  # looking is not erasing
    response = client.post(url + "/erase", data={"csrf_token": csrf(confirm.text)})
    assert response.status_code == 200 and "Your data is erased" in response.text
    placeholder = f"erased-{alice['id']}@erased.invalid"
    with Session(db) as s:
        contact = s.get(Contact, alice["id"])
        assert (contact.email, contact.email_key, contact.first_name, contact.last_name) == (placeholder, placeholder, "", "")
        assert contact.attributes == {} and contact.language is None and contact.status == "unsubscribed"
        assert contact.erased_at == clock.now()
        assert s.execute(select(func.count()).select_from(ContactTag)).scalar() == 0
        deliveries = {d.id: d for d in s.execute(select(Delivery)).scalars()}
        assert deliveries[alice["delivery"]].email == placeholder and deliveries[alice["delivery"]].data == {}
        assert (deliveries[alice["queued"]].status, deliveries[alice["queued"]].last_error) == ("skipped", "erased")
        assert deliveries[alice["bobs"]].email == "bob@example.com"
        assert s.execute(select(Event.data)).scalars().all() == [{}]
        assert set(s.execute(select(PointsEntry.note)).scalars()) == {""}
        assert s.execute(select(func.sum(PointsEntry.points))).scalar() == 30  # totals survive
        answers = dict(s.execute(select(SurveyAnswer.question, SurveyAnswer.value_text)).all())
        numbers = dict(s.execute(select(SurveyAnswer.question, SurveyAnswer.value_number)).all())
        assert answers["why"] == "" and numbers["recommend"] == 9.0
        assert s.execute(select(func.count()).select_from(Order)).scalar() == 3
        # Only a fingerprint stays: the address itself is nowhere any more.
        assert s.execute(select(Suppression.email_key, Suppression.reason)).all() == \
            [(fingerprint("alice@example.com"), "erased")]
        assert is_suppressed(s, "ALICE@example.com") and not is_suppressed(s, "bob@example.com")
        for table in ("contacts", "deliveries", "suppressions", "events", "points_ledger", "survey_answers"):
            dump = repr(s.execute(select("*").select_from(Contact.metadata.tables[table])).all()).lower()
            assert "alice@example.com" not in dump and "smit" not in dump, table
    # The links still work and say what happened; a second erase is a no-op.
    assert "Your data is erased" in client.get(url).text
    assert client.get(url + "/data.json").status_code == 404
    with session_scope(db) as s:
        assert privacy.erase(s, alice["id"], now=clock.now()) is False


def test_an_erased_address_is_not_imported_again(client, signer, alice, db, settings, tmp_path):
    from tests.sending.test_send import cli

    url = prefs_url(signer, alice["delivery"])
    client.post(url + "/erase", data={"csrf_token": csrf(client.get(url + "/erase").text)})
    csv = tmp_path / "contacts.csv"
    csv.write_text("email,first_name\nalice@EXAMPLE.com,Alice\ncarol@example.com,Carol\n")
    result = cli(settings, "import", "contacts", str(csv))
    assert "1 inserted" in result.output and "1 rejected" in result.output, result.output
    rejects = (tmp_path / "contacts.rejects.csv").read_text()
    assert "erased at its owner's request" in rejects and "alice@EXAMPLE.com" in rejects
    with Session(db) as s:
        assert s.execute(select(Contact.email_key).order_by(Contact.id)).scalars().all()[-1] == "carol@example.com"
        assert s.execute(select(func.count()).where(Contact.email_key == "alice@example.com")).scalar() == 0


def test_a_test_mail_never_opens_the_real_contacts_data(client, signer, alice, db):
    with session_scope(db) as s:
        run = make_run(s, s.get(Campaign, "spring-sale"), occurrence_at=T0 + timedelta(days=30), is_test=True)
        test = make_delivery(s, run, s.get(Contact, alice["id"]))
        test.email = "marketer@shop.example"
        test_id = test.id
    url = prefs_url(signer, test_id)
    html = client.get(url).text
    assert "No subscriber has the address marketer@shop.example" in html
    assert "A-1" not in html and "Alice" not in html
    assert client.get(url + "/data.json").status_code == 404
    assert "No subscriber" in client.get(url + "/erase").text
    token = csrf(client.get(f"/u/{signer.sign('unsubscribe', test_id)}").text)
    assert client.post(url + "/erase", data={"csrf_token": token}).status_code == 404
    with Session(db) as s:
        assert s.get(Contact, alice["id"]).erased_at is None


def test_after_erasure_the_unsubscribe_link_says_so_without_the_placeholder(client, signer, alice, db, clock):
    with session_scope(db) as s:
        privacy.erase(s, alice["id"], now=clock.now())
    url = f"/u/{signer.sign('unsubscribe', alice['delivery'])}"
    html = client.get(url).text
    assert "Your data is erased" in html and "erased.invalid" not in html
    one_click = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and one_click.mimetype == "text/plain"


def test_head_and_options_never_erase(client, signer, alice, db):
    url = prefs_url(signer, alice["delivery"]) + "/erase"
    before = database_state(db)
    assert client.head(url).status_code == 200
    assert client.head(url, data={"confirm": "1"}).status_code == 200
    assert client.options(url).status_code == 200
    assert database_state(db) == before
