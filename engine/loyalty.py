"""Loyalty points: one signed ledger per contact, credited from orders, spent by redemptions, expiring FIFO.

Every ledger entry (`points_ledger`) is unique by its `source_key` and written with
INSERT ... ON CONFLICT DO NOTHING, so running any of this twice, or re-importing orders,
never doubles anything. The rules:

earn     Every countable order (status not returned or cancelled) placed at or before `now`, and
         not before the program's start, earns floor(total × points_per_unit) points once:
         "earn:order:<orders.id>", occurred_at = placed_at, expires_at = placed_at +
         expiry_months (a day past the end of the target month becomes its last day, as in
         PostgreSQL). Totals count as stored, whatever their currency (as LTV does). A later change
         of an order's total does not re-credit it.
welcome  welcome_bonus points once per contact, with the contact's first countable order
         ("welcome:<contact_id>", dated and expiring like that order's points). It thanks the
         customer for joining, so a later return of that order does not take it back.
reverse  An order credited and later returned or cancelled gives its points back once
         ("reverse:order:<orders.id>", dated at the sync that noticed): the points it earned
         minus those of them that already expired, and never more than the balance (the rest is
         forgiven). A reversed order stays reversed, even if its status changes back.
redeem   `redeem()` spends points, refused when the balance is short; once per reference
         ("redeem:<reference>").
adjust   `adjust()` corrects a balance by hand ("adjust:<reference>"); added points never
         expire unless given a date, and a deduction is refused when the balance is short.
expire   Points not spent by their expires_at expire then ("expire:<source_key of the credit>",
         occurred_at = expires_at). Spending is first in, first out: a redemption uses the points
         that expire first, which (with one expiry period) are the oldest; a reversal takes the
         order's own points first, then FIFO. An expiry never takes the balance below 0. A credit
         with nothing left at its expiry gets a 0-point entry, so it is never examined again.

So the balance (the sum of the entries dated up to an instant) is never negative. Balances and
statements are as current as the last `sync_points` (earn, welcome, reverse, expire) or
`settle` (reverse and expire only: it needs no program).

Earning is set-based SQL. Expiry and reversal replay the history of only those contacts that
have a credit past its expiry or a reversed order not yet settled, because FIFO with clipping is
sequential; a contact with nothing due is never read.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

from sqlalchemy import BigInteger, String, and_, bindparam, cast, exists, func, literal, literal_column, null, select, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlmodel import Session

from .clock import ensure_utc
from .db import UTCDateTime, upsert_insert
from .errors import NotFound, ValuemailError
from .models import VOID_ORDER_STATUSES, Contact, Order, PointsEntry

EARN, WELCOME, REDEEM, EXPIRE, REVERSE, ADJUST = "earn", "welcome", "redeem", "expire", "reverse", "adjust"
KINDS = (EARN, WELCOME, REDEEM, EXPIRE, REVERSE, ADJUST)
#: Entry kinds whose positive points form a lot that can be spent and can expire.
CREDIT_KINDS = (EARN, WELCOME, ADJUST)

#: Contacts per query when entries are loaded; well under SQLite's bound-parameter limit.
_IDS_PER_QUERY = 1000
_MAX_REFERENCE = 180


class PointsError(ValuemailError):
    """A points operation that cannot be done as asked (bad amount, reference reused)."""


class InsufficientPoints(PointsError):
    """The balance is smaller than what a redemption or deduction asks for."""

    def __init__(self, contact_id: int, balance: int, requested: int):
        self.contact_id, self.balance, self.requested = contact_id, balance, requested
        super().__init__(f"contact {contact_id} has {balance} points, {requested} asked")


@dataclass(frozen=True)
class Reward:
    """A reward a contact can claim once the balance reaches `points`."""

    points: int
    name: str


@dataclass(frozen=True)
class Program:
    """The earning rules and reward thresholds of the shop's loyalty programme."""

    points_per_unit: Decimal
    welcome_bonus: int = 0
    expiry_months: int = 0  # 0: points never expire
    starts_at: datetime | None = None  # orders placed earlier earn nothing
    rewards: tuple[Reward, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "points_per_unit", Decimal(str(self.points_per_unit)))
        object.__setattr__(self, "rewards", tuple(sorted(self.rewards, key=lambda r: r.points)))
        if self.starts_at is not None:
            object.__setattr__(self, "starts_at", ensure_utc(self.starts_at))

    def points_for(self, total: Decimal) -> int:
        """The points an order of `total` earns."""
        return int(Decimal(str(total)) * self.points_per_unit // 1)

    def next_reward(self, balance: int) -> Reward | None:
        """The first reward above `balance`: what the contact is saving towards."""
        return next((r for r in self.rewards if r.points > balance), None)

    def reached(self, balance: int) -> tuple[Reward, ...]:
        """The rewards `balance` can pay for, smallest first."""
        return tuple(r for r in self.rewards if r.points <= balance)

    def expires_at(self, occurred_at: datetime) -> datetime | None:
        """When points credited at `occurred_at` expire, or None."""
        return add_months(occurred_at, self.expiry_months) if self.expiry_months else None


@dataclass(frozen=True)
class SyncResult:
    """Entries written by one sync, per kind."""

    earned: int = 0
    welcomed: int = 0
    reversed: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.earned + self.welcomed + self.reversed + self.expired


@dataclass(frozen=True)
class Entry:
    """One ledger entry as statements show it."""

    id: int
    kind: str
    points: int
    occurred_at: datetime
    order: str | None = None  # the shop's order number
    note: str = ""


@dataclass(frozen=True)
class Statement:
    """A contact's points at `now`, and what happened since `since` (dated or recorded after it)."""

    contact_id: int
    balance: int
    since: datetime | None
    earned: int = 0  # earned, welcome and added points
    spent: int = 0  # redeemed or deducted
    expired: int = 0
    reversed: int = 0
    expiring: int = 0  # points that expire within the window asked for
    expiring_at: datetime | None = None  # when the first of them expire
    recent: tuple[Entry, ...] = ()  # the latest non-zero entries, newest first

    @property
    def active(self) -> bool:
        """True when there is something to tell: a balance, or any movement since `since`."""
        return bool(self.balance or self.earned or self.spent or self.expired or self.reversed)


@dataclass(frozen=True)
class Crossing:
    """The balance reaching a reward threshold upwards, for the `n`th time for this contact."""

    contact_id: int
    reward: Reward
    n: int
    at: datetime
    balance: int  # right after the entry that crossed `reward`
    crossed: tuple[Reward, ...]  # every threshold crossed at that instant, smallest first
    entry_id: int

    @property
    def key(self) -> str:
        # Trigger keys are unique per campaign, not per contact, so the contact is part of it.
        return f"reward:{self.contact_id}:{self.reward.points}:{self.n}"


@dataclass(frozen=True)
class Redemption:
    """The outcome of `redeem` or `adjust`: the entry, and whether this call wrote it."""

    entry_id: int
    points: int
    balance: int
    created: bool


# -- dates ------------------------------------------------------------------------------------------

def add_months(value: datetime, months: int) -> datetime:
    """`value` plus whole months; a day past the target month's end becomes its last day."""
    month_index = value.month - 1 + months
    year, month = value.year + month_index // 12, month_index % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


class _add_months(FunctionElement):
    """SQL `add_months` with the same clamping on SQLite and PostgreSQL (months is a literal int)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "add_months"


def _months_later(value: ColumnElement, months: int) -> ColumnElement:
    # A literal column, so that the number of months is part of the statement's cache key.
    return _add_months(value, literal_column(str(int(months))))


@compiles(_add_months, "sqlite")
def _add_months_sqlite(element, compiler, **kw):
    value, months = (compiler.process(c, **kw) for c in element.clauses)
    shifted = f"'+' || {months} || ' months'"
    # SQLite rolls 31 January + 1 month over into March; PostgreSQL (and add_months) stop at the
    # month's last day. The stored text keeps its time of day: "YYYY-MM-DD HH:MM:SS.ffffff".
    return (f"(CASE WHEN strftime('%d', {value}, {shifted}) = strftime('%d', {value}) "
            f"THEN date({value}, {shifted}) "
            f"ELSE date({value}, 'start of month', '+' || ({months} + 1) || ' months', '-1 day') END"
            f" || substr({value}, 11))")


@compiles(_add_months, "postgresql")
def _add_months_pg(element, compiler, **kw):
    value, months = (compiler.process(c, **kw) for c in element.clauses)
    return f"((({value}) AT TIME ZONE 'UTC' + make_interval(months => {months})) AT TIME ZONE 'UTC')"


def _at(name: str, value: datetime) -> ColumnElement:
    return bindparam(name, ensure_utc(value), type_=UTCDateTime(), unique=True)


def _chunks(ids: Sequence[int], size: int = _IDS_PER_QUERY) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


# -- syncing from orders ----------------------------------------------------------------------------

def sync_points(session: Session, program: Program, *, now: datetime,
                contact_ids: Iterable[int] | None = None) -> SyncResult:
    """Credit new orders and welcome bonuses, reverse void orders and expire old points, as of `now`."""
    now = ensure_utc(now)
    ids = None if contact_ids is None else sorted(set(contact_ids))
    earned = _credit_orders(session, program, now=now, contact_ids=ids)
    welcomed = _credit_welcome(session, program, now=now, contact_ids=ids) if program.welcome_bonus else 0
    reversed_, expired = _settle(session, now=now, contact_ids=ids)
    return SyncResult(earned=earned, welcomed=welcomed, reversed=reversed_, expired=expired)


def settle(session: Session, *, now: datetime, contact_ids: Iterable[int] | None = None) -> SyncResult:
    """Write the reversals and expiries due at `now` (no program needed: credits carry their expiry)."""
    ids = None if contact_ids is None else sorted(set(contact_ids))
    reversed_, expired = _settle(session, now=ensure_utc(now), contact_ids=ids)
    return SyncResult(reversed=reversed_, expired=expired)


def _countable_orders(program: Program, now: datetime, contact_ids: list[int] | None) -> list[ColumnElement]:
    conditions = [Order.status.not_in(VOID_ORDER_STATUSES), Order.placed_at <= _at("placed_until", now)]
    if program.starts_at is not None:
        conditions.append(Order.placed_at >= _at("program_start", program.starts_at))
    if contact_ids is not None:
        conditions.append(Order.contact_id.in_(contact_ids))
    return conditions


def _expiry(program: Program, occurred: ColumnElement) -> ColumnElement:
    if not program.expiry_months:
        return cast(null(), UTCDateTime())
    return _months_later(occurred, program.expiry_months)


_LEDGER = PointsEntry.__table__
_COLUMNS = ["contact_id", "kind", "points", "order_id", "source_key", "occurred_at", "expires_at", "note", "created_at"]


def _insert_from(session: Session, query) -> int:
    """INSERT ... SELECT that skips keys already taken; the number of rows written."""
    statement = (upsert_insert(session, _LEDGER).from_select(_COLUMNS, query)
                 .on_conflict_do_nothing(index_elements=["source_key"]).returning(_LEDGER.c.id))
    # Counted from RETURNING: psycopg reports no row count for INSERT ... SELECT here.
    return len(session.execute(statement).all())


def _credit_orders(session: Session, program: Program, *, now: datetime, contact_ids: list[int] | None) -> int:
    numerator, denominator = program.points_per_unit.as_integer_ratio()
    # Integer arithmetic on the cents, so floor(total × rate) is exact (totals are never negative).
    points = cast(Order.total_cents * literal(numerator, BigInteger) // literal(denominator * 100, BigInteger),
                  BigInteger)
    key = literal(f"{EARN}:order:") + cast(Order.id, String)
    taken = aliased(PointsEntry)
    query = select(
        Order.contact_id, literal(EARN), points, Order.id, key, Order.placed_at, _expiry(program, Order.placed_at),
        literal(""), _at("created", now),
    ).where(*_countable_orders(program, now, contact_ids), ~exists().where(taken.source_key == key))
    return _insert_from(session, query)


def _credit_welcome(session: Session, program: Program, *, now: datetime, contact_ids: list[int] | None) -> int:
    key = literal(f"{WELCOME}:") + cast(Order.contact_id, String)
    first = func.min(Order.placed_at)
    taken = aliased(PointsEntry)
    query = (
        select(Order.contact_id, literal(WELCOME), literal(program.welcome_bonus, BigInteger),
               cast(null(), BigInteger), key, first, _expiry(program, first), literal(""), _at("created", now))
        .where(*_countable_orders(program, now, contact_ids), ~exists().where(taken.source_key == key))
        .group_by(Order.contact_id)
    )
    return _insert_from(session, query)


def _settle(session: Session, *, now: datetime, contact_ids: list[int] | None) -> tuple[int, int]:
    """Reversals and expiries for the contacts that have one due; (reversed, expired) entries submitted.

    A concurrent sync writing the same keys first makes this count high; the ledger stays right.
    """
    candidates = _contacts_to_settle(session, now=now, contact_ids=contact_ids)
    written = {REVERSE: 0, EXPIRE: 0}
    for chunk in _chunks(candidates):
        rows = []
        for contact_id, entries in _load_entries(session, chunk, until=now).items():
            rows.extend(_replay(entries, now=now, settle=True).new)
        if rows:
            statement = upsert_insert(session, _LEDGER).on_conflict_do_nothing(index_elements=["source_key"])
            session.execute(statement, rows)
            for row in rows:
                written[row["kind"]] += 1
    return written[REVERSE], written[EXPIRE]


def _contacts_to_settle(session: Session, *, now: datetime, contact_ids: list[int] | None) -> list[int]:
    lot, done = aliased(PointsEntry), aliased(PointsEntry)
    expiring = select(lot.contact_id).where(
        lot.points > 0, lot.kind.in_(CREDIT_KINDS), lot.expires_at.is_not(None), lot.expires_at <= _at("now", now),
        ~exists().where(done.source_key == literal(f"{EXPIRE}:") + lot.source_key),
    )
    earned, undone = aliased(PointsEntry), aliased(PointsEntry)
    reversing = select(earned.contact_id).join(Order, Order.id == earned.order_id).where(
        earned.kind == EARN, Order.status.in_(VOID_ORDER_STATUSES), earned.occurred_at <= _at("now", now),
        ~exists().where(undone.source_key == literal(f"{REVERSE}:order:") + cast(earned.order_id, String)),
    )
    if contact_ids is not None:
        expiring = expiring.where(lot.contact_id.in_(contact_ids))
        reversing = reversing.where(earned.contact_id.in_(contact_ids))
    both = union_all(expiring, reversing).subquery("to_settle")
    return sorted(set(session.execute(select(both.c[0])).scalars()))


@dataclass(frozen=True)
class _Row:
    id: int
    contact_id: int
    kind: str
    points: int
    order_id: int | None
    source_key: str
    occurred_at: datetime
    expires_at: datetime | None
    created_at: datetime
    note: str
    order_number: str | None
    order_status: str | None


def _load_entries(session: Session, contact_ids: list[int], *, until: datetime) -> dict[int, list[_Row]]:
    """Each listed contact's entries dated up to `until`, in ledger order, in one query."""
    query = (
        select(PointsEntry.id, PointsEntry.contact_id, PointsEntry.kind, PointsEntry.points, PointsEntry.order_id,
               PointsEntry.source_key, PointsEntry.occurred_at, PointsEntry.expires_at, PointsEntry.created_at,
               PointsEntry.note, Order.order_id, Order.status)
        .outerjoin(Order, Order.id == PointsEntry.order_id)
        .where(PointsEntry.contact_id.in_(contact_ids), PointsEntry.occurred_at <= _at("until", until))
        .order_by(PointsEntry.contact_id, PointsEntry.occurred_at, PointsEntry.id)
    )
    entries: dict[int, list[_Row]] = defaultdict(list)
    for row in session.execute(query):
        entries[row[1]].append(_Row(*row))
    return entries


# -- the FIFO replay --------------------------------------------------------------------------------

@dataclass
class _Lot:
    key: str
    order_id: int | None
    points: int
    occurred_at: datetime
    expires_at: datetime | None
    remaining: int
    expired: int = 0
    settled: bool = False  # its expiry is recorded

    def fifo_key(self):
        # Points that expire first are spent first; with one expiry period that is the oldest.
        return (self.expires_at is None, self.expires_at or self.occurred_at, self.occurred_at, self.key)


@dataclass
class _Replay:
    """A contact's account rebuilt entry by entry: balance and what is left of each credit."""

    contact_id: int
    balance: int = 0
    lots: dict[str, _Lot] = field(default_factory=dict)
    by_order: dict[int, _Lot] = field(default_factory=dict)
    new: list[dict] = field(default_factory=list)

    def apply(self, row: _Row) -> None:
        self.balance += row.points
        if row.kind == EARN and row.points == 0 and row.order_id is not None:
            # A tiny order's 0 points: nothing to spend or expire, but a return must still be settled.
            self.by_order[row.order_id] = _Lot(row.source_key, row.order_id, 0, row.occurred_at, None, 0)
            return
        if row.points > 0 and row.kind in CREDIT_KINDS:
            lot = _Lot(row.source_key, row.order_id, row.points, row.occurred_at, row.expires_at, row.points)
            self.lots[lot.key] = lot
            if row.kind == EARN and row.order_id is not None:
                self.by_order[row.order_id] = lot
            return
        target = None
        if row.kind == EXPIRE:
            target = self.lots.get(row.source_key.removeprefix(f"{EXPIRE}:"))
            if target is not None:
                target.settled = True
                target.expired += -row.points
        elif row.kind == REVERSE and row.order_id is not None:
            target = self.by_order.get(row.order_id)
        if row.points < 0:
            self._take(-row.points, first=target)

    def _take(self, amount: int, *, first: _Lot | None = None) -> None:
        if first is not None:
            used = min(first.remaining, amount)
            first.remaining -= used
            amount -= used
        if amount <= 0:
            return
        for lot in sorted((lot for lot in self.lots.values() if lot.remaining > 0), key=_Lot.fifo_key):
            used = min(lot.remaining, amount)
            lot.remaining -= used
            amount -= used
            if amount <= 0:
                return

    def pending_expiries(self, before: datetime, *, inclusive: bool) -> list[_Lot]:
        due = [lot for lot in self.lots.values() if not lot.settled and lot.expires_at is not None
               and (lot.expires_at <= before if inclusive else lot.expires_at < before)]
        return sorted(due, key=_Lot.fifo_key)

    def expire(self, lot: _Lot, *, now: datetime) -> None:
        amount = max(0, min(lot.remaining, self.balance))  # never below zero
        lot.remaining -= amount
        lot.expired += amount
        lot.settled = True
        self.balance -= amount
        self.new.append(_new_row(self.contact_id, EXPIRE, -amount, lot.order_id, f"{EXPIRE}:{lot.key}",
                                 lot.expires_at, now, note="" if amount else "nothing left to expire"))

    def reverse(self, lot: _Lot, *, now: datetime, status: str, order_number: str | None) -> None:
        amount = max(0, min(lot.points - lot.expired, self.balance))  # never below zero; the rest is forgiven
        self.balance -= amount
        self._take(amount, first=lot)
        self.new.append(_new_row(self.contact_id, REVERSE, -amount, lot.order_id, f"{REVERSE}:order:{lot.order_id}",
                                 now, now, note=f"order {order_number or lot.order_id} {status}"[:500]))


def _new_row(contact_id, kind, points, order_id, key, occurred_at, now, *, note="") -> dict:
    return {"contact_id": contact_id, "kind": kind, "points": points, "order_id": order_id, "source_key": key,
            "occurred_at": occurred_at, "expires_at": None, "note": note, "created_at": now}


def _replay(entries: list[_Row], *, now: datetime, settle: bool) -> _Replay:
    """Rebuild one contact's account; with `settle`, also write the expiries and reversals now due."""
    account = _Replay(entries[0].contact_id if entries else 0)
    recorded_expiries = {e.source_key.removeprefix(f"{EXPIRE}:") for e in entries if e.kind == EXPIRE}
    for row in entries:
        if settle:
            # A credit expiring at the instant of an existing entry expires after it.
            for lot in account.pending_expiries(row.occurred_at, inclusive=False):
                if lot.key not in recorded_expiries:
                    account.expire(lot, now=now)
        account.apply(row)
    if not settle:
        return account
    for lot in account.pending_expiries(now, inclusive=True):
        if lot.key not in recorded_expiries:
            account.expire(lot, now=now)
    reversed_orders = {e.order_id for e in entries if e.kind == REVERSE}
    void = {e.order_id: (e.order_status, e.order_number) for e in entries
            if e.kind == EARN and e.order_status in VOID_ORDER_STATUSES}
    for order_id, (status, number) in sorted(void.items()):
        lot = account.by_order.get(order_id)
        if lot is not None and order_id not in reversed_orders:
            account.reverse(lot, now=now, status=status, order_number=number)
    return account


# -- balances and statements ------------------------------------------------------------------------

def balance(session: Session, contact_ids: Iterable[int], *, at: datetime) -> dict[int, int]:
    """Each listed contact's balance at `at` (0 without entries), one query per 1000 contacts."""
    ids = sorted(set(contact_ids))
    result = dict.fromkeys(ids, 0)
    for chunk in _chunks(ids):
        query = (select(PointsEntry.contact_id, func.sum(PointsEntry.points))
                 .where(PointsEntry.contact_id.in_(chunk), PointsEntry.occurred_at <= _at("at", at))
                 .group_by(PointsEntry.contact_id))
        for contact_id, points in session.execute(query):
            result[contact_id] = int(points or 0)
    return result


def statement(session: Session, contact_ids: Iterable[int], *, since: datetime | None | Mapping[int, datetime | None],
              now: datetime, expiring_within: timedelta = timedelta(days=30), recent: int = 5) -> dict[int, Statement]:
    """Each listed contact's statement at `now`: one query per 1000 contacts.

    `since` (one instant, or one per contact; None: from the start) bounds the movement figures:
    an entry counts when it is dated or was recorded after it, so an order imported late still
    shows in the next statement, and no entry is ever in two statements that follow each other.
    """
    now = ensure_utc(now)
    ids = sorted(set(contact_ids))
    result = {}
    for chunk in _chunks(ids):
        loaded = _load_entries(session, chunk, until=now)
        for contact_id in chunk:
            start = since.get(contact_id) if isinstance(since, Mapping) else since
            result[contact_id] = _statement(contact_id, loaded.get(contact_id, []), since=start, now=now,
                                            expiring_within=expiring_within, recent=recent)
    return result


def _statement(contact_id: int, entries: list[_Row], *, since: datetime | None, now: datetime,
               expiring_within: timedelta, recent: int) -> Statement:
    account = _replay(entries, now=now, settle=False)
    moved = {EARN: 0, REDEEM: 0, EXPIRE: 0, REVERSE: 0}
    for row in entries:
        if since is not None and row.occurred_at <= since and row.created_at <= since:
            continue
        if row.kind in CREDIT_KINDS and row.points > 0:
            moved[EARN] += row.points
        elif row.kind in (REDEEM, ADJUST):
            moved[REDEEM] += -row.points
        elif row.kind in (EXPIRE, REVERSE):
            moved[row.kind] += -row.points
    horizon = now + expiring_within
    soon = [lot for lot in account.lots.values()
            if lot.remaining > 0 and lot.expires_at is not None and now < lot.expires_at <= horizon]
    latest = [Entry(id=r.id, kind=r.kind, points=r.points, occurred_at=r.occurred_at, order=r.order_number, note=r.note)
              for r in reversed(entries) if r.points][:recent]
    return Statement(
        contact_id=contact_id, balance=account.balance, since=since, earned=moved[EARN], spent=moved[REDEEM],
        expired=moved[EXPIRE], reversed=moved[REVERSE], expiring=sum(lot.remaining for lot in soon),
        expiring_at=min((lot.expires_at for lot in soon), default=None), recent=tuple(latest),
    )


# -- rewards ----------------------------------------------------------------------------------------

def reward_crossings(session: Session, program: Program, *, since: datetime, now: datetime,
                     held_only: bool = True) -> list[Crossing]:
    """Every upward crossing of a reward threshold dated in (since, now], one per contact and instant.

    The crossings are numbered per contact and threshold over the whole history, so a crossing's
    key never changes between calls. Entries of one instant that cross several thresholds count as
    the crossing of the highest. With `held_only`, a crossing whose threshold the balance no
    longer reaches at `now` (spent, returned, expired) is left out.
    """
    if not program.rewards:
        return []
    since, now = ensure_utc(since), ensure_utc(now)
    ledger = PointsEntry
    touched = select(ledger.contact_id).where(ledger.occurred_at > _at("since", since),
                                             ledger.occurred_at <= _at("now", now))
    running = select(
        ledger.id, ledger.contact_id, ledger.occurred_at, ledger.points,
        func.sum(ledger.points).over(partition_by=ledger.contact_id, order_by=(ledger.occurred_at, ledger.id))
        .label("after"),
    ).where(ledger.contact_id.in_(touched), ledger.occurred_at <= _at("now", now)).subquery("running")
    levels = [select(literal(r.points, BigInteger).label("threshold")) for r in program.rewards]
    thresholds = (union_all(*levels) if len(levels) > 1 else levels[0]).subquery("thresholds")
    crossed = (
        select(running.c.id, running.c.contact_id, running.c.occurred_at, running.c.after, thresholds.c.threshold,
               func.row_number().over(partition_by=(running.c.contact_id, thresholds.c.threshold),
                                      order_by=(running.c.occurred_at, running.c.id)).label("n"))
        .select_from(running.join(thresholds, and_(running.c.after - running.c.points < thresholds.c.threshold,
                                                   running.c.after >= thresholds.c.threshold)))
        .subquery("crossed")
    )
    rows = session.execute(select(crossed).where(crossed.c.occurred_at > _at("since", since))
                           .order_by(crossed.c.occurred_at, crossed.c.id, crossed.c.threshold)).all()
    by_points = {r.points: r for r in program.rewards}
    # Entries of one instant (an order and the welcome bonus it brings) make one crossing.
    per_instant: dict[tuple, list] = defaultdict(list)
    for row in rows:
        per_instant[(row.contact_id, _as_datetime(row.occurred_at))].append(row)
    crossings = []
    for hits in per_instant.values():
        top = max(hits, key=lambda h: h.threshold)
        crossings.append(Crossing(
            contact_id=top.contact_id, reward=by_points[int(top.threshold)], n=int(top.n),
            at=_as_datetime(top.occurred_at), balance=int(top.after),
            crossed=tuple(by_points[int(h.threshold)] for h in sorted(hits, key=lambda h: h.threshold)),
            entry_id=top.id,
        ))
    if held_only and crossings:
        balances = balance(session, {c.contact_id for c in crossings}, at=now)
        crossings = [c for c in crossings if balances[c.contact_id] >= c.reward.points]
    return sorted(crossings, key=lambda c: (c.at, c.entry_id))


def _as_datetime(value) -> datetime:
    # Kept defensive: a driver could hand back a window query's column as text or naive UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- spending and corrections -----------------------------------------------------------------------

def redeem(session: Session, contact_id: int, points: int, *, now: datetime, reference: str,
           note: str = "") -> Redemption:
    """Spend `points` of the contact's balance, once per `reference`; InsufficientPoints when short."""
    if not isinstance(points, int) or points <= 0:
        raise PointsError(f"points to redeem must be a positive whole number (got {points!r})")
    return _spend_or_add(session, contact_id, -points, kind=REDEEM, now=ensure_utc(now), reference=reference,
                         note=note, expires_at=None)


def adjust(session: Session, contact_id: int, points: int, *, now: datetime, reference: str, note: str = "",
           expires_at: datetime | None = None) -> Redemption:
    """Add (positive) or deduct (negative) points by hand, once per `reference`; a deduction never overdraws."""
    if not isinstance(points, int) or points == 0:
        raise PointsError(f"an adjustment must be a non-zero whole number of points (got {points!r})")
    if expires_at is not None and points < 0:
        raise PointsError("only added points can have an expiry date")
    return _spend_or_add(session, contact_id, points, kind=ADJUST, now=ensure_utc(now), reference=reference,
                         note=note, expires_at=None if expires_at is None else ensure_utc(expires_at))


def _spend_or_add(session: Session, contact_id: int, points: int, *, kind: str, now: datetime, reference: str,
                  note: str, expires_at: datetime | None) -> Redemption:
    reference = (reference or "").strip()
    if not reference or len(reference) > _MAX_REFERENCE:
        raise PointsError(f"a reference of 1-{_MAX_REFERENCE} characters is required, so a retry never doubles it")
    key = f"{kind}:{reference}"
    # Serialises concurrent spending by one contact on PostgreSQL (SQLite writers are serialised anyway).
    if session.execute(select(Contact.id).where(Contact.id == contact_id).with_for_update()).first() is None:
        raise NotFound(f"no contact with id {contact_id}")
    existing = _by_key(session, key)
    if existing is None:
        settle(session, now=now, contact_ids=[contact_id])
        current = balance(session, [contact_id], at=now)[contact_id]
        if points < 0 and current < -points:
            raise InsufficientPoints(contact_id, current, -points)
        row = _new_row(contact_id, kind, points, None, key, now, now, note=note[:500])
        row["expires_at"] = expires_at
        written = session.execute(upsert_insert(session, _LEDGER).values(**row).on_conflict_do_nothing(
            index_elements=["source_key"]).returning(PointsEntry.id)).first()
        if written is not None:
            return Redemption(entry_id=written[0], points=abs(points), balance=current + points, created=True)
        existing = _by_key(session, key)  # a concurrent call with the same reference won
    if existing.contact_id != contact_id or existing.points != points:
        raise PointsError(f"reference {reference!r} was already used for {abs(existing.points)} points "
                          f"of contact {existing.contact_id}")
    return Redemption(entry_id=existing.id, points=abs(points),
                      balance=balance(session, [contact_id], at=now)[contact_id], created=False)


def _by_key(session: Session, key: str) -> PointsEntry | None:
    return session.execute(select(PointsEntry).where(PointsEntry.source_key == key)).scalars().first()
