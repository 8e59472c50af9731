"""Send log page times on a ledger of 1,000,000 deliveries (SQLite), beside a bare primary-key read.

Run: .venv/bin/python bench/admin.py [--deliveries 1000000] [--repeat 5] [--db PATH]

Fills a fresh, migrated SQLite database (or reuses `--db` when it already holds the ledger):
200,000 contacts, 40 campaigns with 400 runs (a few campaigns with many runs, most with a few),
deliveries spread over 90 days with the status mix of real sending. Then it times each kind of
send log page (`engine.sendlog.log_page`, the query behind /admin's send log) as the median of
`--repeat` runs, next to the reference measured in the same run on the same file: the bare
`SELECT id FROM deliveries ORDER BY id DESC LIMIT 51`. Target: every page under 100 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from engine.db import make_engine  # noqa: E402
from engine.migrate import upgrade  # noqa: E402
from engine.models import Campaign, Contact, Delivery, Run  # noqa: E402
from engine.sendlog import LogFilter, log_page  # noqa: E402

TZ = ZoneInfo("Europe/Amsterdam")
START = datetime(2027, 1, 1, 7, tzinfo=timezone.utc)
CONTACTS = 200_000
STATUS_MIX = ["sent"] * 90 + ["failed"] * 3 + ["skipped"] * 5 + ["queued"] * 2


def fill(engine, deliveries: int) -> None:
    """Contacts, campaigns, runs and `deliveries` ledger rows, in big executemany batches."""
    rng = random.Random(2027)
    with engine.begin() as conn:
        conn.execute(insert(Contact), [
            {"email": f"user{i}@example.com", "email_key": f"user{i}@example.com", "status": "subscribed",
             "attributes": {}, "created_at": START, "updated_at": START} for i in range(CONTACTS)])
        conn.execute(insert(Campaign), [
            {"id": f"campaign-{c}", "name": f"Campaign {c}", "kind": "seasonal_discount", "values": ["economic"],
             "definition": {}, "source_hash": "x", "synced_at": START} for c in range(40)])
        # Runs: campaign-0 and -1 send daily (many runs), the rest a handful each.
        runs = []
        for c in range(40):
            count = 90 if c < 2 else 6
            for k in range(count):
                runs.append((f"campaign-{c}", START + timedelta(days=k * (90 // count), minutes=c)))
        runs.sort(key=lambda r: r[1])
        run_ids = []
        for campaign_id, at in runs:
            run_ids.append((conn.execute(insert(Run).values(campaign_id=campaign_id, occurrence_at=at, status="finished",
                                                           definition={}, created_at=at).returning(Run.id)).scalar(), at))
        per_run = deliveries // len(run_ids)
        batch = []
        written = 0
        for index, (run_id, at) in enumerate(run_ids):
            n = per_run if index < len(run_ids) - 1 else deliveries - written
            for contact in rng.sample(range(1, CONTACTS + 1), n):
                created = at + timedelta(seconds=len(batch) % 600)
                status = rng.choice(STATUS_MIX)
                batch.append({"run_id": run_id, "contact_id": contact, "email": f"user{contact - 1}@example.com",
                              "segment": "everyone", "status": status, "attempts": 1, "data": {},
                              "created_at": created, "updated_at": created,
                              "sent_at": created if status == "sent" else None,
                              "last_error": "550 5.1.1 user unknown" if status == "failed" else None})
            written += n
            if len(batch) >= 50_000:
                conn.execute(insert(Delivery), batch)
                batch.clear()
        if batch:
            conn.execute(insert(Delivery), batch)
        conn.execute(text("ANALYZE"))


def timed(fn, repeat: int) -> float:
    """Median milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="SQLite file to fill (or reuse when it holds the ledger)")
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="vm-admin-bench-")) / "bench.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with Session(engine) as s:
        present = s.execute(select(func.count()).select_from(Delivery)).scalar()
    if present < args.deliveries:
        started = time.perf_counter()
        fill(engine, args.deliveries)
        print(f"filled {args.deliveries:,} deliveries in {time.perf_counter() - started:.0f} s ({path})")
    with Session(engine) as s:
        total = s.execute(select(func.count()).select_from(Delivery)).scalar()
        newest = s.execute(select(func.max(Delivery.id))).scalar()
        busy = "campaign-0"  # 90 runs: past the merged-range limit
        few = "campaign-7"  # 6 runs
        deep = newest - total // 2  # a cursor half-way down the ledger
        # An address with mail: the contact of the delivery half-way down, asked for in other capitals.
        someone = s.execute(select(Contact.email).join(Delivery, Delivery.contact_id == Contact.id)
                            .where(Delivery.id == deep)).scalar().upper()
        cases = [
            ("first page, no filter", LogFilter(), None),
            ("page half-way down (cursor)", LogFilter(), deep),
            ("status = failed", LogFilter(status="failed"), None),
            ("status = queued, deep cursor", LogFilter(status="queued"), deep),
            ("one address", LogFilter(email=someone), None),
            ("campaign with 6 runs", LogFilter(campaign=few), None),
            ("campaign with 6 runs, failed", LogFilter(campaign=few, status="failed"), None),
            ("campaign with 90 runs", LogFilter(campaign=busy), None),
            ("campaign with 90 runs, failed", LogFilter(campaign=busy, status="failed"), None),
            ("one day", LogFilter(day_from=datetime(2027, 2, 10).date(), day_to=datetime(2027, 2, 10).date()), None),
            ("one day, failed, campaign", LogFilter(campaign=few, status="failed",
                                                    day_from=datetime(2027, 2, 1).date(),
                                                    day_to=datetime(2027, 2, 28).date()), None),
            ("address + campaign + status", LogFilter(email=someone, campaign=busy, status="sent"), None),
        ]
        reference = timed(lambda: s.execute(text("SELECT id FROM deliveries ORDER BY id DESC LIMIT 51")).all(),
                          args.repeat)
        print(f"\nsend log pages on {total:,} deliveries (SQLite, median of {args.repeat}; 50 rows a page)\n")
        print(f"{'page':<34} {'rows':>5} {'ms':>8}")
        print(f"{'-' * 34} {'-' * 5} {'-' * 8}")
        print(f"{'reference: bare PK read, 51 ids':<34} {51:>5} {reference:>8.2f}")
        worst = 0.0
        for name, flt, before in cases:
            rows: list = []

            def run(flt=flt, before=before):
                rows[:] = log_page(s, flt, tz=TZ, before=before, limit=50)[0]
            ms = timed(run, args.repeat)
            worst = max(worst, ms)
            print(f"{name:<34} {len(rows):>5} {ms:>8.2f}")
        print(f"\nslowest page: {worst:.1f} ms (target: under 100 ms) -> {'met' if worst < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
