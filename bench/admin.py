"""Send log page times on a ledger of 1,000,000 deliveries (SQLite), beside a bare primary-key read.

Run: .venv/bin/python bench/admin.py [--deliveries 1000000] [--repeat 5] [--db PATH] [--no-http]

Fills a fresh, migrated SQLite database (or reuses `--db` when it already holds the ledger):
200,000 contacts, 40 campaigns with 400 runs (a few campaigns with many runs, most with a few),
deliveries spread over 90 days with the status mix of real sending. Then it times each kind of
send log page (`engine.sendlog.log_page`, the query behind /admin's send log) as the median of
`--repeat` runs, next to the reference measured in the same run on the same file: the bare
`SELECT id FROM deliveries ORDER BY id DESC LIMIT 51`.

Beside each query time it prints the time of the whole rendered page over HTTP: the app as
`valuemail web` serves it (waitress on a loopback port, the same SQLite file), an admin logged in
through the login form, one keep-alive connection, GET /admin/log with the same filters and
cursor; the time runs from sending the request to the last byte of the HTML (query, login check,
template, transfer). Its reference is the login page (GET /admin/login: no ledger query). Target:
every page under 100 ms.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
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

from engine import admins  # noqa: E402
from engine.clock import SystemClock  # noqa: E402
from engine.db import make_engine, read_only, session_scope  # noqa: E402
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


ADMIN = "bench-admin@example.com"
PASSWORD = "bench admin password"
SECRET = "bench-admin-secret"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ROW = re.compile(r'<tr id="d\d+">')


class LogPages:
    """The app served by waitress on the bench database, and a browser-like session logged in as an admin."""

    def __init__(self, db_path: Path):
        import requests

        from engine.commands.web import start_in_thread
        from engine.config import load_settings
        from engine.web import create_app

        self.project = project = Path(tempfile.mkdtemp(prefix="vm-admin-bench-web-"))
        (project / "config.toml").write_text(f'[database]\nurl = "sqlite:///{db_path}"\n'
                                             f'[app]\ntimezone = "{TZ.key}"\n')
        settings = load_settings(project / "config.toml", env={}, secret_key=SECRET)
        self.engine = make_engine(settings.database_url)
        with session_scope(self.engine) as s:
            if admins.find_admin(s, ADMIN) is None:
                admins.create_admin(s, ADMIN, PASSWORD, role="viewer", now=datetime.now(timezone.utc))
        self.server = start_in_thread(create_app(settings=settings, engine=self.engine, clock=SystemClock()),
                                      host="127.0.0.1", port=0)
        self.url = self.server.url
        self.http = requests.Session()
        self.anonymous = requests.Session()  # the reference page: the login form, as a visitor sees it
        token = _CSRF.search(self.get("/admin/login").text).group(1)
        answer = self.http.post(f"{self.url}/admin/login", data={"csrf_token": token, "email": ADMIN,
                                                                 "password": PASSWORD}, allow_redirects=False)
        if answer.status_code != 302:
            raise SystemExit(f"could not log in to the bench app: HTTP {answer.status_code}")

    def login_form(self):
        """GET /admin/login without a session (the reference: a rendered page with no ledger query)."""
        return self.get("/admin/login", http=self.anonymous)

    def get(self, path: str, params: dict | None = None, *, http=None):
        response = (http or self.http).get(f"{self.url}{path}", params=params, allow_redirects=False, timeout=60)
        if response.status_code != 200:
            raise SystemExit(f"GET {path} {params or ''}: HTTP {response.status_code}")
        return response

    def log_page(self, flt: LogFilter, before: int | None) -> int:
        """GET /admin/log with `flt` and cursor `before`; the rows shown."""
        params = {"email": flt.email, "campaign": flt.campaign, "status": flt.status,
                  "from": flt.day_from.isoformat() if flt.day_from else "",
                  "to": flt.day_to.isoformat() if flt.day_to else "",
                  **({"before": str(before)} if before is not None else {})}
        return len(_ROW.findall(self.get("/admin/log", {k: v for k, v in params.items() if v}).text))

    def close(self) -> None:
        self.http.close()
        self.anonymous.close()
        self.server.stop()
        self.engine.dispose()
        shutil.rmtree(self.project, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="SQLite file to fill (or reuse when it holds the ledger)")
    parser.add_argument("--no-http", action="store_true", help="Time the queries only, not the pages over HTTP.")
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
    # Read-only (BEGIN DEFERRED): the timing session must not hold SQLite's write lock while the
    # served app logs its admin in.
    with Session(read_only(engine)) as s:
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
        pages = None if args.no_http else LogPages(path)
        try:
            page_reference = timed(pages.login_form, args.repeat) if pages else None
            print(f"\nsend log pages on {total:,} deliveries (SQLite, median of {args.repeat}; 50 rows a page)\n"
                  "query: engine.sendlog.log_page; page: GET /admin/log over HTTP (waitress, logged in), "
                  "the rendered HTML\n")
            print(f"{'page':<34} {'rows':>5} {'query ms':>9} {'page ms':>8}")
            print(f"{'-' * 34} {'-' * 5} {'-' * 9} {'-' * 8}")
            shown = f"{page_reference:>8.2f}" if pages else f"{'-':>8}"
            print(f"{'reference: bare PK read, 51 ids':<34} {51:>5} {reference:>9.2f} {'':>8}")
            print(f"{'reference: login page (no query)':<34} {'':>5} {'':>9} {shown}")
            worst_query = worst_page = 0.0
            for name, flt, before in cases:
                rows: list = []

                def run(flt=flt, before=before):
                    rows[:] = log_page(s, flt, tz=TZ, before=before, limit=50)[0]
                ms = timed(run, args.repeat)
                worst_query = max(worst_query, ms)
                page_ms = "-"
                if pages:
                    shown_rows = pages.log_page(flt, before)
                    if shown_rows != len(rows):
                        raise SystemExit(f"{name}: the page shows {shown_rows} rows, the query returns {len(rows)}")
                    timing = timed(lambda flt=flt, before=before: pages.log_page(flt, before), args.repeat)
                    worst_page = max(worst_page, timing)
                    page_ms = f"{timing:.2f}"
                print(f"{name:<34} {len(rows):>5} {ms:>9.2f} {page_ms:>8}")
        finally:
            if pages:
                pages.close()
        worst = max(worst_query, worst_page)
        print(f"\nslowest query: {worst_query:.1f} ms"
              + (f"; slowest page over HTTP: {worst_page:.1f} ms" if pages else "")
              + f" (target: every page under 100 ms) -> {'met' if worst < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
