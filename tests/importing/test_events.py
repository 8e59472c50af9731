"""Event CSV import on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from engine.models import Event

from .conftest import read_rejects, snapshot, write_csv

HEADER = "email,type,occurred_at,data\n"


@pytest.fixture
def users(run_import, tmp_path):
    write_csv(tmp_path / "users.csv", "email\nann@example.com\nbob@example.com\n")
    run_import("contacts", tmp_path / "users.csv")


def events(engine) -> list[tuple]:
    table = Event.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.type, table.c.occurred_at, table.c.data).order_by(table.c.id))
        return [tuple(row) for row in rows]


def test_events_insert_and_natural_key(db, users, run_import, tmp_path):
    path = write_csv(tmp_path / "e.csv", HEADER +
                     'ann@example.com,trial_started,2027-02-01T10:00,"{""plan"": ""pro""}"\n'
                     "ANN@example.com,trial_started,2027-02-01T09:00:00Z,\n"   # same instant and contact: same event
                     "bob@example.com,webinar_attended,2027-02-03,\n")
    result = run_import("events", path).result
    assert (result.inserted, result.updated, result.unchanged, result.rejected) == (2, 0, 1, 0)
    assert events(db) == [
        ("trial_started", datetime(2027, 2, 1, 9, 0, tzinfo=timezone.utc), {"plan": "pro"}),
        ("webinar_attended", datetime(2027, 2, 2, 23, 0, tzinfo=timezone.utc), {}),
    ]


def test_every_event_rejection_has_its_reason_and_line(db, users, run_import, tmp_path):
    path = write_csv(tmp_path / "e.csv", HEADER + "\n".join([
        "ann@example.com,trial_started,2027-02-01,",          # 2 ok
        "ann@example.com,trial_converted,2027-02-09,[1]",     # 3
        "ann@example.com,trial_converted,2027-02-09,{oops",   # 4
        "zed@example.com,trial_started,2027-02-01,",          # 5
        "ann@example.com,trial_started,soon,",                # 6
        "ann@example.com,,2027-02-01,",                       # 7
        "ann@example.com,trial_started,,",                    # 8
        ",trial_started,2027-02-01,",                         # 9
        "ann@example.com," + "t" * 101 + ",2027-02-01,",      # 10
        'ann@example.com,x,2027-02-01,"""text"""',            # 11
    ]) + "\n")
    outcome = run_import("events", path)
    assert (outcome.result.inserted, outcome.result.rejected) == (1, 9)
    got = {int(r["line"]): r["reason"] for r in read_rejects(outcome.rejects_path)}
    assert got[3] == "data is not a JSON object (got list)"
    assert got[4].startswith("data is not valid JSON")
    assert got[5] == "unknown contact 'zed@example.com' (import it as a contact first)"
    assert got[6] == "bad occurred_at 'soon' (ISO 8601 date or timestamp expected)"
    assert got[7] == "type is required"
    assert got[8] == "occurred_at is required"
    assert got[9] == "email is required"
    assert got[10] == "type is longer than 100 characters"
    assert got[11] == "data is not a JSON object (got str)"


def test_reimport_and_data_updates(db, users, run_import, tmp_path):
    path = write_csv(tmp_path / "e.csv", HEADER + "".join(
        f'ann@example.com,page_view,2027-02-01T10:{i:02d},"{{""n"": {i}}}"\n' for i in range(60)))
    assert run_import("events", path, batch_size=25).result.inserted == 60
    before = snapshot(db)
    again = run_import("events", path, batch_size=25).result
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 60)
    assert snapshot(db) == before

    write_csv(tmp_path / "upd.csv", HEADER + 'ann@example.com,page_view,2027-02-01T10:00,"{""n"": 99}"\n'
              "ann@example.com,page_view,2027-02-01T10:01,\n")  # empty data keeps the stored data
    result = run_import("events", tmp_path / "upd.csv").result
    assert (result.updated, result.unchanged) == (1, 1)
    stored = events(db)
    assert stored[0][2] == {"n": 99} and stored[1][2] == {"n": 1}


def test_events_file_without_data_column(db, users, run_import, tmp_path):
    path = write_csv(tmp_path / "e.csv", "email,type,occurred_at\nbob@example.com,trial_cancelled,2027-02-05T08:00Z\n")
    assert run_import("events", path).result.inserted == 1
    assert events(db) == [("trial_cancelled", datetime(2027, 2, 5, 8, 0, tzinfo=timezone.utc), {})]
