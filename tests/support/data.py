"""Rows for tests, inserted directly (the importer has its own tests)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import insert

from engine.models import Contact

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=timezone.utc)


def add_contacts(engine, n: int, *, start: int = 0, now: datetime = T0, domain: str = "example.com", **fields) -> None:
    """Insert `n` subscribed contacts named Person<i> with addresses user<i>@domain."""
    rows = [
        {"email": f"user{i}@{domain}", "email_key": f"user{i}@{domain}", "first_name": f"Person{i}",
         "last_name": "Tester", "country": "NL", "language": "nl", "status": "subscribed", "attributes": {},
         "created_at": now, "updated_at": now, **fields}
        for i in range(start, start + n)
    ]
    with engine.begin() as conn:
        for chunk in range(0, len(rows), 1000):
            conn.execute(insert(Contact), rows[chunk:chunk + 1000])


def database_state(engine) -> dict[str, list[tuple]]:
    """Every row of every table, in a comparable form: to show that a request changed nothing."""
    from sqlmodel import SQLModel

    state = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            state[table.name] = sorted((tuple(repr(v) for v in row) for row in conn.execute(table.select())))
    return state
