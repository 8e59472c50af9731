"""A big file is streamed: memory stays far below the file's size."""

from __future__ import annotations

import csv
import tracemalloc

import pytest
from sqlalchemy import func, select

from engine.models import Contact, ContactTag

ROWS = 150_000  # ~26 MB; under tracemalloc this takes ~40 s on SQLite
BAD = len(range(7, ROWS, 50_000))


def write_big_contacts(path, rows: int) -> int:
    """Write `rows` contacts (with a few bad ones) and return the file's size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name", "country", "tags", "plan", "note"])
        for i in range(rows):
            email = f"bad-{i}" if i % 50_000 == 7 else f"user{i}@example.com"
            # A long custom attribute makes the file big without making the test slow.
            writer.writerow([email, f"First{i}", "NL", "news;vip" if i % 4 == 0 else "", "pro" if i % 2 else "free",
                             f"{i:>8} " + "lorem ipsum dolor sit amet " * 4])
    return path.stat().st_size


# Streaming is a property of the reader and the batching, the same code on both databases. Under
# tracemalloc this file takes ~55 s on PostgreSQL (~38 s on SQLite), too slow to run twice in the
# regular suite, so the memory check runs on SQLite; the other tests cover PostgreSQL's SQL.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_big_file_streams_in_bounded_memory(db, run_import, tmp_path):
    path = tmp_path / "big.csv"
    size = write_big_contacts(path, ROWS)
    # Warm up first, so the one-off loads (code tables, compiled statements) are not counted.
    (tmp_path / "warm.csv").write_text("email,tags\nwarm@example.net,x\n")
    run_import("contacts", tmp_path / "warm.csv")
    tracemalloc.start()
    try:
        outcome = run_import("contacts", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (outcome.result.inserted, outcome.result.rejected) == (ROWS - BAD, BAD)
    # The file is ~26 MB and the peak stays at a few MB whatever the file's length (one batch of
    # rows, SQLAlchemy's parameters); a reader that held every row would peak far above the size.
    assert peak < size / 5, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Contact.__table__)).scalar_one() == ROWS - BAD + 1
        assert conn.execute(select(func.count()).select_from(ContactTag.__table__)).scalar_one() == 2 * (ROWS // 4) + 1
