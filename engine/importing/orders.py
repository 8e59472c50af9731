"""Order upserts, keyed by order_id.

Partial-update rules: `order_id`, `email`, `placed_at` and `total` are required in every row.
`currency`, `margin` and `status` absent or empty keep the stored value; a new order gets
settings.ltv.default_currency, no margin of its own (NULL: the configured default margin
applies when LTV is computed, so changing the config changes it) and status `placed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..clock import Clock
from ..config import Settings
from ..models import Order, OrderStatus
from . import fields
from .errors import FieldProblem
from .lookup import resolve_contacts
from .result import ImportResult, SourceRow
from .runner import DEFAULT_BATCH_SIZE, numbered, run_import, upsert

COLUMNS = ("order_id", "email", "placed_at", "total", "currency", "margin", "status")
REQUIRED = ("order_id", "email", "placed_at", "total")
STATUSES = tuple(s.value for s in OrderStatus)
MAX_ORDER_ID_LENGTH = 100

_orders = Order.__table__
_STORED = ("contact_id", "placed_at", "total_cents", "currency", "margin", "status")


@dataclass
class OrderRecord:
    """A validated order row."""

    row: SourceRow
    key: str  # order_id
    email: str
    values: dict[str, Any]  # placed_at, total_cents and whichever optional columns are set


class OrderHandler:
    """Validates order rows and upserts them in batches."""

    def __init__(self, *, settings: Settings, clock: Clock):
        self.tz = settings.tz
        self.default_currency = settings.ltv.default_currency
        self.clock = clock

    def validate(self, row: SourceRow) -> tuple[OrderRecord | None, list[str]]:
        """Check one row; returns the record or the problems found."""
        src = row.values
        problems: list[str] = []
        order_id = fields.text(src.get("order_id"))
        if not order_id:
            problems.append("order_id is required")
        elif len(order_id) > MAX_ORDER_ID_LENGTH:
            problems.append(f"order_id is longer than {MAX_ORDER_ID_LENGTH} characters")
        email = fields.text(src.get("email"))
        if not email:
            problems.append("email is required")
        values: dict[str, Any] = {}
        checks = {
            "placed_at": ("placed_at", lambda v: fields.timestamp(v, column="placed_at", tz=self.tz)),
            "total": ("total_cents", fields.cents),
            "currency": ("currency", fields.currency),
            "margin": ("margin", fields.fraction),
            "status": ("status", lambda v: fields.choice(v, column="order status", allowed=STATUSES)),
        }
        for column, (target, parse) in checks.items():
            if not fields.text(src.get(column)):
                if column in REQUIRED:
                    problems.append(f"{column} is required")
                continue
            try:
                values[target] = parse(src[column])
            except FieldProblem as problem:
                problems.append(str(problem))
        if problems:
            return None, problems
        return OrderRecord(row, order_id, email, values), []

    def apply(self, conn: Connection, records: Sequence[OrderRecord], result: ImportResult) -> list:
        """Upsert a batch of orders; rows naming an unknown contact are refused."""
        now = self.clock.now()
        contacts = resolve_contacts(conn, (r.email for r in records))
        existing = {
            row.order_id: row
            for row in conn.execute(
                select(_orders.c.order_id, *(_orders.c[c] for c in _STORED))
                .where(_orders.c.order_id.in_([r.key for r in records]))
            )
        }
        refused: list[tuple[OrderRecord, str]] = []
        writes: list[dict[str, Any]] = []
        for rec in records:
            contact = contacts[rec.email]
            if isinstance(contact, str):
                refused.append((rec, contact))
                continue
            old = existing.get(rec.key)
            if old is None:
                stored = {"currency": self.default_currency, "margin": None, "status": OrderStatus.placed.value,
                          **rec.values, "contact_id": contact}
                result.inserted += 1
                writes.append({"order_id": rec.key, **stored, "updated_at": now})
                continue
            before = {c: old._mapping[c] for c in _STORED}
            after = {**before, **rec.values, "contact_id": contact}
            if after == before:
                result.unchanged += 1
                continue
            result.updated += 1
            writes.append({"order_id": rec.key, **after, "updated_at": now})
        upsert(conn, _orders, writes, key=("order_id",))
        return refused


def upsert_orders(session: Session, rows: Iterable[Mapping[str, Any]], *, settings: Settings, clock: Clock,
                  strict: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> ImportResult:
    """Upsert order dicts (CSV column names as keys) in the caller's transaction; rejects are in the result."""
    handler = OrderHandler(settings=settings, clock=clock)
    return run_import(session, handler, numbered(rows), batch_size=batch_size, strict=strict)
