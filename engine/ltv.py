"""Customer lifetime value, LTV = S × C × P × t, computed per contact in SQL.

S  average order value (revenue / orders)
C  purchases per month over the customer's tenure (orders / tenure_months)
P  margin as a fraction: the revenue-weighted average of Order.margin, with
   `ltv.default_margin` standing in for orders that have none
t  `ltv.lifetime_months` when set (> 0), else the observed tenure_months

tenure_months = max(1, days from the first order to `now` / 30.4375) for a contact with
orders, 0 without. Returned and cancelled orders (models.VOID_ORDER_STATUSES) do not count.

S × C × P = margin revenue / tenure, so LTV = margin revenue × t / tenure_months; the `ltv`
column is computed in that form (fewer floating-point steps, and exactly the margin-weighted
revenue when t is the observed tenure) and rounded to cents in SQL, so that `ltv_min = 500`
means the same on SQLite and PostgreSQL as in what the admin sees.

Currency: order totals are summed as they are, whatever Order.currency says, and shown in
`ltv.default_currency`. A shop selling in several currencies must convert totals before they
are imported; exchange rates are not applied (yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

from sqlalchemy import BigInteger, Float, Integer, Numeric, bindparam, case, cast, func, literal, select, type_coerce
from sqlalchemy.sql import ColumnElement, Subquery
from sqlmodel import Session

from .clock import ensure_utc
from .config import Settings
from .db import UTCDateTime, among, days_between
from .models import VOID_ORDER_STATUSES, Contact, Order

#: Average days per month (365.25 / 12), so tenure in months does not depend on the calendar.
DAYS_PER_MONTH = 30.4375

#: Ids per query in the per-contact look-ups; stays well under SQLite's bound-parameter limit.
_IDS_PER_QUERY = 5000

_CENT = Decimal("0.01")
_MONEY = Numeric(18, 2)


@dataclass(frozen=True)
class ContactStats:
    """One contact's order statistics and LTV factors (money in the default currency)."""

    contact_id: int
    orders_count: int
    revenue: Decimal
    avg_order_value: Decimal  # S
    purchases_per_month: float  # C
    margin: float  # P
    tenure_months: float
    lifetime_months: float  # t
    ltv: Decimal
    first_order_at: datetime | None
    last_order_at: datetime | None
    days_since_last_order: float | None


def now_param(now: datetime) -> ColumnElement:
    """Bind `now` as a UTC timestamp; unique, so two statements combined never share one value."""
    # A plain bindparam("now_utc") would silently take one of two different values when a
    # caller's own `now` is compiled into the same statement (e.g. an INSERT ... SELECT).
    return bindparam("now_utc", ensure_utc(now), type_=UTCDateTime(), unique=True)


@dataclass(frozen=True)
class _Totals:
    """Per-contact sums over countable orders, as SQL expressions usable next to `contacts`."""

    orders_count: ColumnElement
    revenue_cents: ColumnElement
    margin_cents: ColumnElement
    first_order_at: ColumnElement
    last_order_at: ColumnElement
    has_orders: ColumnElement


def _aggregates(default_margin: ColumnElement) -> list[ColumnElement]:
    margin_cents = cast(Order.total_cents, Float) * func.coalesce(Order.margin, default_margin)
    return [
        func.count().label("orders_count"),
        func.sum(Order.total_cents).label("revenue_cents"),
        func.sum(margin_cents).label("margin_cents"),
        func.min(Order.placed_at).label("first_order_at"),
        func.max(Order.placed_at).label("last_order_at"),
    ]


def _grouped_totals(default_margin: ColumnElement, *, after_id: int, contact_ids: list[int] | None) -> tuple[_Totals, Subquery]:
    """Totals from one GROUP BY over orders, to be outer-joined: best when most contacts are read."""
    query = (
        select(Order.contact_id.label("contact_id"), *_aggregates(default_margin))
        .where(Order.status.not_in(VOID_ORDER_STATUSES))
        .group_by(Order.contact_id)
    )
    # Repeated here rather than only on contacts: neither database carries a range or IN-list
    # from the join into the aggregate, and without it every batch would sum every order.
    if after_id:
        query = query.where(Order.contact_id > after_id)
    if contact_ids is not None:
        query = query.where(among(Order.contact_id, contact_ids))
    sub = query.subquery("order_totals")
    c = sub.c
    totals = _Totals(func.coalesce(c.orders_count, 0), func.coalesce(c.revenue_cents, 0), c.margin_cents,
                     c.first_order_at, c.last_order_at, c.contact_id.is_not(None))
    return totals, sub


def _correlated_totals(default_margin: ColumnElement) -> _Totals:
    """Totals as per-contact subqueries on the (contact_id, placed_at) index: best for small batches."""
    # A GROUP BY subquery is computed in full before the join, so an ID-cursor batch of 500
    # would aggregate every remaining order (quadratic over a run on SQLite); these are
    # evaluated only for the contacts a LIMITed scan actually reaches.
    def per_contact(aggregate: ColumnElement) -> ColumnElement:
        return (
            select(aggregate)
            .where(Order.contact_id == Contact.id, Order.status.not_in(VOID_ORDER_STATUSES))
            .scalar_subquery()
        )

    count, revenue, margin, first, last = (per_contact(a) for a in _aggregates(default_margin))
    return _Totals(count, func.coalesce(revenue, 0), margin, first, last, first.is_not(None))


