"""Public recipient pages under load, served by the production server while a campaign is sending.

Run: .venv/bin/python bench/web.py [--seconds 20] [--clients 200] [--contacts 5000]

Builds a temp project (SQLite; templates/, campaigns/spring-sale.toml, segments gold + everyone),
inserts contacts and sends `spring-sale` once with the outbox provider (a real `valuemail send`
subprocess) so deliveries exist, and signs unsubscribe / preferences / view tokens for them. It then
serves create_app (with the view-in-browser renderer) through waitress via
engine.commands.web.start_in_thread on 127.0.0.1:<free port>, exactly as `valuemail run` does.

Two load phases, each `--clients` closed-loop clients (threads in a separate process, bench/_webload.py,
one keep-alive http.client connection each, or one per request with --close;
no think time) for `--seconds`:

  reference: the same clients against GET /healthz only, with nothing else running;
  measured:  GET /u/<token> (the confirm page, never the POST), /p/<token>, /v/<token>, /healthz and
             forged tokens (altered signature, another key, or another purpose; 400 expected), equal
             weights, WHILE `valuemail send spring-sale --again` (smtp provider) sends to an aiosmtpd
             sink in this process.

Errors are responses with another status than expected (200, or 400 for forged) and exceptions,
including client timeouts. Only 127.0.0.1 is ever contacted; temp dirs, servers and subprocesses are
cleaned up on exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-web-secret"
HOST = "127.0.0.1"
TARGET_P99_MS = 100.0


class _Sink:
    """aiosmtpd handler that only counts."""

    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


class QueueDepth(logging.Filter):
    """Keeps the deepest "Task queue depth is N" waitress reports (requests waiting for a worker thread)
    instead of printing one warning per queued request."""

    def __init__(self):
        super().__init__()
        self.max = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args[0], int):
            self.max = max(self.max, record.args[0])
        return False


class ConnectionLimit(logging.Filter):
    """Counts waitress's "reached the connection limit" warnings instead of printing each."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "connection limit" in record.getMessage():
            self.count += 1
            return False
        return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def build_project(project: Path, contacts: int, smtp_port: int) -> None:
    from sqlalchemy import insert

    from engine.db import make_engine
    from engine.migrate import upgrade
    from engine.models import Contact

    shutil.copytree(ROOT / "templates", project / "templates")
    (project / "campaigns").mkdir()
    shutil.copy(ROOT / "campaigns" / "spring-sale.toml", project / "campaigns")
    (project / "campaigns" / "segments.toml").write_text("[gold]\nltv_min = 500\n\n[everyone]\n")
    (project / "config.toml").write_text(
        f'[app]\nbase_url = "http://{HOST}:8000"\n'
        f'[provider]\nname = "outbox"\n[provider.smtp]\nhost = "{HOST}"\nport = {smtp_port}\n'
        "[sending]\nconcurrency = 4\nbatch_size = 500\n")
    engine = make_engine(f"sqlite:///{project / 'var' / 'valuemail.db'}")
    upgrade(engine)
    now = datetime.now(timezone.utc)
    first = ["Anneke", "Sanne", "Joris", "Zoë", "Bjørn", "Åse", "Ingrid", "Sven", "Noël", "Marieke"]
    rows = [{"email": f"user{i}@example.com", "email_key": f"user{i}@example.com", "first_name": first[i % len(first)],
             "last_name": "Jansen", "status": "subscribed", "attributes": {}, "created_at": now, "updated_at": now}
            for i in range(contacts)]
    with engine.begin() as conn:
        conn.execute(insert(Contact), rows)
    engine.dispose()


def valuemail(project: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "valuemail"), "--config", str(project / "config.toml"), *args]


def send_env(provider: str) -> dict[str, str]:
    return {**os.environ, "VALUEMAIL_SECRET_KEY": SECRET, "VALUEMAIL_PROVIDER": provider}


