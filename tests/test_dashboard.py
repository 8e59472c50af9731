"""Results per campaign kind and value dimension per period, with last-click revenue attribution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from engine.dashboard import dashboard
from engine.db import session_scope
from engine.models import Campaign, Contact, Delivery, DeliveryEvent, Order, Run

UTC = timezone.utc
AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2027, 3, 15, 12, tzinfo=UTC)
FEB = datetime(2027, 2, 10, 9, tzinfo=UTC)
MAR = datetime(2027, 3, 5, 9, tzinfo=UTC)


@pytest.fixture
def world(db):
    """Two campaigns (a sale: economic; points: economic + emotional), mails in February and March."""
    with session_scope(db) as s:
        for cid, kind, values in (("sale", "seasonal_discount", ["economic"]),
                                  ("points", "loyalty_points", ["economic", "emotional"])):
            s.add(Campaign(id=cid, name=cid, kind=kind, values=values, definition={}, source_hash="x", synced_at=NOW))
        s.flush()
        contacts = []
        for i in range(6):
            c = Contact(email=f"c{i}@example.com", email_key=f"c{i}@example.com", created_at=NOW, updated_at=NOW)
            s.add(c)
            contacts.append(c)
        s.flush()
        runs = {}
        for key, cid, at, test in (("sale-feb", "sale", FEB, False), ("sale-mar", "sale", MAR, False),
                                   ("points-mar", "points", MAR, False), ("sale-test", "sale", MAR + timedelta(1), True)):
            run = Run(campaign_id=cid, occurrence_at=at, status="finished", is_test=test, created_at=at)
            s.add(run)
            s.flush()
            runs[key] = run

        def mail(run, contact, *, clicked=None, opened=None, status="sent", events=()):
            d = Delivery(run_id=run.id, contact_id=contact.id, email=contact.email, segment="all", status=status,
                         sent_at=run.occurrence_at if status == "sent" else None, clicked_at=clicked,
                         opened_at=opened or clicked, created_at=run.occurrence_at, updated_at=run.occurrence_at)
            s.add(d)
            s.flush()
            for kind in events:
                s.add(DeliveryEvent(delivery_id=d.id, type=kind, occurred_at=run.occurrence_at, data={}))
            return d

        def order(contact, at, cents, *, status="paid", currency="EUR"):
            s.add(Order(order_id=f"O-{contact.id}-{at:%m%d%H}-{cents}", contact_id=contact.id, placed_at=at,
                        total_cents=cents, currency=currency, status=status, updated_at=at))

        c0, c1, c2, c3, c4, c5 = contacts
        # February sale: c0 clicks and orders 2 days later (credited); c1 only opens; c2 bounces.
        mail(runs["sale-feb"], c0, clicked=FEB + timedelta(hours=1))
        order(c0, FEB + timedelta(days=2), 5000)
        mail(runs["sale-feb"], c1, opened=FEB + timedelta(hours=2))
        mail(runs["sale-feb"], c2, events=("bounced",))
        # March sale: c3 clicks, orders 10 days later (outside the 7-day window: not credited);
        # c4 unsubscribes; c5 is still queued (not sent: not counted).
        mail(runs["sale-mar"], c3, clicked=MAR + timedelta(hours=1))
        order(c3, MAR + timedelta(days=10), 9900)
        mail(runs["sale-mar"], c4, events=("unsubscribed", "complained"))
        mail(runs["sale-mar"], c5, status="queued")
        # March points: c0 clicks the points mail after the sale mail: last click wins its order;
        # a returned order credits nothing; a second order in USD adds to the same conversion.
        mail(runs["points-mar"], c0, clicked=MAR + timedelta(hours=3))
        order(c0, MAR + timedelta(days=1), 2500)
        order(c0, MAR + timedelta(days=2), 1000, currency="USD")
        order(c0, MAR + timedelta(days=3), 7000, status="returned")
        mail(runs["points-mar"], c1, events=("delivered",))
        # A test send never counts.
        mail(runs["sale-test"], c2, clicked=MAR + timedelta(days=1, hours=1))
    return contacts


def test_per_kind_and_month(db, world):
    with Session(db) as s:
        board = dashboard(s, grouping="kind", period="month", periods=2, now=NOW, tz=AMS, attribution_days=7)
    assert [p.label for p in board.periods] == ["2027-02", "2027-03"]
    feb, mar = board.groups["seasonal_discount"]
    assert (feb.sent, feb.delivered, feb.opened, feb.clicked, feb.converted, feb.bounced) == (3, 2, 2, 1, 1, 1)
    assert feb.revenue_cents == {"EUR": 5000} and feb.rate("clicked") == 33.3
    assert (mar.sent, mar.clicked, mar.converted, mar.unsubscribed, mar.complained) == (2, 1, 0, 1, 1)
    assert mar.revenue_cents == {}  # c3's order came after the attribution window
    points_feb, points_mar = board.groups["loyalty_points"]
    assert points_feb.sent == 0 and points_feb.rate("opened") is None
    assert (points_mar.sent, points_mar.delivered, points_mar.converted) == (2, 2, 1)
    assert points_mar.revenue_cents == {"EUR": 2500, "USD": 1000}
    total = board.total("seasonal_discount")
    assert (total.sent, total.converted, total.revenue_cents) == (5, 1, {"EUR": 5000})


def test_per_value_dimension_counts_a_campaign_in_each_of_its_dimensions(db, world):
    with Session(db) as s:
        board = dashboard(s, grouping="value", period="month", periods=2, now=NOW, tz=AMS, attribution_days=7)
    assert list(board.groups) == ["functional", "economic", "emotional", "social"]
    economic, emotional = board.total("economic"), board.total("emotional")
    assert (economic.sent, economic.converted, economic.revenue_cents) == (7, 2, {"EUR": 7500, "USD": 1000})
    assert (emotional.sent, emotional.converted, emotional.revenue_cents) == (2, 1, {"EUR": 2500, "USD": 1000})
    assert board.total("social").sent == 0
    data = board.as_json()
    assert data["groups"]["economic"]["total"]["revenue"] == {"EUR": "75.00", "USD": "10.00"}
    assert data["groups"]["economic"]["total"]["rates"]["converted"] == round(2 * 100 / 7, 1)


def test_a_longer_window_credits_the_late_order(db, world):
    with Session(db) as s:
        board = dashboard(s, grouping="kind", period="month", periods=1, now=NOW, tz=AMS, attribution_days=14)
    (mar,) = board.groups["seasonal_discount"]
    assert (mar.converted, mar.revenue_cents) == (1, {"EUR": 9900})


def test_days_and_weeks_follow_local_midnight(db, world):
    with Session(db) as s:
        days = dashboard(s, grouping="kind", period="day", periods=3, now=NOW, tz=AMS, attribution_days=7)
        weeks = dashboard(s, grouping="kind", period="week", periods=3, now=NOW, tz=AMS, attribution_days=7)
    assert [p.label for p in days.periods] == ["2027-03-13", "2027-03-14", "2027-03-15"]
    assert days.periods[-1].start == datetime(2027, 3, 14, 23, tzinfo=UTC)
    assert [p.label for p in weeks.periods] == ["2027-W09", "2027-W10", "2027-W11"]
    assert weeks.periods[0].start == datetime(2027, 2, 28, 23, tzinfo=UTC)  # Monday 1 March, local midnight
    assert [f.sent for f in weeks.groups["seasonal_discount"]] == [2, 0, 0]  # Friday 5 March
