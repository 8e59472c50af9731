"""Admin pages over the whole ledger: send log, delivery page with its timeline, dashboard with charts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from engine.db import session_scope
from engine.models import Campaign, DeliveryEvent, Order

from .factories import T0, make_campaign, make_contact, make_delivery, make_run


@pytest.fixture
def ledger(db):
    """A sale mailed to Anna (clicked, then she ordered) and to Bob (bounced), and Carol queued."""
    with session_scope(db) as s:
        sale = make_campaign(s)
        run = make_run(s, sale, status="finished")
        anna, bob, carol = (make_contact(s, e) for e in ("anna@example.com", "bob@example.com", "carol@example.com"))
        anna.first_name = "<script>alert(1)</script>"
        a = make_delivery(s, run, anna, status="sent", sent_at=T0, clicked_at=T0 + timedelta(hours=1),
                          opened_at=T0 + timedelta(hours=1), message_id="<1.1.abc@example.com>", provider="smtp",
                          provider_message_id="250 2.0.0 queued as 4F2")
        b = make_delivery(s, run, bob, status="sent", sent_at=T0)
        s.add(DeliveryEvent(delivery_id=b.id, type="bounced", occurred_at=T0 + timedelta(minutes=5),
                            data={"reason": "550 5.1.1 <bob@example.com>: user unknown"}))
        s.add(DeliveryEvent(delivery_id=a.id, type="clicked", occurred_at=T0 + timedelta(hours=1),
                            data={"url": "https://shop.example.com/spring"}))
        queued = make_delivery(s, make_run(s, sale, occurrence_at=T0 + timedelta(days=1)), carol)
        queued.created_at = T0 + timedelta(days=1)
        s.add(Order(order_id="A-1", contact_id=anna.id, placed_at=T0 + timedelta(days=1), total_cents=4990,
                    currency="EUR", status="paid", updated_at=T0))
        return {"anna": a.id, "bob": b.id}


def test_the_send_log_finds_one_address_and_pages_by_cursor(admin_client, ledger):
    html = admin_client.get("/admin/log").text
    assert re.findall(r'<tr id="d(\d+)">', html) == ["3", "2", "1"]  # newest first
    found = admin_client.get("/admin/log?email=BOB@example.com").text
    assert re.findall(r'<tr id="d(\d+)">', found) == [str(ledger["bob"])]
    failed = admin_client.get("/admin/log?status=queued&campaign=spring-sale").text
    assert re.findall(r'<tr id="d(\d+)">', failed) == ["3"]
    assert admin_client.get("/admin/log?status=nope").status_code == 400
    assert admin_client.get("/admin/log?from=yesterday").status_code == 400
    day = (T0 + timedelta(days=1)).date().isoformat()
    assert re.findall(r'<tr id="d(\d+)">', admin_client.get(f"/admin/log?from={day}").text) == ["3"]


def test_the_delivery_page_shows_why_a_message_bounced(admin_client, ledger):
    html = admin_client.get(f"/admin/deliveries/{ledger['bob']}").text
    assert "550 5.1.1 &lt;bob@example.com&gt;: user unknown" in html
    assert re.findall(r'class="event event-(\w+)"', html) == ["queued", "sent", "bounced"]
    anna = admin_client.get(f"/admin/deliveries/{ledger['anna']}").text
    assert "&lt;1.1.abc@example.com&gt;" in anna and "250 2.0.0 queued as 4F2" in anna
    assert "url=https://shop.example.com/spring" in anna
    assert admin_client.get("/admin/deliveries/999999").status_code == 404


def test_the_dashboard_compares_value_dimensions_with_charts(admin_client, ledger, db):
    with session_scope(db) as s:
        s.add(Campaign(id="points", name="Points", kind="loyalty_points", values=["emotional"], definition={},
                       source_hash="x", synced_at=T0))
    html = admin_client.get("/admin/dashboard?group=value&period=month&periods=2").text
    economic = html[html.index('data-group="economic"'):html.index('data-group="emotional"')]
    assert "49.90 EUR" in economic and "(50.0%)" in economic  # 1 of 2 sent converted
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 5 and "<script" not in html
    data = admin_client.get("/admin/dashboard.json?group=kind&period=month&periods=1").get_json()
    total = data["groups"]["seasonal_discount"]["total"]
    assert (total["sent"], total["clicked"], total["converted"], total["bounced"]) == (2, 1, 1, 1)
    assert total["revenue"] == {"EUR": "49.90"}
    assert admin_client.get("/admin/dashboard?group=colour").status_code == 400


def test_hostile_contact_data_is_escaped(admin_client, ledger, db):
    with session_scope(db) as s:
        from engine.models import Delivery

        s.get(Delivery, ledger["anna"]).email = '"><script>alert(1)</script>@example.com'
    html = admin_client.get("/admin/log").text + admin_client.get(f"/admin/deliveries/{ledger['anna']}").text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_the_pages_need_a_login(client, ledger):
    for path in ("/admin/log", f"/admin/deliveries/{ledger['bob']}", "/admin/dashboard", "/admin/dashboard.json"):
        response = client.get(path)
        assert response.status_code in (302, 401), path
