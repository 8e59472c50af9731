"""Helpers for the importer tests: a fixed clock, CSV writers, rejects readers and DB snapshots."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.clock import FixedClock
from engine.importing import import_csv
from engine.models import Contact, ContactTag, Event, Order

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    return FixedClock(T0)


@pytest.fixture
def run_import(db, settings, clock):
    """Import a CSV file with the test clock; returns the CsvImportOutcome."""

    def run(kind: str, path: Path, **options):
        return import_csv(db, kind, path, settings=settings, clock=clock, **options)

    return run


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    """Write `text` as a UTF-8 file exactly as given (newlines included)."""
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def read_rejects(path: Path) -> list[dict[str, str]]:
    """The rows of a rejects file as dicts."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every importer-owned table's rows, ordered, for before/after comparisons."""
    tables = {
        "contacts": select(*Contact.__table__.c).order_by(Contact.__table__.c.id),
        "tags": select(*ContactTag.__table__.c).order_by(ContactTag.__table__.c.contact_id, ContactTag.__table__.c.tag),
        "orders": select(*Order.__table__.c).order_by(Order.__table__.c.id),
        "events": select(*Event.__table__.c).order_by(Event.__table__.c.id),
    }
    with engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(stmt)] for name, stmt in tables.items()}


def contact(engine, email_key: str):
    """The stored contact row (a Row with attribute access), or None."""
    table = Contact.__table__
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.email_key == email_key)).first()


def tags_of(engine, email_key: str) -> set[str]:
    """The stored tags of a contact."""
    c, t = Contact.__table__, ContactTag.__table__
    with engine.connect() as conn:
        stmt = select(t.c.tag).join(c, c.c.id == t.c.contact_id).where(c.c.email_key == email_key)
        return set(conn.execute(stmt).scalars())
