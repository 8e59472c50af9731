"""LTV = S × C × P × t per contact, in SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select
from sqlmodel import Session

from engine.config import LtvSettings
from engine.ltv import DAYS_PER_MONTH, contact_stats, spend_since, stats_for_contacts
from engine.models import Contact, Order

NOW = datetime(2027, 1, 1, 9, 0, tzinfo=timezone.utc)
_order_numbers = itertools.count(1)


def add_contact(session: Session, email: str, **fields) -> Contact:
    contact = Contact(email=email, email_key=email.lower(), created_at=NOW - timedelta(days=400), updated_at=NOW,
                      **fields)
    session.add(contact)
    session.flush()
    return contact


def add_order(session: Session, contact: Contact, *, at: datetime, total: str, margin: float | None = None,
              status: str = "paid", currency: str = "EUR") -> None:
    cents = int(Decimal(total) * 100)
    session.add(Order(order_id=f"o-{next(_order_numbers)}", contact_id=contact.id, placed_at=at, total_cents=cents,
                      currency=currency, margin=margin, status=status, updated_at=NOW))
    session.flush()


def with_ltv(settings, **changes):
    return settings.model_copy(update={"ltv": LtvSettings(**{**settings.ltv.model_dump(), **changes})})


def test_fitness_example_from_the_seeds(settings, db):
    # $20 a month for 3 years: S = 20, C = 1 per month, t = 36 months → $720 revenue.
    with Session(db) as session:
        member = add_contact(session, "gym@example.com")
        start = NOW - timedelta(days=36 * DAYS_PER_MONTH)
        for month in range(36):
            add_order(session, member, at=start + timedelta(days=month * DAYS_PER_MONTH), total="20.00", margin=0.25)
        session.commit()
        stats = stats_for_contacts(session, [member.id], now=NOW, settings=settings)[member.id]

    assert stats.orders_count == 36
    assert stats.revenue == Decimal("720.00")
    assert stats.avg_order_value == Decimal("20.00")
    assert stats.purchases_per_month == pytest.approx(1.0)
    assert stats.margin == pytest.approx(0.25)
    assert stats.tenure_months == pytest.approx(36.0)
    assert stats.lifetime_months == pytest.approx(36.0)
    # S × C × P × t = 20 × 1 × 0.25 × 36
    assert stats.ltv == Decimal("180.00")
    assert float(stats.avg_order_value) * stats.purchases_per_month * stats.margin * stats.lifetime_months == \
        pytest.approx(180.0)


def test_lifetime_months_setting_replaces_observed_tenure(settings, db):
    with Session(db) as session:
        member = add_contact(session, "gym@example.com")
        start = NOW - timedelta(days=36 * DAYS_PER_MONTH)
        for month in range(36):
            add_order(session, member, at=start + timedelta(days=month * DAYS_PER_MONTH), total="20.00", margin=0.25)
        session.commit()
        stats = stats_for_contacts(session, [member.id], now=NOW, settings=with_ltv(settings, lifetime_months=60))
    assert stats[member.id].tenure_months == pytest.approx(36.0)
    assert stats[member.id].lifetime_months == 60.0
    assert stats[member.id].ltv == Decimal("300.00")  # 20 × 1 × 0.25 × 60


def test_factors_on_a_hand_computed_example(settings, db):
    with Session(db) as session:
        alice = add_contact(session, "alice@example.com")
        add_order(session, alice, at=NOW - timedelta(days=60), total="100.00", margin=0.5)
        add_order(session, alice, at=NOW - timedelta(days=30), total="50.00")  # default margin 0.3
        add_order(session, alice, at=NOW - timedelta(days=90), total="80.00", margin=0.9, status="returned")
        add_order(session, alice, at=NOW - timedelta(days=10), total="40.00", margin=0.9, status="cancelled")
        session.commit()
        stats = stats_for_contacts(session, [alice.id], now=NOW, settings=settings)[alice.id]

    tenure = 60 / DAYS_PER_MONTH
    assert stats.orders_count == 2
    assert stats.revenue == Decimal("150.00")
    assert stats.avg_order_value == Decimal("75.00")
    assert stats.purchases_per_month == pytest.approx(2 / tenure)
    assert stats.margin == pytest.approx((100 * 0.5 + 50 * 0.3) / 150)
    assert stats.tenure_months == pytest.approx(tenure)
    assert stats.lifetime_months == pytest.approx(tenure)
    assert stats.ltv == Decimal("65.00")  # margin-weighted revenue when t is the observed tenure
    assert stats.first_order_at == NOW - timedelta(days=60)
    assert stats.last_order_at == NOW - timedelta(days=30)
    assert stats.first_order_at.tzinfo is not None
    assert stats.days_since_last_order == pytest.approx(30.0)


def test_tenure_is_at_least_one_month(settings, db):
    with Session(db) as session:
        bob = add_contact(session, "bob@example.com")
        add_order(session, bob, at=NOW - timedelta(days=10), total="40.00", margin=0.3)
        session.commit()
        observed = stats_for_contacts(session, [bob.id], now=NOW, settings=settings)[bob.id]
        yearly = stats_for_contacts(session, [bob.id], now=NOW, settings=with_ltv(settings, lifetime_months=12))[bob.id]
    assert observed.tenure_months == 1.0
    assert observed.purchases_per_month == pytest.approx(1.0)
    assert observed.ltv == Decimal("12.00")
    assert yearly.ltv == Decimal("144.00")  # 40 × 1 × 0.3 × 12


def test_default_margin_comes_from_settings(settings, db):
    with Session(db) as session:
        carol = add_contact(session, "carol@example.com")
        add_order(session, carol, at=NOW - timedelta(days=100), total="200.00")
        add_order(session, carol, at=NOW - timedelta(days=50), total="100.00", margin=0.1)
        session.commit()
        stats = stats_for_contacts(session, [carol.id], now=NOW, settings=with_ltv(settings, default_margin=0.4))
    assert stats[carol.id].margin == pytest.approx((200 * 0.4 + 100 * 0.1) / 300)
    assert stats[carol.id].ltv == Decimal("90.00")


def test_contacts_without_countable_orders_have_zero_ltv(settings, db):
    with Session(db) as session:
        nobody = add_contact(session, "nobody@example.com")
        voided = add_contact(session, "voided@example.com")
        add_order(session, voided, at=NOW - timedelta(days=5), total="500.00", status="returned")
        session.commit()
        stats = stats_for_contacts(session, [nobody.id, voided.id, 999_999], now=NOW, settings=settings)

    assert set(stats) == {nobody.id, voided.id}  # unknown ids are left out
    for contact_id in (nobody.id, voided.id):
        row = stats[contact_id]
        assert (row.orders_count, row.revenue, row.avg_order_value, row.ltv) == (0, Decimal("0.00"), Decimal("0.00"),
                                                                                 Decimal("0.00"))
        assert row.purchases_per_month == 0.0 and row.tenure_months == 0.0
        assert row.margin == pytest.approx(settings.ltv.default_margin)
        assert row.last_order_at is None and row.days_since_last_order is None


def test_contact_stats_is_a_subquery_with_every_factor(settings, db):
    with Session(db) as session:
        for n in range(3):
            contact = add_contact(session, f"c{n}@example.com")
            add_order(session, contact, at=NOW - timedelta(days=40), total=f"{100 * (n + 1)}.00", margin=0.5)
        add_contact(session, "none@example.com")
        session.commit()
        stats = contact_stats(now=NOW, settings=settings)
        assert {"contact_id", "orders_count", "revenue", "avg_order_value", "purchases_per_month", "margin",
                "tenure_months", "lifetime_months", "ltv", "first_order_at", "last_order_at",
                "days_since_last_order"} <= set(stats.c.keys())
        count, total = session.execute(select(func.count(), func.sum(stats.c.ltv))).one()
        assert count == 4
        assert Decimal(str(total)) == Decimal("300")  # (100 + 200 + 300) × 0.5
        top = session.execute(select(stats.c.contact_id).where(stats.c.ltv >= 100).order_by(stats.c.contact_id))
        assert len(top.all()) == 2


def test_stats_for_many_contacts_is_one_query(settings, db):
    with Session(db) as session:
        ids = []
        for n in range(30):
            contact = add_contact(session, f"c{n}@example.com")
            add_order(session, contact, at=NOW - timedelta(days=n + 1), total="10.00")
            ids.append(contact.id)
        session.commit()
        statements = []
        event.listen(db, "before_cursor_execute", lambda *args: statements.append(args[2]))
        stats = stats_for_contacts(session, ids, now=NOW, settings=settings)
    assert len(stats) == 30
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_spend_since_counts_only_recent_countable_orders(settings, db):
    since = NOW - timedelta(days=365)
    with Session(db) as session:
        dana = add_contact(session, "dana@example.com")
        add_order(session, dana, at=since - timedelta(seconds=1), total="1000.00")  # before the window
        add_order(session, dana, at=since, total="12.34")  # the boundary counts
        add_order(session, dana, at=NOW - timedelta(days=3), total="87.66")
        add_order(session, dana, at=NOW - timedelta(days=2), total="50.00", status="cancelled")
        idle = add_contact(session, "idle@example.com")
        session.commit()
        spend = spend_since(session, [dana.id, idle.id], since)
    assert spend == {dana.id: Decimal("100.00"), idle.id: Decimal("0.00")}


def test_naive_now_is_refused(settings):
    with pytest.raises(ValueError):
        contact_stats(now=datetime(2027, 1, 1), settings=settings)


@pytest.mark.parametrize("lifetime_months", [0, 24])
def test_per_contact_totals_give_the_same_numbers(settings, db, lifetime_months):
    settings = with_ltv(settings, lifetime_months=lifetime_months)
    with Session(db) as session:
        for n in range(12):
            contact = add_contact(session, f"c{n}@example.com")
            for k in range(n % 4):
                add_order(session, contact, at=NOW - timedelta(days=7 * n + 40 * k + 1), total=f"{13 * n + k}.{n}5",
                          margin=None if k % 2 else 0.1 * (n % 5), status="returned" if (n + k) % 5 == 0 else "paid")
        session.commit()

        def rows(**kwargs):
            stats = contact_stats(now=NOW, settings=settings, **kwargs)
            return [tuple(r) for r in session.execute(select(stats).order_by(stats.c.contact_id))]

        grouped, per_contact = rows(), rows(per_contact=True)
        assert len(grouped) == 12
        assert per_contact == grouped
        assert rows(after_id=grouped[5][0], per_contact=True) == grouped[6:]
