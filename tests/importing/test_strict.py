"""--strict: one bad row and nothing at all is applied."""

from __future__ import annotations

import pytest

from .conftest import read_rejects, snapshot, write_csv


@pytest.fixture
def seeded(db, run_import, tmp_path):
    write_csv(tmp_path / "seed.csv", "email,first_name,tags\nann@example.com,Ann,vip\n")
    run_import("contacts", tmp_path / "seed.csv")
    write_csv(tmp_path / "seed-o.csv", "order_id,email,placed_at,total\nS0,ann@example.com,2027-01-01,5\n")
    run_import("orders", tmp_path / "seed-o.csv")


def test_strict_contacts_apply_nothing_even_across_batches(db, seeded, run_import, tmp_path):
    good = "".join(f"new{i}@example.com,N{i},x\n" for i in range(30))
    # The bad row comes after several committed-size batches, and an update of an existing row.
    path = write_csv(tmp_path / "c.csv", "email,first_name,tags\nann@example.com,Changed,eco\n" + good + "bad,B,\n")
    before = snapshot(db)
    outcome = run_import("contacts", path, strict=True, batch_size=5)
    assert not outcome.applied
    assert (outcome.result.rejected, outcome.result.inserted, outcome.result.updated) == (1, 30, 1)
    assert snapshot(db) == before
    assert [r["line"] for r in read_rejects(outcome.rejects_path)] == ["33"]
    assert outcome.sample[0].line == 33


def test_strict_orders_and_events_apply_nothing(db, seeded, run_import, tmp_path):
    before = snapshot(db)
    orders = write_csv(tmp_path / "o.csv", "order_id,email,placed_at,total\n"
                       "S0,ann@example.com,2027-01-01,6\nS1,ann@example.com,2027-01-02,7\nS2,zed@example.com,2027-01-02,7\n")
    outcome = run_import("orders", orders, strict=True)
    assert not outcome.applied and outcome.result.rejected == 1
    events = write_csv(tmp_path / "e.csv", "email,type,occurred_at,data\n"
                       "ann@example.com,trial_started,2027-01-01,\nann@example.com,trial_converted,2027-01-09,[]\n")
    outcome = run_import("events", events, strict=True)
    assert not outcome.applied and outcome.result.rejected == 1
    assert snapshot(db) == before


def test_strict_without_bad_rows_applies_everything(db, seeded, run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email\nx@example.com\ny@example.com\n")
    outcome = run_import("contacts", path, strict=True)
    assert outcome.applied and outcome.result.inserted == 2 and outcome.rejects_path is None
