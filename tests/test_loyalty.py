"""The points ledger (engine.loyalty): earning, welcome, reversal, FIFO expiry, redemption, statements, crossings."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal

import pytest
from sqlalchemy import func, insert, select, update
from sqlmodel import Session

from engine import loyalty
from engine.clock import FixedClock
from engine.db import session_scope
from engine.importing import upsert_orders
from engine.models import Contact, Order, PointsEntry
from tests.support.data import add_contacts


def T(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def program(**overrides) -> loyalty.Program:
    values = {"points_per_unit": Decimal("1"), "welcome_bonus": 0, "expiry_months": 0, "rewards": ()}
    return loyalty.Program(**{**values, **overrides})


def contacts(db, n: int) -> list[int]:
    add_contacts(db, n)
    with Session(db) as s:
        return list(s.execute(select(Contact.id).order_by(Contact.id)).scalars())


def add_orders(db, *orders) -> None:
    """Insert (contact_id, order_id, placed_at, total, status) rows directly."""
    with db.begin() as conn:
        conn.execute(insert(Order), [
            {"order_id": number, "contact_id": cid, "placed_at": placed, "total_cents": int(Decimal(total) * 100),
             "currency": "EUR", "status": status, "updated_at": placed}
            for cid, number, placed, total, status in orders
        ])


def set_status(db, order_id: str, status: str) -> None:
    with db.begin() as conn:
        conn.execute(update(Order).where(Order.order_id == order_id).values(status=status))


def sync(db, prog: loyalty.Program, now: datetime) -> loyalty.SyncResult:
    with session_scope(db) as s:
        return loyalty.sync_points(s, prog, now=now)


def balance(db, contact_id: int, at: datetime) -> int:
    with Session(db) as s:
        return loyalty.balance(s, [contact_id], at=at)[contact_id]


def ledger(db, contact_id: int | None = None) -> list[tuple[str, int, str]]:
    query = select(PointsEntry.kind, PointsEntry.points, PointsEntry.source_key).order_by(PointsEntry.id)
    if contact_id is not None:
        query = query.where(PointsEntry.contact_id == contact_id)
    with Session(db) as s:
        return [tuple(r) for r in s.execute(query)]


def redeem(db, contact_id: int, points: int, now: datetime, reference: str) -> loyalty.Redemption:
    with session_scope(db) as s:
        return loyalty.redeem(s, contact_id, points, now=now, reference=reference)


def running_balances_never_negative(db) -> bool:
    """Every contact's balance after every entry, in ledger order, is at least 0."""
    with Session(db) as s:
        rows = s.execute(select(PointsEntry.contact_id, PointsEntry.points)
                         .order_by(PointsEntry.contact_id, PointsEntry.occurred_at, PointsEntry.id)).all()
    running: dict[int, int] = {}
    for cid, points in rows:
        running[cid] = running.get(cid, 0) + points
        if running[cid] < 0:
            return False
    return True


# -- earning ---------------------------------------------------------------------------------------

def test_points_are_floor_of_total_times_rate_for_countable_orders_only(db):
    a, b = contacts(db, 2)
    add_orders(db,
               (a, "A-1", T(2027, 1, 5), "19.99", "paid"),
               (a, "A-2", T(2027, 1, 6), "0.39", "delivered"),
               (a, "A-3", T(2027, 1, 7), "100.00", "placed"),
               (a, "A-4", T(2027, 1, 8), "50.00", "returned"),
               (b, "B-1", T(2027, 1, 9), "80.00", "cancelled"),
               (b, "B-2", T(2027, 3, 1), "80.00", "paid"))  # placed after `now`: not yet
    result = sync(db, program(points_per_unit=Decimal("2.5")), T(2027, 2, 1))
    assert result.earned == 3
    assert ledger(db, a) == [("earn", 49, "earn:order:1"), ("earn", 0, "earn:order:2"), ("earn", 250, "earn:order:3")]
    assert balance(db, a, T(2027, 2, 1)) == 299 and balance(db, b, T(2027, 2, 1)) == 0
    # The future order is credited once its time has come, dated when it was placed.
    sync(db, program(points_per_unit=Decimal("2.5")), T(2027, 3, 1))
    assert balance(db, b, T(2027, 3, 1)) == 200 and balance(db, b, T(2027, 2, 28)) == 0


