"""Event upserts, keyed by (contact, type, occurred_at).

`email`, `type` and `occurred_at` are required. `data` absent or empty keeps the stored data
(a new event gets {}); a non-empty `data` must be a JSON object and replaces the stored one.
Types are free-form (trial_started, trial_converted, trial_cancelled or a custom name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..clock import Clock
from ..config import Settings
from ..models import Event
from . import fields
from .errors import FieldProblem
from .lookup import resolve_contacts
from .result import ImportResult, SourceRow
from .runner import DEFAULT_BATCH_SIZE, numbered, run_import, upsert

COLUMNS = ("email", "type", "occurred_at", "data")
REQUIRED = ("email", "type", "occurred_at")
TRIAL_TYPES = ("trial_started", "trial_converted", "trial_cancelled")
MAX_TYPE_LENGTH = 100

_events = Event.__table__


@dataclass
class EventRecord:
    """A validated event row."""

    row: SourceRow
    key: tuple[str, str, datetime]  # (lower-cased email, type, occurred_at)
    email: str
    type: str
    occurred_at: datetime
    data: dict | None  # None: keep the stored data


class EventHandler:
    """Validates event rows and upserts them in batches."""

    def __init__(self, *, settings: Settings, clock: Clock):
        self.tz = settings.tz
        self.clock = clock

    def validate(self, row: SourceRow) -> tuple[EventRecord | None, list[str]]:
        """Check one row; returns the record or the problems found."""
        src = row.values
        problems: list[str] = []
        email = fields.text(src.get("email"))
        if not email:
            problems.append("email is required")
        kind = fields.text(src.get("type"))
        if not kind:
            problems.append("type is required")
        elif len(kind) > MAX_TYPE_LENGTH:
            problems.append(f"type is longer than {MAX_TYPE_LENGTH} characters")
        occurred_at = None
        if not fields.text(src.get("occurred_at")):
            problems.append("occurred_at is required")
        else:
            try:
                occurred_at = fields.timestamp(src["occurred_at"], column="occurred_at", tz=self.tz)
            except FieldProblem as problem:
                problems.append(str(problem))
        data = None
        raw_data = src.get("data")
        if isinstance(raw_data, dict) or fields.text(raw_data):
            try:
                data = fields.json_object(raw_data)
            except FieldProblem as problem:
                problems.append(str(problem))
        if problems or occurred_at is None:
            return None, problems
        return EventRecord(row, (email.lower(), kind, occurred_at), email, kind, occurred_at, data), []

    def apply(self, conn: Connection, records: Sequence[EventRecord], result: ImportResult) -> list:
        """Upsert a batch of events; rows naming an unknown contact are refused."""
        contacts = resolve_contacts(conn, (r.email for r in records))
        refused: list[tuple[EventRecord, str]] = []
        ready: dict[tuple[int, str, datetime], EventRecord] = {}
        later: list[EventRecord] = []
        for rec in records:
            contact = contacts[rec.email]
            if isinstance(contact, str):
                refused.append((rec, contact))
                continue
            key = (contact, rec.type, rec.occurred_at)
            if key in ready:
                # Two spellings of one address can meet here; apply the second after the first.
                later.append(rec)
            else:
                ready[key] = rec
        existing = {}
        if ready:
            natural = tuple_(_events.c.contact_id, _events.c.type, _events.c.occurred_at)
            stmt = select(_events.c.contact_id, _events.c.type, _events.c.occurred_at, _events.c.data).where(
                natural.in_(list(ready))
            )
            existing = {(cid, kind, at): data for cid, kind, at, data in conn.execute(stmt)}
        writes: list[dict[str, Any]] = []
        for key, rec in ready.items():
            if key not in existing:
                result.inserted += 1
                writes.append({"contact_id": key[0], "type": key[1], "occurred_at": key[2], "data": rec.data or {}})
            elif rec.data is None or rec.data == existing[key]:
                result.unchanged += 1
            else:
                result.updated += 1
                writes.append({"contact_id": key[0], "type": key[1], "occurred_at": key[2], "data": rec.data})
        upsert(conn, _events, writes, key=("contact_id", "type", "occurred_at"))
        if later:
            refused += self.apply(conn, later, result)
        return refused


def upsert_events(session: Session, rows: Iterable[Mapping[str, Any]], *, settings: Settings, clock: Clock,
                  strict: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> ImportResult:
    """Upsert event dicts (CSV column names as keys) in the caller's transaction; rejects are in the result."""
    handler = EventHandler(settings=settings, clock=clock)
    return run_import(session, handler, numbered(rows), batch_size=batch_size, strict=strict)