def routes_plan(delivery_ids: list[int]) -> dict:
    """Paths per route: signed tokens for real deliveries, and forged ones (400 expected)."""
    from engine.tokens import TokenSigner

    signer, other = TokenSigner(SECRET), TokenSigner("not-the-key")
    rng = random.Random(4)
    ids = rng.sample(delivery_ids, min(2000, len(delivery_ids)))
    forged = []
    for i in ids[:300]:
        good = signer.sign("unsubscribe", i)
        forged.append(f"/u/{good[:-3]}{'AAA' if not good.endswith('AAA') else 'BBB'}")  # altered signature
        forged.append(f"/p/{other.sign('preferences', i)}")  # signed with another key
        forged.append(f"/v/{signer.sign('unsubscribe', i)}")  # another purpose
    return {
        "/u/<token> GET": {"paths": [f"/u/{signer.sign('unsubscribe', i)}" for i in ids], "expect": 200},
        "/p/<token>": {"paths": [f"/p/{signer.sign('preferences', i)}" for i in ids], "expect": 200},
        "/v/<token>": {"paths": [f"/v/{signer.sign('view', i)}" for i in ids], "expect": 200},
        "/healthz": {"paths": ["/healthz"], "expect": 200},
        "forged tokens (400)": {"paths": forged, "expect": 400},
    }


def drive(port: int, routes: dict, args) -> dict:
    plan = {"host": HOST, "port": port, "seconds": args.seconds, "clients": args.clients, "keepalive": not args.close,
            "timeout": args.timeout, "seed": 1, "routes": routes}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "_webload.py")], input=json.dumps(plan),
                          capture_output=True, text=True, timeout=args.seconds + args.timeout + 120)
    if done.returncode:
        raise SystemExit(f"load driver failed:\n{done.stderr}")
    return json.loads(done.stdout)


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def rows_for(result: dict, label_prefix: str = "") -> list[tuple]:
    wall = result["wall"]
    rows, all_lat, all_err = [], [], 0
    for name, r in result["routes"].items():
        lat = sorted(r["latencies"])
        all_lat.extend(lat)
        all_err += r["errors"]
        rows.append((label_prefix + name, lat, r["errors"], wall))
    rows.append((label_prefix + "overall", sorted(all_lat), all_err, wall))
    return rows