def test_earned_points_match_the_formula_for_many_orders(db):
    ids = contacts(db, 5)
    rng = random.Random(7)
    rate = Decimal("0.35")
    orders = [(rng.choice(ids), f"R-{i}", T(2027, 1, 1) + timedelta(hours=i), f"{rng.randint(0, 99999) / 100:.2f}",
               rng.choice(["placed", "paid", "shipped", "delivered", "returned", "cancelled"])) for i in range(200)]
    add_orders(db, *orders)
    sync(db, program(points_per_unit=rate), T(2027, 6, 1))
    expected: dict[int, int] = dict.fromkeys(ids, 0)
    for cid, _, _, total, status in orders:
        if status not in ("returned", "cancelled"):
            expected[cid] += int((Decimal(total) * rate).to_integral_value(rounding=ROUND_FLOOR))
    with Session(db) as s:
        assert loyalty.balance(s, ids, at=T(2027, 6, 1)) == expected


def test_orders_before_the_program_start_earn_nothing(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "O-1", T(2026, 12, 31, 23), "40", "paid"), (a, "O-2", T(2027, 1, 1, 1), "60", "paid"))
    sync(db, program(starts_at=T(2027, 1, 1), welcome_bonus=10), T(2027, 2, 1))
    assert ledger(db, a) == [("earn", 60, "earn:order:2"), ("welcome", 10, f"welcome:{a}")]


def test_syncing_twice_or_reimporting_orders_never_doubles(db, settings):
    a, b = contacts(db, 2)
    rows = [{"order_id": "W-1", "email": "user0@example.com", "placed_at": "2027-01-10T10:00:00+00:00", "total": "25.50"},
            {"order_id": "W-2", "email": "user1@example.com", "placed_at": "2027-01-11T10:00:00+00:00", "total": "74.99",
             "status": "delivered"}]
    clock = FixedClock(T(2027, 2, 1))
    prog = program(welcome_bonus=50, expiry_months=12)
    with session_scope(db) as s:
        upsert_orders(s, rows, settings=settings, clock=clock)
    first = sync(db, prog, T(2027, 2, 1))
    assert (first.earned, first.welcomed) == (2, 2)
    assert sync(db, prog, T(2027, 2, 1)).total == 0
    with session_scope(db) as s:
        upsert_orders(s, rows, settings=settings, clock=clock)  # the same file again
    assert sync(db, prog, T(2027, 2, 2)).total == 0
    assert len(ledger(db)) == 4
    assert balance(db, a, T(2027, 2, 2)) == 25 + 50 and balance(db, b, T(2027, 2, 2)) == 74 + 50


# -- welcome bonus ---------------------------------------------------------------------------------

def test_welcome_bonus_comes_once_with_the_first_countable_order_and_stays(db):
    a, b, c = contacts(db, 3)
    add_orders(db,
               (a, "A-1", T(2027, 1, 3), "10", "paid"), (a, "A-2", T(2027, 1, 9), "10", "paid"),
               (b, "B-1", T(2027, 1, 4), "10", "cancelled"))
    prog = program(welcome_bonus=25, expiry_months=6)
    sync(db, prog, T(2027, 2, 1))
    with Session(db) as s:
        welcome = s.execute(select(PointsEntry).where(PointsEntry.kind == "welcome")).scalars().all()
    assert [(w.contact_id, w.points, w.occurred_at, w.expires_at) for w in welcome] == \
        [(a, 25, T(2027, 1, 3), T(2027, 7, 3))]
    set_status(db, "A-1", "returned")
    sync(db, prog, T(2027, 2, 2))
    assert balance(db, a, T(2027, 2, 2)) == 10 + 25  # A-1 reversed, the welcome kept
    assert balance(db, b, T(2027, 2, 2)) == 0 and balance(db, c, T(2027, 2, 2)) == 0


