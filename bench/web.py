"""Public recipient pages under load, served by the production server while a campaign is sending.

Run: .venv/bin/python bench/web.py [--seconds 20] [--clients 200] [--think 1.0] [--contacts 5000]

Builds a temp project (SQLite; templates/, campaigns/spring-sale.toml, spring-contest.toml and
segments.toml), inserts contacts and sends `spring-sale` and `spring-contest` once with the outbox
provider (real `valuemail send` subprocesses) so deliveries exist, and signs tokens for them. It then
starts the production setup as separate processes on 127.0.0.1: `valuemail web` (waitress) and, while
measuring, `valuemail send spring-sale --again` (smtp provider) over and over, so a campaign is
sending for the whole measured time, to an aiosmtpd sink that only counts (its own process too).

Clients: `--clients` simulated recipients, threads in a separate process (bench/_webload.py), each with
one keep-alive http.client connection (or one per request with --close) opened by one untimed warm-up
request. Closed loop: a client sends a request, waits for the answer, then "thinks" for an exponentially
distributed time with mean `--think` seconds (a person reading the page) before the next.

Three phases of `--seconds` each:

  reference:  the clients against GET /healthz only, nothing else running;
  measured:   GET /u/<token> (the unsubscribe confirm page, never the POST), /p/<token> (preferences),
              /v/<token> (view in browser), /k/<token> (coupon), /c/<token> (the contest page, never the
              POST), /r/<token> (a tracked click: recorded, a write, then 302), /healthz and forged tokens
              (altered signature, another key, or another purpose; 400 expected), equal weights, while
              the campaign sends. The target (zero errors, p99 < 100 ms) is for this one;
  saturation: the same, with no think time: each client sends its next request as soon as it has the
              last answer. This finds the throughput; its latency is queueing by construction (with N
              clients always waiting, mean latency = N / throughput: Little's law).

Errors are responses with another status than expected (200, or 400 for forged) and exceptions,
including client timeouts. CPU time is sampled from /proc per process (server, sender, sink, clients)
and for the whole machine, so a machine busy with other work shows up as "other". Only 127.0.0.1 is
ever contacted; temp dirs, servers and subprocesses are cleaned up on exit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-web-secret"
HOST = "127.0.0.1"
TARGET_P99_MS = 100.0
CAMPAIGN = "spring-sale"  # sent in the setup, then again and again while measuring
CONTEST = "spring-contest"  # sent once in the setup, for its contest pages


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
    for name in (f"{CAMPAIGN}.toml", f"{CONTEST}.toml", "segments.toml"):
        shutil.copy(ROOT / "campaigns" / name, project / "campaigns")
    (project / "config.toml").write_text(
        f'[app]\nbase_url = "http://{HOST}:8000"\n'
        f'[provider]\nname = "outbox"\n[provider.smtp]\nhost = "{HOST}"\nport = {smtp_port}\n'
        # No frequency cap: the campaign is sent again and again for as long as the load runs.
        "[sending]\nconcurrency = 4\nbatch_size = 500\nmax_per_day = 0\nmax_per_week = 0\n")
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


def app_env(provider: str) -> dict[str, str]:
    return {**os.environ, "VALUEMAIL_SECRET_KEY": SECRET, "VALUEMAIL_PROVIDER": provider}


def routes_plan(sale_ids: list[int], link_ids: list[int], contest_ids: list[int]) -> dict:
    """Paths per route: signed tokens for real deliveries (and the tracked links of their run), and
    forged ones (400 expected)."""
    from engine.tokens import TokenSigner

    signer, other = TokenSigner(SECRET), TokenSigner("not-the-key")
    rng = random.Random(4)
    ids = rng.sample(sale_ids, min(2000, len(sale_ids)))
    forged = []
    for i in ids[:300]:
        good = signer.sign("unsubscribe", i)
        forged.append(f"/u/{good[:-3]}{'AAA' if not good.endswith('AAA') else 'BBB'}")  # altered signature
        forged.append(f"/p/{other.sign('preferences', i)}")  # signed with another key
        forged.append(f"/v/{signer.sign('unsubscribe', i)}")  # another purpose
    contest = rng.sample(contest_ids, min(2000, len(contest_ids)))
    return {
        "/u/<token> GET": {"paths": [f"/u/{signer.sign('unsubscribe', i)}" for i in ids], "expect": 200},
        "/p/<token>": {"paths": [f"/p/{signer.sign('preferences', i)}" for i in ids], "expect": 200},
        "/v/<token>": {"paths": [f"/v/{signer.sign('view', i)}" for i in ids], "expect": 200},
        "/k/<token> (coupon)": {"paths": [f"/k/{signer.sign('coupon', i)}" for i in ids], "expect": 200},
        "/c/<token> GET (contest)": {"paths": [f"/c/{signer.sign('contest', i)}" for i in contest], "expect": 200},
        # A click is recorded (a write transaction, while the sender writes too), then redirected.
        "/r/<token> (click, 302)": {"paths": [f"/r/{signer.sign_ids('click', i, rng.choice(link_ids))}" for i in ids],
                                    "expect": 302},
        "/healthz": {"paths": ["/healthz"], "expect": 200},
        "forged tokens (400)": {"paths": forged, "expect": 400},
    }


# --- processes --------------------------------------------------------------------------------------


def smtp_sink_main(port: int) -> None:
    """The SMTP sink process: accepts every mail and counts it; prints the count for each stdin line."""
    from aiosmtpd.controller import Controller

    class Counter:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Counter.count += 1
            return "250 OK"

    controller = Controller(Counter(), hostname=HOST, port=port)
    controller.start()
    print("ready", flush=True)
    try:
        for _ in sys.stdin:
            print(Counter.count, flush=True)
    finally:
        controller.stop()


class SmtpSink:
    """aiosmtpd in its own process, so receiving mail does not compete with the web server for a GIL."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--smtp-sink", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the SMTP sink did not start")

    def count(self) -> int:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_web(project: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`valuemail web` on 127.0.0.1:port, once /healthz answers."""
    log_file = open(log_path, "w")
    proc = subprocess.Popen(valuemail(project, "web", "--host", HOST, "--port", str(port)), env=app_env("outbox"),
                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    log_file.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"`valuemail web` exited {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise SystemExit("`valuemail web` did not answer /healthz within 60 s")


class SendLoop(threading.Thread):
    """Runs `valuemail send spring-sale --again` (smtp provider) again and again until halted."""

    def __init__(self, project: Path, cpu: "CpuMonitor"):
        super().__init__(name="bench-send-loop", daemon=True)
        self.project, self.cpu = project, cpu
        self.halted = threading.Event()
        self.lock = threading.Lock()
        self.current: subprocess.Popen | None = None
        self.finished = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while True:
            with self.lock:
                if self.halted.is_set():
                    return
                self.current = subprocess.Popen(valuemail(self.project, "send", CAMPAIGN, "--again"),
                                                env=app_env("smtp"), stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
                self.cpu.track("sender", self.current.pid)
            out, _ = self.current.communicate()
            if self.halted.is_set():
                return
            if self.current.returncode:
                self.failures.append(f"exit {self.current.returncode}: {out[-1500:]}")
                if len(self.failures) >= 3:
                    return
            else:
                self.finished += 1

    def halt(self) -> None:
        with self.lock:
            self.halted.set()
            stop_process(self.current)
        self.join(30)


# --- measuring --------------------------------------------------------------------------------------


def _proc_cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the whole line)


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


class CpuMonitor(threading.Thread):
    """CPU time per role (server, sender, ...) from /proc, sampled every 0.2 s, and of the whole machine.

    A process's CPU time counts from its start; one that ends between two samples loses at most its
    last 0.2 s. `snapshot()` totals are in seconds; phases subtract two snapshots.
    """

    ROLES = ("server", "sender", "smtp sink", "clients", "bench")

    def __init__(self):
        super().__init__(name="bench-cpu", daemon=True)
        self.hz = os.sysconf("SC_CLK_TCK")
        self.lock = threading.Lock()
        self.pids: dict[int, str] = {}
        self.last: dict[int, int] = {}
        self.totals = dict.fromkeys(self.ROLES, 0)
        self.stopped = threading.Event()

    def track(self, role: str, pid: int) -> None:
        with self.lock:
            self.pids[pid] = role
            self.last.setdefault(pid, 0)
        self.sample()

    def sample(self) -> None:
        with self.lock:
            for pid, role in list(self.pids.items()):
                ticks = _proc_cpu_ticks(pid)
                if ticks is None:
                    del self.pids[pid]
                    continue
                self.totals[role] += ticks - self.last[pid]
                self.last[pid] = ticks

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.sample()

    def snapshot(self) -> dict:
        self.sample()
        with self.lock:
            return {"wall": time.monotonic(), "machine": _machine_busy_ticks() / self.hz,
                    **{role: ticks / self.hz for role, ticks in self.totals.items()}}


def cpu_use(before: dict, after: dict) -> dict:
    """CPU seconds per role between two snapshots, plus "other" (the rest of the machine) and the wall time."""
    use = {role: after[role] - before[role] for role in CpuMonitor.ROLES}
    use["other"] = max(0.0, after["machine"] - before["machine"] - sum(use.values()))
    use["wall"] = after["wall"] - before["wall"]
    use["machine"] = after["machine"] - before["machine"]
    return use


class ServerLog:
    """What waitress logged in `valuemail web`'s output between two marks: queue depth and connection limit."""

    def __init__(self, path: Path):
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def since(self, start: int, end: int) -> dict:
        with open(self.path, "rb") as log:
            log.seek(start)
            text = log.read(end - start).decode(errors="replace")
        depths = [int(d) for d in re.findall(r"Task queue depth is (\d+)", text)]
        return {"max_queue": max(depths, default=0), "queued_warnings": len(depths),
                "connection_limit": text.count("connection limit"),
                "errors": [line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL"))][:3]}


def measure(name: str, port: int, routes: dict, args, think: float, cpu: CpuMonitor, sink: SmtpSink,
            server_log: ServerLog) -> dict:
    """One load phase; CPU, mails and the server log are counted from the driver's "start" to its "end"
    (its warm-up requests and closing connections are outside, as they are outside the latencies)."""
    plan = {"host": HOST, "port": port, "seconds": args.seconds, "clients": args.clients, "keepalive": not args.close,
            "timeout": args.timeout, "seed": 1, "think": think, "routes": routes}
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_webload.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu.track("clients", proc.pid)
    proc.stdin.write(json.dumps(plan))
    proc.stdin.close()
    marks = []
    for expected in ("start", "end"):
        line = proc.stderr.readline()
        if line.strip() != expected:
            proc.kill()
            raise SystemExit(f"load driver failed:\n{line}{proc.stderr.read()}")
        marks.append((sink.count(), server_log.mark(), cpu.snapshot()))
    out = proc.stdout.read()
    err = proc.stderr.read()
    if proc.wait(timeout=args.timeout + 120):
        raise SystemExit(f"load driver failed:\n{err}")
    result = json.loads(out)
    (mails_0, log_0, cpu_0), (mails_1, log_1, cpu_1) = marks
    result.update(name=name, cpu=cpu_use(cpu_0, cpu_1), mails=mails_1 - mails_0, server=server_log.since(log_0, log_1))
    return result


# --- reporting --------------------------------------------------------------------------------------


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
    print(f"{'route':<{width}}  {'requests':>8}  {'req/s':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  "
          f"{'errors':>6}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 6}")
    for name, lat, errors, wall in rows:
        if name is None:
            print()
            continue
        n = len(lat)
        print(f"{name:<{width}}  {n:>8}  {n / wall:>7,.0f}  {pct(lat, 50) * 1000:>7.1f}  {pct(lat, 99) * 1000:>7.1f}  "
              f"{(lat[-1] if lat else float('nan')) * 1000:>7.1f}  {errors:>6}")


def print_cpu(results: list[dict], cpus: int) -> None:
    roles = [*CpuMonitor.ROLES, "other"]
    print(f"{'CPU use (% of one core)':<24}" + "".join(f"{r:>10}" for r in roles) + f"{'machine':>10}")
    for result in results:
        use = result["cpu"]
        print(f"{result['name']:<24}" + "".join(f"{100 * use[r] / use['wall']:>9.0f}%" for r in roles)
              + f"{100 * use['machine'] / use['wall']:>6.0f}/{100 * cpus}")


def print_errors(results: list[dict]) -> None:
    samples = [s for result in results for r in result["routes"].values() for s in r["samples"]]
    if samples:
        print("\nerror samples: " + "; ".join(samples[:6]))
    for result in results:
        if result["server"]["errors"]:
            print(f"server errors logged during {result['name']}: " + " | ".join(result["server"]["errors"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=200, help="concurrent simulated recipients")
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean think time in seconds between a client's answer and its next request "
                             "(exponential; reference and measured phases)")
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--close", action="store_true",
                        help="a new connection per request (Connection: close) instead of keep-alive")
    parser.add_argument("--timeout", type=float, default=10.0, help="client socket timeout (a timeout is an error)")
    parser.add_argument("--no-saturation", dest="saturation", action="store_false",
                        help="skip the phase without think time")
    parser.add_argument("--smtp-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smtp_sink:
        smtp_sink_main(args.smtp_sink)
        return

    from sqlalchemy import select

    from engine.commands.web import THREADS
    from engine.config import load_settings
    from engine.db import make_engine
    from engine.models import Delivery, Link, Run

    smtp_port, web_port = free_port(), free_port()
    project = Path(tempfile.mkdtemp(prefix="valuemail-bench-web-"))
    cpu = CpuMonitor()
    sink = web = sender = None
    cpu.track("bench", os.getpid())
    cpu.start()
    try:
        build_project(project, args.contacts, smtp_port)
        start = time.perf_counter()
        for campaign in (CAMPAIGN, CONTEST):
            first = subprocess.run(valuemail(project, "send", campaign), env=app_env("outbox"),
                                   capture_output=True, text=True)
            if first.returncode:
                raise SystemExit(f"valuemail send {campaign} failed:\n{first.stdout}{first.stderr}")
        first_s = time.perf_counter() - start

        settings = load_settings(project / "config.toml", env={}, secret_key=SECRET)
        engine = make_engine(settings.database_url)
        with engine.connect() as conn:
            def sent(campaign: str) -> list[int]:
                return list(conn.execute(select(Delivery.id).join(Run, Run.id == Delivery.run_id).where(
                    Run.campaign_id == campaign, Delivery.status == "sent")).scalars())

            ids, contest_ids = sent(CAMPAIGN), sent(CONTEST)
            link_ids = list(conn.execute(select(Link.id).join(Run, Run.id == Link.run_id).where(
                Run.campaign_id == CAMPAIGN)).scalars())
        engine.dispose()
        if not (ids and contest_ids and link_ids):
            raise SystemExit(f"the setup sends left {len(ids)} + {len(contest_ids)} sent deliveries, "
                             f"{len(link_ids)} tracked links")
        routes = routes_plan(ids, link_ids, contest_ids)

        sink = SmtpSink(smtp_port)
        cpu.track("smtp sink", sink.proc.pid)
        log_path = project / "web.log"
        web = start_web(project, web_port, log_path)
        cpu.track("server", web.pid)
        server_log = ServerLog(log_path)

        cpus = os.cpu_count() or 1
        connections = "a new connection per request" if args.close else \
            "one keep-alive connection each, opened by an untimed warm-up request"
        print(f"Python {sys.version.split()[0]}, {cpus} CPUs; `valuemail web` (waitress, {THREADS} threads) on "
              f"http://{HOST}:{web_port}; SQLite (WAL); {args.contacts} contacts")
        print(f"setup: `valuemail send {CAMPAIGN}` and `{CONTEST}` (outbox) {first_s:.1f} s; tokens signed for "
              f"{len(ids)} + {len(contest_ids)} deliveries and {len(link_ids)} tracked links")
        print(f"clients: {args.clients} simulated recipients in a separate process (threads, http.client, "
              f"{connections}); closed loop: each waits for its answer, then thinks for an exponentially "
              f"distributed time (mean {args.think:g} s) before its next request; route and token picked at "
              f"random, equal weights; {args.seconds:g} s per phase, client timeout {args.timeout:g} s\n")

        reference = measure("reference", web_port, {"/healthz": routes["/healthz"]}, args, args.think, cpu, sink,
                            server_log)

        sender = SendLoop(project, cpu)
        sender.start()
        mails_before, waited = sink.count(), time.monotonic()
        while sink.count() == mails_before:  # the measuring starts once mails flow
            if not sender.is_alive() or time.monotonic() - waited > 120:
                raise SystemExit("the send did not start delivering:\n" + "\n".join(sender.failures))
            time.sleep(0.2)
        results = [measure("measured", web_port, routes, args, args.think, cpu, sink, server_log)]
        if args.saturation and args.think:
            results.append(measure("saturation (no think)", web_port, routes, args, 0.0, cpu, sink, server_log))
        sending = sender.is_alive()
        sender.halt()
        measured = results[0]

        print(f"measured: public routes while `valuemail send {CAMPAIGN} --again` (smtp -> aiosmtpd sink on {HOST}) "
              f"sends; reference: the same {args.clients} clients on GET /healthz only, nothing else running")
        rows = rows_for(measured)
        rows.append((None, [], 0, 1))
        rows.append(rows_for(reference, "reference: ")[0])  # the only route; its "overall" row would repeat it
        print_table(rows)
        if len(results) > 1:
            saturation = results[1]
            print(f"\nsaturation: the same clients and routes with no think time, still while sending "
                  f"(throughput; latency here is queueing: {args.clients} clients always waiting)")
            print_table(rows_for(saturation))
            overall = rows_for(saturation)[-1]
            throughput = len(overall[1]) / overall[3]
            print(f"Little's law: {args.clients} clients / {throughput:,.0f} req/s = "
                  f"{1000 * args.clients / throughput:,.0f} ms mean latency with no think time; p99 < "
                  f"{TARGET_P99_MS:.0f} ms that way would take over {1000 * args.clients / TARGET_P99_MS:,.0f} req/s")
        print_errors([measured, reference, *results[1:]])

        print()
        print_cpu([reference, *results], cpus)
        for result in [reference, *results]:
            requests = sum(len(r["latencies"]) for r in result["routes"].values())
            server = result["server"]
            per_request = 1000 * result["cpu"]["server"] / max(requests, 1)
            print(f"{result['name']}: server CPU {per_request:.1f} ms per request; "
                  f"the sink received {result['mails']} mails ({result['mails'] / result['wall']:.0f}/s); "
                  f"waitress task queue deepest {server['max_queue']} ({server['queued_warnings']} requests waited "
                  f"for one of its {THREADS} threads)"
                  + (f"; connection limit reached {server['connection_limit']} times"
                     if server["connection_limit"] else ""))
        print(f"sends: {sender.finished} complete `send --again` runs, "
              f"{'one still sending when the load ended' if sending else 'the last one ended before the load did'}"
              + (f"; FAILED: {sender.failures[0]}" if sender.failures else ""))
        if not measured["mails"]:
            print("WARNING: no mail was delivered during the measured phase, so it did not run while sending")
        busy = measured["cpu"]["other"] / measured["cpu"]["wall"]
        if busy > 0.15:
            print(f"NOTE: other processes on this machine used {100 * busy:.0f}% of a core during the measured phase; "
                  f"latencies are inflated by that")

        *per_route, overall = rows_for(measured)
        errors, p99 = overall[2], pct(overall[1], 99) * 1000
        worst = max(per_route, key=lambda row: pct(row[1], 99))
        met = errors == 0 and p99 < TARGET_P99_MS
        print(f"target: zero errors, p99 < {TARGET_P99_MS:.0f} ms with {args.clients} clients thinking "
              f"{args.think:g} s on average, while sending: {'met' if met else 'NOT met'} ({errors} errors, "
              f"p99 {p99:.1f} ms over all public routes at {len(overall[1]) / overall[3]:,.0f} req/s; "
              f"slowest route {worst[0]}, p99 {pct(worst[1], 99) * 1000:.1f} ms)")
    finally:
        if sender is not None:
            sender.halt()
        stop_process(web)
        if sink is not None:
            sink.stop()
        cpu.stopped.set()
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