def contact_stats(*, now: datetime, settings: Settings, after_id: int = 0,
                  contact_ids: Iterable[int] | None = None, per_contact: bool = False) -> Subquery:
    """One row per contact (optionally only ids > after_id, or those listed) with LTV and its factors.

    per_contact=True computes the order totals per contact instead of in one GROUP BY: the same
    numbers, faster when a LIMITed query reads only a few contacts, slower for a full scan.
    """
    ids = None if contact_ids is None else list(contact_ids)
    default_margin = literal(float(settings.ltv.default_margin), Float)
    if per_contact:
        t, joined = _correlated_totals(default_margin), None
    else:
        t, joined = _grouped_totals(default_margin, after_id=after_id, contact_ids=ids)
    at = now_param(now)

    months = days_between(t.first_order_at, at) / DAYS_PER_MONTH
    tenure = case((~t.has_orders, 0.0), (months < 1.0, 1.0), else_=months)
    if settings.ltv.lifetime_months > 0:
        lifetime = literal(float(settings.ltv.lifetime_months), Float)
        ltv_raw = case((t.has_orders, t.margin_cents / 100.0 * lifetime / tenure), else_=0.0)
    else:
        lifetime = tenure
        ltv_raw = func.coalesce(t.margin_cents / 100.0, 0.0)
    revenue = cast(t.revenue_cents, Float) / 100.0

    query = select(
        Contact.id.label("contact_id"),
        type_coerce(t.orders_count, Integer).label("orders_count"),
        cast(t.revenue_cents, BigInteger).label("revenue_cents"),
        type_coerce(revenue, Float).label("revenue"),
        type_coerce(case((t.has_orders, revenue / cast(t.orders_count, Float)), else_=0.0), Float)
        .label("avg_order_value"),
        type_coerce(case((t.has_orders, cast(t.orders_count, Float) / tenure), else_=0.0), Float)
        .label("purchases_per_month"),
        type_coerce(
            case((t.revenue_cents > 0, t.margin_cents / cast(t.revenue_cents, Float)), else_=default_margin), Float
        ).label("margin"),
        type_coerce(tenure, Float).label("tenure_months"),
        type_coerce(lifetime, Float).label("lifetime_months"),
        type_coerce(func.round(cast(ltv_raw, Numeric()), 2), _MONEY).label("ltv"),
        type_coerce(t.first_order_at, UTCDateTime()).label("first_order_at"),
        type_coerce(t.last_order_at, UTCDateTime()).label("last_order_at"),
        type_coerce(days_between(t.last_order_at, at), Float).label("days_since_last_order"),
        # Here so that every rule that depends on `now` reads it from one bound parameter.
        type_coerce(days_between(Contact.created_at, at), Float).label("days_since_created"),
    ).select_from(Contact)
    if joined is not None:
        query = query.outerjoin(joined, joined.c.contact_id == Contact.id)
    if after_id:
        query = query.where(Contact.id > after_id)
    if ids is not None:
        query = query.where(among(Contact.id, ids))
    return query.subquery("contact_stats")


def stats_for_contacts(session: Session, contact_ids: Iterable[int], *, now: datetime,
                       settings: Settings) -> dict[int, ContactStats]:
    """Stats for each listed contact that exists, in one query per 5000 ids."""
    ids = sorted(set(contact_ids))
    result: dict[int, ContactStats] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        stats = contact_stats(now=now, settings=settings, contact_ids=ids[start:start + _IDS_PER_QUERY])
        for row in session.execute(select(stats)).mappings():
            result[row["contact_id"]] = _to_stats(row)
    return result


def _to_stats(row) -> ContactStats:
    return ContactStats(
        contact_id=row["contact_id"],
        orders_count=int(row["orders_count"]),
        revenue=cents_to_money(row["revenue_cents"]),
        avg_order_value=money(row["avg_order_value"]),
        purchases_per_month=float(row["purchases_per_month"]),
        margin=float(row["margin"]),
        tenure_months=float(row["tenure_months"]),
        lifetime_months=float(row["lifetime_months"]),
        ltv=money(row["ltv"]),
        first_order_at=row["first_order_at"],
        last_order_at=row["last_order_at"],
        days_since_last_order=None if row["days_since_last_order"] is None else float(row["days_since_last_order"]),
    )


def spend_since(session: Session, contact_ids: Iterable[int], since: datetime) -> dict[int, Decimal]:
    """Each listed contact's spend on countable orders placed at or after `since` (0.00 when none)."""
    ids = sorted(set(contact_ids))
    result = {contact_id: Decimal("0.00") for contact_id in ids}
    since_param = bindparam("spend_since", ensure_utc(since), type_=UTCDateTime(), unique=True)
    for start in range(0, len(ids), _IDS_PER_QUERY):
        query = (
            select(Order.contact_id, func.sum(Order.total_cents))
            .where(
                Order.contact_id.in_(ids[start:start + _IDS_PER_QUERY]),
                Order.placed_at >= since_param,
                Order.status.not_in(VOID_ORDER_STATUSES),
            )
            .group_by(Order.contact_id)
        )
        for contact_id, cents in session.execute(query):
            result[contact_id] = cents_to_money(cents)
    return result


def cents_to_money(cents) -> Decimal:
    """Whole cents as an exact Decimal amount with two places."""
    return Decimal(int(cents or 0)).scaleb(-2).quantize(_CENT)


def money(value) -> Decimal:
    """A float or Decimal amount from SQL, rounded to cents."""
    if value is None:
        return Decimal("0.00")
    return Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP)