# -- reversal --------------------------------------------------------------------------------------

def test_a_returned_order_gives_its_points_back_once(db, settings):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "R-1", T(2027, 1, 5), "120", "delivered"), (a, "R-2", T(2027, 1, 6), "30", "paid"))
    sync(db, program(), T(2027, 1, 10))
    with session_scope(db) as s:  # the shop re-posts the order as returned
        upsert_orders(s, [{"order_id": "R-1", "email": "user0@example.com", "placed_at": "2027-01-05T00:00:00+00:00",
                           "total": "120", "status": "returned"}], settings=settings, clock=FixedClock(T(2027, 1, 20)))
    assert sync(db, program(), T(2027, 1, 20)).reversed == 1
    assert sync(db, program(), T(2027, 1, 21)).total == 0
    assert ledger(db, a)[-1] == ("reverse", -120, "reverse:order:1")
    assert balance(db, a, T(2027, 1, 19)) == 150 and balance(db, a, T(2027, 1, 20)) == 30
    # A reversed order stays reversed, whatever its status says later.
    set_status(db, "R-1", "delivered")
    assert sync(db, program(), T(2027, 1, 22)).total == 0 and balance(db, a, T(2027, 1, 22)) == 30


def test_a_returned_order_worth_zero_points_is_settled_once(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "TINY", T(2027, 1, 5), "0.40", "paid"))
    sync(db, program(), T(2027, 1, 6))
    set_status(db, "TINY", "cancelled")
    assert sync(db, program(), T(2027, 1, 7)).reversed == 1
    with Session(db) as s:
        assert loyalty._contacts_to_settle(s, now=T(2027, 1, 8), contact_ids=None) == []
    assert ledger(db, a) == [("earn", 0, "earn:order:1"), ("reverse", 0, "reverse:order:1")]


def test_a_reversal_never_takes_the_balance_below_zero(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "A", T(2027, 1, 1), "100", "paid"), (a, "B", T(2027, 1, 2), "50", "paid"))
    sync(db, program(), T(2027, 1, 3))
    redeem(db, a, 120, T(2027, 1, 4), "voucher-1")
    set_status(db, "A", "returned")
    sync(db, program(), T(2027, 1, 5))
    assert ledger(db, a)[-1] == ("reverse", -30, "reverse:order:1")  # 100 asked, 30 left: the rest is forgiven
    assert balance(db, a, T(2027, 1, 5)) == 0 and running_balances_never_negative(db)


def test_reversing_an_order_whose_points_expired_takes_nothing_else(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "OLD", T(2026, 1, 10), "100", "paid"), (a, "NEW", T(2026, 12, 1), "70", "paid"))
    prog = program(expiry_months=12)
    sync(db, prog, T(2027, 2, 1))
    assert balance(db, a, T(2027, 2, 1)) == 70  # OLD expired on 10 January
    set_status(db, "OLD", "returned")
    sync(db, prog, T(2027, 2, 2))
    assert ledger(db, a)[-1] == ("reverse", 0, "reverse:order:1")
    assert balance(db, a, T(2027, 2, 2)) == 70


# -- expiry ----------------------------------------------------------------------------------------