def print_table(rows: list[tuple]) -> None:
    width = max(len(r[0]) for r in rows if r[0])
    print(f"{'route':<{width}}  {'requests':>8}  {'req/s':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  {'errors':>6}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 6}")
    for name, lat, errors, wall in rows:
        if name is None:
            print()
            continue
        n = len(lat)
        print(f"{name:<{width}}  {n:>8}  {n / wall:>7,.0f}  {pct(lat, 50) * 1000:>7.1f}  {pct(lat, 99) * 1000:>7.1f}  "
              f"{(lat[-1] if lat else float('nan')) * 1000:>7.1f}  {errors:>6}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=200, help="concurrent closed-loop clients")
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--close", action="store_true",
                        help="a new connection per request (Connection: close) instead of keep-alive")
    parser.add_argument("--timeout", type=float, default=10.0, help="client socket timeout (a timeout is an error)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    queue_depth = QueueDepth()
    logging.getLogger("waitress.queue").addFilter(queue_depth)
    connection_limit = ConnectionLimit()
    logging.getLogger("waitress").addFilter(connection_limit)

    from aiosmtpd.controller import Controller
    from sqlalchemy import select

    from engine.clock import SystemClock
    from engine.commands.web import THREADS, start_in_thread
    from engine.config import load_settings
    from engine.db import make_engine
    from engine.models import Delivery
    from engine.rendering import Renderer
    from engine.sending.view import make_view_renderer
    from engine.web import create_app

    smtp_port = free_port()
    sink = _Sink()
    controller = Controller(sink, hostname=HOST, port=smtp_port)
    project = Path(tempfile.mkdtemp(prefix="valuemail-bench-web-"))
    server = sender = engine = None
    controller.start()
    try:
        build_project(project, args.contacts, smtp_port)
        start = time.perf_counter()
        first = subprocess.run(valuemail(project, "send", "spring-sale"), env=send_env("outbox"),
                               capture_output=True, text=True)
        if first.returncode:
            raise SystemExit(f"valuemail send failed:\n{first.stdout}{first.stderr}")
        first_s = time.perf_counter() - start

        settings = load_settings(project / "config.toml", env={}, secret_key=SECRET)
        engine = make_engine(settings.database_url)
        with engine.connect() as conn:
            ids = list(conn.execute(select(Delivery.id).where(Delivery.status == "sent")).scalars())
        if not ids:
            raise SystemExit("the first send produced no sent deliveries")
        renderer = Renderer(settings.templates_dir)
        app = create_app(settings=settings, engine=engine,
                         view_renderer=make_view_renderer(settings=settings, renderer=renderer, clock=SystemClock()))
        server = start_in_thread(app, host=HOST, port=0)
        port = server.server.effective_port
        routes = routes_plan(ids)

        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; waitress via start_in_thread "
              f"({THREADS} threads) on {server.url}; SQLite; {args.contacts} contacts")
        print(f"setup: first `valuemail send spring-sale` (outbox) {first_s:.1f} s, {len(ids)} deliveries signed")
        print(f"load: {args.clients} closed-loop clients (separate process, http.client, "
              f"{'a connection per request' if args.close else 'one keep-alive connection each'}, no think time), {args.seconds:.0f} s per phase, client timeout {args.timeout:.0f} s\n")

        reference = drive(port, {"/healthz": routes["/healthz"]}, args)

        sender = subprocess.Popen(valuemail(project, "send", "spring-sale", "--again"),
                                  env=send_env("smtp"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        send_start = time.perf_counter()
        measured = drive(port, routes, args)
        load_end = time.perf_counter()
        send_running_at_end = sender.poll() is None
        out, _ = sender.communicate(timeout=600)
        send_s = time.perf_counter() - send_start
        if sender.returncode:
            print(f"WARNING: second send exited {sender.returncode}:\n{out[-2000:]}")
        overlap = min(send_s, load_end - send_start)

        rows = rows_for(measured, "")
        rows.append((None, [], 0, 1))
        ref_rows = rows_for(reference, "reference: ")
        rows.append(ref_rows[0])  # the only route; its "overall" row would be a duplicate
        print(f"measured: public routes while `valuemail send spring-sale --again` (smtp -> aiosmtpd sink on "
              f"{HOST}) sends; reference: the same {args.clients} clients on GET /healthz only, nothing else running")
        print_table(rows)
        samples = [s for r in measured["routes"].values() for s in r["samples"]] + \
                  [s for r in reference["routes"].values() for s in r["samples"]]
        if samples:
            print("\nerror samples: " + "; ".join(samples[:6]))
        print(f"\nsecond send: {sink.count} mails received by the sink in {send_s:.1f} s; overlapped the load for "
              f"{overlap:.1f} of {args.seconds:.0f} s" + (" (still sending when the load ended)" if send_running_at_end
                                                           else ""))
        overall = rows_for(measured)[-1]
        errors, p99 = overall[2], pct(overall[1], 99) * 1000
        met = errors == 0 and p99 < TARGET_P99_MS
        print(f"waitress task queue (requests waiting for one of its {THREADS} threads): deepest {queue_depth.max}")
        if connection_limit.count:
            print(f"waitress refused to accept new connections {connection_limit.count} times (connection_limit, "
                  f"default 100): connections beyond it wait unserved in the listen backlog until a slot frees (with keep-alive "
                  f"clients that is never, so they hit the client timeout)")
        print(f"target: zero errors, p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'} "
              f"({errors} errors, p99 {p99:.1f} ms over all public routes)")
    finally:
        if sender is not None and sender.poll() is None:
            os.killpg(sender.pid, signal.SIGTERM)
            try:
                sender.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(sender.pid, signal.SIGKILL)
                sender.wait()
        if server is not None:
            server.stop()
        if engine is not None:
            engine.dispose()
        controller.stop()
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
