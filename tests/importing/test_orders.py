"""Order CSV import on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from engine.models import Order

from .conftest import T0, read_rejects, snapshot, write_csv

HEADER = "order_id,email,placed_at,total,currency,margin,status\n"


@pytest.fixture
def customers(run_import, tmp_path):
    write_csv(tmp_path / "customers.csv", "email\nann@example.com\nBob@Example.com\n")
    run_import("contacts", tmp_path / "customers.csv")


def orders(engine) -> dict[str, dict]:
    table = Order.__table__
    with engine.connect() as conn:
        return {row.order_id: row._asdict() for row in conn.execute(select(table))}


def test_orders_are_inserted_with_defaults(db, customers, run_import, tmp_path):
    path = write_csv(tmp_path / "o.csv", HEADER +
                     "A1,ann@example.com,2027-02-01T10:00,12.50,,,\n"      # naive: Amsterdam time
                     "A2,BOB@example.com,2027-02-02T10:00Z,7,nok,0.25,PAID\n")
    result = run_import("orders", path).result
    assert (result.inserted, result.rejected) == (2, 0)
    stored = orders(db)
    a1, a2 = stored["A1"], stored["A2"]
    assert a1["placed_at"] == datetime(2027, 2, 1, 9, 0, tzinfo=timezone.utc)
    assert (a1["total_cents"], a1["currency"], a1["margin"], a1["status"]) == (1250, "EUR", None, "placed")
    assert (a2["total_cents"], a2["currency"], a2["margin"], a2["status"]) == (700, "NOK", 0.25, "paid")
    assert a1["contact_id"] != a2["contact_id"]
    assert a1["updated_at"] == T0


def test_every_order_rejection_has_its_reason_and_line(db, customers, run_import, tmp_path):
    path = write_csv(tmp_path / "o.csv", HEADER + "\n".join([
        "B1,ann@example.com,2027-02-01,10.00,EUR,,",        # 2 ok
        "B2,ann@example.com,2027-02-01,-5,EUR,,",           # 3
        "B3,ann@example.com,2027-02-01,ten,EUR,,",          # 4
        "B4,ann@example.com,2027-02-01,9.999,EUR,,",        # 5
        "B5,ann@example.com,2027-02-01,9.99,EURO,,",        # 6
        "B6,ann@example.com,2027-02-01,9.99,EUR,1.5,",      # 7
        "B7,ann@example.com,2027-02-01,9.99,EUR,,lost",     # 8
        "B8,nobody@example.com,2027-02-01,9.99,EUR,,",      # 9
        "B9,ann@example.com,01-02-2027,9.99,EUR,,",         # 10
        ",ann@example.com,2027-02-01,9.99,EUR,,",           # 11
        "B10,,2027-02-01,9.99,EUR,,",                       # 12
        "B11,ann@example.com,,,EUR,,",                      # 13
        "B12,not an email,2027-02-01,1,EUR,,",              # 14
        "B13,ann@example.com,2027-02-01,\"12,50\",EUR,,",   # 15
    ]) + "\n")
    outcome = run_import("orders", path)
    assert (outcome.result.inserted, outcome.result.rejected) == (1, 13)
    got = {int(r["line"]): r["reason"] for r in read_rejects(outcome.rejects_path)}
    assert got == {
        3: "total '-5' is negative",
        4: "total 'ten' is not a decimal number",
        5: "total '9.999' has more than 2 decimals",
        6: "unknown currency 'EURO' (ISO 4217 code such as EUR expected)",
        7: "margin '1.5' is outside 0–1",
        8: "bad order status 'lost' (one of placed, paid, shipped, delivered, returned, cancelled)",
        9: "unknown contact 'nobody@example.com' (import it as a contact first)",
        10: "bad placed_at '01-02-2027' (ISO 8601 date or timestamp expected)",
        11: "order_id is required",
        12: "email is required",
        13: "placed_at is required; total is required",
        14: got[14],  # email-validator's wording, checked below
        15: "total '12,50' is not a decimal number (use a dot as the decimal separator)",
    }
    assert got[14].startswith("invalid email 'not an email'")
    assert list(orders(db)) == ["B1"]


def test_missing_required_column_is_a_file_error(customers, run_import, tmp_path):
    from engine.importing import CsvFileError

    path = write_csv(tmp_path / "o.csv", "order_id,email,total\nX,ann@example.com,1\n")
    with pytest.raises(CsvFileError) as exc:
        run_import("orders", path)
    assert str(exc.value) == f"{path}:1: missing required column placed_at (the header has: order_id, email, total)"


def test_reimport_is_idempotent_and_changes_are_applied(db, customers, run_import, tmp_path, clock):
    rows = "".join(f"C{i},ann@example.com,2027-01-{i % 28 + 1:02d}T12:00:00+01:00,{i}.{i % 100:02d},EUR,0.3,paid\n"
                   for i in range(120))
    path = write_csv(tmp_path / "o.csv", HEADER + rows)
    assert run_import("orders", path, batch_size=50).result.inserted == 120
    before = snapshot(db)
    clock.set(T0 + timedelta(days=2))
    again = run_import("orders", path, batch_size=50).result
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 120)
    assert snapshot(db) == before

    # Absent columns keep their values; changed ones update, and bump updated_at.
    write_csv(tmp_path / "fix.csv", "order_id,email,placed_at,total,status\n"
              "C5,bob@example.com,2027-01-06T12:00:00+01:00,5.05,returned\n"
              "C6,ann@example.com,2027-01-07T12:00:00+01:00,6.06,paid\n")
    result = run_import("orders", tmp_path / "fix.csv").result
    assert (result.updated, result.unchanged) == (1, 1)
    c5, c6 = orders(db)["C5"], orders(db)["C6"]
    assert (c5["status"], c5["currency"], c5["margin"], c5["updated_at"]) == ("returned", "EUR", 0.3, T0 + timedelta(days=2))
    assert c5["contact_id"] != c6["contact_id"]
    assert c6["updated_at"] == T0


def test_repeated_order_id_in_one_batch(db, customers, run_import, tmp_path):
    path = write_csv(tmp_path / "o.csv", HEADER + "D1,ann@example.com,2027-02-01,1,,,\nD1,ann@example.com,2027-02-01,2,,,\n")
    result = run_import("orders", path).result
    assert (result.inserted, result.updated) == (1, 1)
    assert orders(db)["D1"]["total_cents"] == 200