def test_points_expire_exactly_n_months_after_the_order(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "E-1", T(2026, 1, 15, 10), "100", "paid"))
    prog = program(expiry_months=12)
    assert sync(db, prog, T(2027, 1, 15, 9, 59)).expired == 0
    assert balance(db, a, T(2027, 1, 15, 9, 59)) == 100
    assert sync(db, prog, T(2027, 1, 15, 10)).expired == 1
    with Session(db) as s:
        entry = s.execute(select(PointsEntry).where(PointsEntry.kind == "expire")).scalar_one()
    assert (entry.points, entry.occurred_at, entry.source_key) == (-100, T(2027, 1, 15, 10), "expire:earn:order:1")
    assert balance(db, a, T(2027, 1, 15, 10)) == 0
    assert sync(db, prog, T(2027, 3, 1)).total == 0


def test_expiry_stops_at_the_last_day_of_a_shorter_month(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "M-1", T(2027, 1, 31, 8, 30), "10", "paid"), (a, "M-2", T(2027, 8, 31, 8, 30), "10", "paid"))
    sync(db, program(expiry_months=1), T(2027, 9, 1))
    with Session(db) as s:
        ends = s.execute(select(PointsEntry.expires_at).where(PointsEntry.kind == "earn")
                         .order_by(PointsEntry.id)).scalars().all()
    assert ends == [T(2027, 2, 28, 8, 30), T(2027, 9, 30, 8, 30)]
    assert loyalty.add_months(T(2027, 1, 31, 8, 30), 1) == T(2027, 2, 28, 8, 30)
    assert loyalty.add_months(T(2024, 2, 29), 12) == T(2025, 2, 28)


def test_spending_uses_the_points_that_expire_first(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "JAN", T(2026, 1, 10), "100", "paid"), (a, "JUL", T(2026, 7, 10), "100", "paid"))
    prog = program(expiry_months=12)
    sync(db, prog, T(2026, 9, 1))
    redeem(db, a, 150, T(2026, 9, 1), "voucher-9")
    with Session(db) as s:
        soon = loyalty.statement(s, [a], since=None, now=T(2027, 6, 20), expiring_within=timedelta(days=30))[a]
    assert (soon.expiring, soon.expiring_at) == (50, T(2027, 7, 10))
    sync(db, prog, T(2027, 1, 15))
    assert ledger(db, a)[-1] == ("expire", 0, "expire:earn:order:1")  # JAN was spent first
    assert balance(db, a, T(2027, 1, 15)) == 50
    sync(db, prog, T(2027, 7, 15))
    assert ledger(db, a)[-1] == ("expire", -50, "expire:earn:order:2")
    assert balance(db, a, T(2027, 7, 15)) == 0 and running_balances_never_negative(db)


def test_a_late_order_past_its_expiry_is_credited_and_expired_without_going_negative(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "NOW", T(2027, 3, 1), "40", "paid"))
    prog = program(expiry_months=1)
    sync(db, prog, T(2027, 3, 2))
    redeem(db, a, 40, T(2027, 3, 2), "r-1")
    add_orders(db, (a, "LATE", T(2027, 1, 5), "25", "paid"))  # imported months late
    sync(db, prog, T(2027, 3, 3))
    kinds = [(k, p) for k, p, _ in ledger(db, a)]
    assert kinds[-2:] == [("earn", 25), ("expire", -25)]
    assert balance(db, a, T(2027, 3, 3)) == 0 and running_balances_never_negative(db)


def test_the_balance_never_goes_negative_over_a_random_history(db):
    ids = contacts(db, 4)
    rng = random.Random(2027)
    prog = program(points_per_unit=Decimal("1.5"), welcome_bonus=20, expiry_months=3)
    now, number, placed = T(2026, 1, 1), 0, []
    for _ in range(120):
        now += timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 23))
        action = rng.random()
        if action < 0.5:
            number += 1
            lag = timedelta(days=rng.choice([0, 0, 0, 3, 40]))  # some orders arrive late
            add_orders(db, (rng.choice(ids), f"N-{number}", now - lag, f"{rng.randint(100, 20000) / 100:.2f}", "paid"))
            placed.append(f"N-{number}")
        elif action < 0.65 and placed:
            set_status(db, rng.choice(placed), rng.choice(["returned", "cancelled"]))
        elif action < 0.85:
            cid = rng.choice(ids)
            try:
                redeem(db, cid, rng.randint(1, 150), now, f"r-{now.isoformat()}")
            except loyalty.InsufficientPoints as exc:
                assert exc.requested > exc.balance
        sync(db, prog, now)
        with Session(db) as s:
            assert min(loyalty.balance(s, ids, at=now).values()) >= 0
    assert running_balances_never_negative(db)
    # Every countable order credited exactly once with the formula; every void one reversed once.
    with Session(db) as s:
        orders = s.execute(select(Order.id, Order.total_cents, Order.status)).all()
        entries = s.execute(select(PointsEntry.kind, PointsEntry.order_id, PointsEntry.points)
                            .where(PointsEntry.kind.in_(["earn", "reverse"]))).all()
        assert s.execute(select(func.count()).select_from(PointsEntry)
                         .group_by(PointsEntry.source_key).having(func.count() > 1)).first() is None
    earned = {order_id: points for kind, order_id, points in entries if kind == "earn"}
    reversed_ = {order_id for kind, order_id, _ in entries if kind == "reverse"}
    for order_id, cents, status in orders:
        assert earned.get(order_id) == prog.points_for(Decimal(cents) / 100) or order_id not in earned
        assert (order_id in reversed_) == (status in ("returned", "cancelled") and order_id in earned)


# -- redemption and adjustments --------------------------------------------------------------------

def test_redeem_refuses_a_short_balance_and_counts_each_reference_once(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "X", T(2027, 1, 1), "300", "paid"))
    sync(db, program(), T(2027, 1, 2))
    with pytest.raises(loyalty.InsufficientPoints) as short:
        redeem(db, a, 301, T(2027, 1, 3), "too-much")
    assert (short.value.balance, short.value.requested) == (300, 301)
    first = redeem(db, a, 200, T(2027, 1, 3), "voucher-17")
    again = redeem(db, a, 200, T(2027, 1, 4), "voucher-17")  # a retry
    assert (first.created, first.balance) == (True, 100) and (again.created, again.entry_id) == (False, first.entry_id)
    assert balance(db, a, T(2027, 1, 4)) == 100
    with pytest.raises(loyalty.PointsError, match="already used"):
        redeem(db, a, 50, T(2027, 1, 4), "voucher-17")
    with pytest.raises(loyalty.PointsError):
        redeem(db, a, 0, T(2027, 1, 4), "zero")
    with pytest.raises(loyalty.PointsError):
        redeem(db, a, 5, T(2027, 1, 4), " ")


def test_redeem_first_expires_what_is_due(db):
    (a,) = contacts(db, 1)
    add_orders(db, (a, "X", T(2026, 1, 1), "100", "paid"))
    sync(db, program(expiry_months=12), T(2026, 6, 1))
    with pytest.raises(loyalty.InsufficientPoints) as short:
        redeem(db, a, 50, T(2027, 1, 2), "after-expiry")  # no sync ran since the points expired
    assert short.value.balance == 0


def test_adjust_adds_points_and_never_overdraws(db):
    (a,) = contacts(db, 1)
    with session_scope(db) as s:
        added = loyalty.adjust(s, a, 40, now=T(2027, 1, 1), reference="goodwill-1", note="late delivery")
    assert added.balance == 40
    with session_scope(db) as s, pytest.raises(loyalty.InsufficientPoints):
        loyalty.adjust(s, a, -41, now=T(2027, 1, 2), reference="fix-1")
    with session_scope(db) as s:
        loyalty.adjust(s, a, -15, now=T(2027, 1, 2), reference="fix-2")
    assert balance(db, a, T(2027, 1, 2)) == 25


# -- statements ------------------------------------------------------------------------------------

def test_statement_shows_balance_movements_since_and_expiring_points(db):
    a, b = contacts(db, 2)
    prog = program(expiry_months=2)
    add_orders(db, (a, "S-1", T(2027, 1, 10), "100", "paid"))
    sync(db, prog, T(2027, 1, 31))  # the first statement went out then
    add_orders(db, (a, "S-2", T(2027, 2, 10), "50", "paid"),
               (a, "S-0", T(2027, 1, 20), "12", "paid"))  # placed before, imported after that statement
    sync(db, prog, T(2027, 2, 14))
    redeem(db, a, 30, T(2027, 2, 15), "v-1")
    with Session(db) as s:
        found = loyalty.statement(s, [a, b], since={a: T(2027, 1, 31), b: None}, now=T(2027, 2, 28),
                                  expiring_within=timedelta(days=30))
    st = found[a]
    assert (st.balance, st.earned, st.spent, st.expired, st.reversed) == (132, 62, 30, 0, 0)
    # FIFO: the 30 came out of S-1 (70 left, expiring 10 March); S-0's 12 expire on 20 March.
    assert (st.expiring, st.expiring_at) == (82, T(2027, 3, 10))
    assert [(e.kind, e.points, e.order) for e in st.recent] == \
        [("redeem", -30, None), ("earn", 50, "S-2"), ("earn", 12, "S-0"), ("earn", 100, "S-1")]
    assert st.active and not found[b].active and found[b].balance == 0


# -- rewards ---------------------------------------------------------------------------------------

REWARDS = (loyalty.Reward(100, "€2 voucher"), loyalty.Reward(200, "€5 voucher"))


def test_next_reward_and_what_a_balance_reaches():
    prog = program(rewards=tuple(reversed(REWARDS)))
    assert prog.next_reward(99).points == 100 and prog.next_reward(100).points == 200
    assert prog.next_reward(200) is None
    assert [r.points for r in prog.reached(250)] == [100, 200]


def test_each_threshold_crossing_is_one_stable_key(db):
    a, b = contacts(db, 2)
    prog = program(rewards=REWARDS)
    add_orders(db, (a, "C-1", T(2027, 1, 1), "60", "paid"), (a, "C-2", T(2027, 1, 5), "50", "paid"),
               (a, "C-3", T(2027, 1, 10), "150", "paid"), (b, "D-1", T(2027, 1, 7), "250", "paid"))
    sync(db, prog, T(2027, 1, 31))

    def crossings(since, now):
        with Session(db) as s:
            return [(c.contact_id, c.key, c.at, c.balance, [r.points for r in c.crossed])
                    for c in loyalty.reward_crossings(s, prog, since=since, now=now)]

    first = crossings(T(2026, 12, 31), T(2027, 1, 31))
    assert first == [(a, f"reward:{a}:100:1", T(2027, 1, 5), 110, [100]),
                     (b, f"reward:{b}:200:1", T(2027, 1, 7), 250, [100, 200]),  # one entry, both: one mail
                     (a, f"reward:{a}:200:1", T(2027, 1, 10), 260, [200])]
    assert crossings(T(2026, 12, 31), T(2027, 1, 31)) == first
    assert crossings(T(2027, 1, 6), T(2027, 1, 31)) == first[1:]  # only those after `since`
    # Redeem, save up again: crossing 100 once more is crossing number 2.
    redeem(db, a, 200, T(2027, 2, 1), "v-a")
    add_orders(db, (a, "C-4", T(2027, 2, 10), "50", "paid"))
    sync(db, prog, T(2027, 2, 10))
    assert crossings(T(2027, 1, 31), T(2027, 2, 10)) == [(a, f"reward:{a}:100:2", T(2027, 2, 10), 110, [100])]
    # A crossing the balance no longer holds is not mailed.
    redeem(db, b, 200, T(2027, 2, 11), "v-b")
    assert [c[1] for c in crossings(T(2026, 12, 31), T(2027, 2, 11)) if c[0] == b] == []
