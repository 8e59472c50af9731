"""Kill -9 trials: `valuemail send` killed mid-run, resumed, and checked against an SMTP recorder.

Run: .venv/bin/python bench/crash.py [--db sqlite|postgresql|both] [--trials 10] [--contacts 3000] [--seed 20270320]
     (also --batch-size, --commit-every, --commit-ms, --processes, --concurrency, --pool-size; see --help)

Each trial builds a fresh project (campaigns/spring-sale.toml and templates/, segments `[gold]
ltv_min = 500` and `[everyone]`), inserts N contacts directly, points `[provider] name = "smtp"` at a
recording SMTP server on 127.0.0.1 (tests/support/smtpd.SmtpSink: every message's recipient and
bytes, so its Message-ID), and then:

1. starts `valuemail send spring-sale` in a new session (its own process group);
2. waits until the server has received a seeded random number of messages (between 5 % and 90 %
   of N, counting repeats), then SIGKILLs the whole process group (and any process of ours that
   left it): a kill -9 of everything sending;
3. repeats 1-2 for 1 to 3 kills at increasing kill points, each time resuming the interrupted run
   with the same command, then lets a last `valuemail send spring-sale` run to completion;
4. checks: nobody lost (every contact received a message), duplicates (messages beyond one per
   recipient) <= duplicate_bound(settings.sending, processes=P) x kills, a repeat carries the same
   Message-ID, and the ledger agrees with the server: one run, finished; no row left queued or
   claimed; sent rows == distinct Message-IDs received; every received Message-ID is a sent row's
   message_id, for that row's address.

Trial i uses seed `--seed` + i (the same kill points on each database); `--seed S --trials 1`
replays trial seed S. P is the sending process count the send command prints, if it prints one;
otherwise the configured `[sending] processes` (os.cpu_count() for 0), or the number of processes
seen alive in the send's process group at the kills when that is smaller. Exit status 1 if any check
failed.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402

from engine.config import load_settings  # noqa: E402
from engine.db import make_engine  # noqa: E402
from engine.migrate import upgrade  # noqa: E402
from engine.models import Delivery, Run  # noqa: E402
from engine.sending.bounds import duplicate_bound  # noqa: E402
from tests.support.data import add_contacts  # noqa: E402
from tests.support.smtpd import Recorder, SmtpSink  # noqa: E402

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")
AS_OF = "2027-03-20T09:00:00+01:00"  # the spring sale's offer window (as the test suite runs)
CAMPAIGN = "spring-sale"
SEGMENTS = "[gold]\nltv_min = 500\n\n[everyone]\n"
MARK = "VALUEMAIL_CRASH_BENCH_MARK"  # set in every send's environment, to find its processes again
KILL_LOW, KILL_HIGH = 0.05, 0.90


# -- the recording server ----------------------------------------------------------------------

def sink_supports_pipelining() -> bool:
    return "pipelining" in inspect.signature(SmtpSink.__init__).parameters


def make_sink(delay: float, pipelining: bool) -> SmtpSink:
    handler = Recorder(delay=delay)
    if pipelining:
        return SmtpSink(handler=handler, pipelining=True)
    return SmtpSink(handler=handler)


_MID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def message_id(data: bytes) -> str:
    """The Message-ID header of a raw message (unfolded), read from the header block only."""
    head = data.split(b"\r\n\r\n", 1)[0]
    found = _MID.search(head)
    if found:
        return b"".join(found.group(1).split()).decode("ascii", "replace")
    value = BytesParser(policy=policy.default).parsebytes(data)["Message-ID"]
    return "".join(str(value).split()) if value is not None else ""


# -- processes ---------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2]), int(fields[3])


def _marked(pid: int, mark: str) -> bool:
    try:
        return f"{MARK}={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def ours(mark: str, leader: int, *, marked: bool = True) -> list[int]:
    """Live processes of one send: its session, or (`marked`) carrying its mark in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":  # gone, or a zombie waiting to be reaped
            continue
        if stat[2] == leader or stat[1] == leader or (marked and _marked(pid, mark)):
            found.append(pid)
    return found


@dataclass
class Send:
    """One `valuemail send` subprocess, in its own session, with its output in a log file."""

    config: Path
    log: Path
    proc: subprocess.Popen = None
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)

    def start(self) -> "Send":
        env = {**os.environ, "VALUEMAIL_SECRET_KEY": "crash-bench-secret", "VALUEMAIL_AS_OF": AS_OF, MARK: self.mark}
        env.pop("VALUEMAIL_CONFIG", None)
        self.out = self.log.open("wb")
        self.proc = subprocess.Popen([VALUEMAIL, "--config", str(self.config), "send", CAMPAIGN], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.config.parent)
        return self

    def group_size(self) -> int:
        return len(ours(self.mark, self.proc.pid, marked=False))

    def kill(self) -> list[int]:
        """SIGKILL the process group, then anything of ours still alive; returns those survivors."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        survivors = ours(self.mark, self.proc.pid)
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()
        return survivors

    def close(self) -> None:
        if not self.out.closed:
            self.out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


_PROCESSES = (re.compile(r"\b(\d+)\s+(?:sending\s+)?(?:worker\s+)?process(?:es)?\b", re.IGNORECASE),
              re.compile(r"\bprocess(?:es)?\s*[=:]\s*(\d+)", re.IGNORECASE))


def printed_processes(output: str) -> int | None:
    """The sending process count a send printed, if it printed one."""
    counts = [int(m.group(1)) for pattern in _PROCESSES for m in pattern.finditer(output)]
    return max(counts) if counts else None


# -- one trial ---------------------------------------------------------------------------------

@dataclass
class Options:
    contacts: int
    batch_size: int
    commit_every: int
    commit_ms: float
    processes: int
    concurrency: int
    pool_size: int
    smtp_delay: float
    pipelining: bool
    stall_seconds: float
    keep: bool


@dataclass
class Result:
    database: str
    trial: int
    seed: int
    kills: int = 0
    kill_points: list[int] = field(default_factory=list)
    received: int = 0
    distinct: int = 0
    lost: int = 0
    duplicates: int = 0
    per_kill: list[int] = field(default_factory=list)  # repeats received after each kill
    bound: int = 0
    processes: int = 0
    processes_source: str = ""
    group_sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def write_project(directory: Path, database_url: str, port: int, o: Options) -> Path:
    shutil.copytree(ROOT / "templates", directory / "templates")
    (directory / "campaigns").mkdir()
    shutil.copy(ROOT / "campaigns" / f"{CAMPAIGN}.toml", directory / "campaigns")
    (directory / "campaigns" / "segments.toml").write_text(SEGMENTS)
    config = directory / "config.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        f'[provider]\nname = "smtp"\n'
        f'[provider.smtp]\nhost = "127.0.0.1"\nport = {port}\ntimeout = 10\npool_size = {o.pool_size}\n'
        f"[sending]\nconcurrency = {o.concurrency}\nbatch_size = {o.batch_size}\n"
        f"commit_every = {o.commit_every}\ncommit_ms = {o.commit_ms}\nprocesses = {o.processes}\n"
        f"retry_base_seconds = 1\nretry_max_seconds = 5\n"
    )
    return config


def kill_points(rng: random.Random, n: int) -> list[int]:
    kills = rng.randint(1, 3)
    low, high = max(1, math.ceil(KILL_LOW * n)), max(1, math.floor(KILL_HIGH * n))
    return sorted(rng.randint(low, high) for _ in range(kills))


def run_trial(database: str, trial: int, seed: int, database_url: str, directory: Path, o: Options) -> Result:
    result = Result(database=database, trial=trial, seed=seed)
    n = o.contacts
    points = kill_points(random.Random(seed), n)
    engine = make_engine(database_url)
    started = time.monotonic()
    try:
        if database == "sqlite":
            upgrade(engine)
        add_contacts(engine, n)
        with make_sink(o.smtp_delay, o.pipelining) as sink:
            config = write_project(directory, database_url, sink.port, o)
            settings = load_settings(config, env={}, secret_key="crash-bench-secret")
            messages = sink.handler.messages  # appended under the handler's lock; len() is safe
            outputs = []
            for k, point in enumerate(points, start=1):
                send = Send(config, directory / f"send-{k}.log").start()
                target = max(point, len(messages) + 1)  # at least one new arrival after each resume
                last, last_change = len(messages), time.monotonic()
                while len(messages) < target:
                    if send.proc.poll() is not None:
                        break
                    now = time.monotonic()
                    if len(messages) != last:
                        last, last_change = len(messages), now
                    elif now - last_change > o.stall_seconds:
                        break
                    time.sleep(0.002)
                if send.proc.poll() is not None:
                    send.close()
                    outputs.append(send.output())
                    result.failures.append(f"send #{k} exited (rc {send.proc.returncode}) before kill point "
                                           f"{target} at {len(messages)} received: {tail(send.output())}")
                    break
                if len(messages) < target:
                    result.group_sizes.append(send.group_size())
                    send.kill()
                    outputs.append(send.output())
                    result.failures.append(f"send #{k} stalled: no message for {o.stall_seconds:.0f} s "
                                           f"at {len(messages)} received (kill point {target})")
                    break
                result.group_sizes.append(send.group_size())
                survivors = send.kill()
                time.sleep(0.05)  # let the server finish storing what was already on the wire
                at_kill = len(messages)
                result.kills += 1
                result.kill_points.append(at_kill)
                outputs.append(send.output())
                if survivors:
                    result.failures.append(f"kill #{k}: {len(survivors)} process(es) outlived killpg: {survivors}")
            if not result.failures:
                final = Send(config, directory / "send-final.log").start()
                try:
                    rc = final.proc.wait(timeout=max(120.0, 20 * n / 100))
                except subprocess.TimeoutExpired:
                    final.kill()
                    rc = None
                final.close()
                outputs.append(final.output())
                if rc != 0:
                    result.failures.append(f"final send {'timed out' if rc is None else f'exited rc {rc}'}: "
                                           f"{tail(final.output())}")
            time.sleep(0.2)  # the server's last 250s are answered before the client exits; be generous
            received = sink.messages
        result.processes, result.processes_source = effective_processes(outputs, settings.sending.processes,
                                                                        result.group_sizes)
        result.bound = duplicate_bound(settings.sending, processes=result.processes) * result.kills
        check(result, received, engine, n)
    except Exception as exc:  # noqa: BLE001 - a harness error is a failed trial, reported, not a crash
        result.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()
        result.seconds = time.monotonic() - started
    return result


def effective_processes(outputs: list[str], configured: int, group_sizes: list[int]) -> tuple[int, str]:
    """P for the bound: as printed by the send; else the configured count (cpu_count for 0), or fewer
    when fewer processes than that were alive in the send's process group at every kill."""
    printed = [p for p in (printed_processes(out) for out in outputs) if p]
    if printed:
        return max(printed), "printed"
    configured_p, source = (configured, "configured") if configured else (os.cpu_count() or 1, "cpu_count")
    seen = max(group_sizes, default=0)
    if 0 < seen < configured_p:
        return seen, "observed"
    return configured_p, source


def tail(output: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:]) or "(no output)"


def check(result: Result, received, engine, n: int) -> None:
    fail = result.failures.append
    result.received = len(received)
    per_recipient: dict[str, list[str]] = collections.defaultdict(list)
    id_recipients: dict[str, set[str]] = collections.defaultdict(set)
    for m in received:
        rcpt = m.recipients[0].lower() if m.recipients else ""
        if len(m.recipients) != 1:
            fail(f"a message with {len(m.recipients)} recipients: {m.recipients}")
        mid = message_id(m.data)
        per_recipient[rcpt].append(mid)
        id_recipients[mid].add(rcpt)
    result.distinct = len(id_recipients)
    expected = {f"user{i}@example.com" for i in range(n)}
    lost = sorted(expected - set(per_recipient))
    result.lost = len(lost)
    result.duplicates = sum(len(ids) - 1 for ids in per_recipient.values())
    # A repeat arriving between kill k and kill k+1 (or the end) is charged to kill k: the outcome
    # that kill lost. Informational only (a message the next run did not reach is charged later).
    seen: set[str] = set()
    result.per_kill = [0] * len(result.kill_points)
    for index, m in enumerate(received):
        rcpt = m.recipients[0].lower() if m.recipients else ""
        if rcpt in seen:
            after = sum(1 for point in result.kill_points if point <= index)
            if after:
                result.per_kill[after - 1] += 1
            else:
                fail(f"message {index} to {rcpt} repeated before any kill")
        seen.add(rcpt)
    if lost:
        fail(f"{len(lost)} recipient(s) never got a message: {lost[:10]}")
    strangers = sorted(set(per_recipient) - expected)
    if strangers:
        fail(f"mail to addresses that are no contact: {strangers[:10]}")
    if result.duplicates > result.bound:
        fail(f"{result.duplicates} duplicates > bound {result.bound}")
    changed = {r: sorted(set(ids)) for r, ids in per_recipient.items() if len(set(ids)) > 1}
    if changed:
        fail(f"{len(changed)} recipient(s) got different Message-IDs (a resend must carry the same): "
             f"{dict(list(changed.items())[:3])}")
    shared = {mid: sorted(rs) for mid, rs in id_recipients.items() if len(rs) > 1}
    if shared:
        fail(f"{len(shared)} Message-ID(s) went to several recipients: {dict(list(shared.items())[:3])}")
    if "" in id_recipients:
        fail(f"{len(id_recipients[''])} message(s) without a Message-ID")

    with engine.connect() as conn:
        runs = conn.execute(select(Run.id, Run.status).where(Run.campaign_id == CAMPAIGN,
                                                              Run.is_test.is_(False))).all()
        rows = conn.execute(select(Delivery.email, Delivery.status, Delivery.message_id)
                            .where(Delivery.run_id.in_([r.id for r in runs]))).all() if runs else []
    if len(runs) != 1:
        fail(f"{len(runs)} runs of {CAMPAIGN} (expected the one run, resumed): {[tuple(r) for r in runs]}")
    unfinished = [tuple(r) for r in runs if r.status != "finished"]
    if unfinished:
        fail(f"run not finished: {unfinished}")
    counts = collections.Counter(r.status for r in rows)
    if len(rows) != n:
        fail(f"ledger has {len(rows)} rows for {n} contacts")
    left = {s: counts[s] for s in ("queued", "claimed") if counts[s]}
    if left:
        fail(f"rows left {left}")
    other = {s: c for s, c in counts.items() if s not in ("sent", "queued", "claimed")}
    if other:
        fail(f"rows neither sent nor queued: {other}")
    sent = {r.message_id: r.email.lower() for r in rows if r.status == "sent"}
    if counts["sent"] != result.distinct:
        fail(f"ledger sent {counts['sent']} != {result.distinct} distinct Message-IDs received")
    if len(sent) != counts["sent"]:
        fail(f"{counts['sent'] - len(sent)} sent rows share a message_id (or have none)")
    any_row = {r.message_id for r in rows}
    unknown = [mid for mid in id_recipients if mid not in any_row]
    if unknown:
        fail(f"{len(unknown)} received Message-ID(s) are no ledger row's message_id: {unknown[:3]}")
    not_sent = [mid for mid in id_recipients if mid in any_row and mid not in sent]
    if not_sent:
        fail(f"{len(not_sent)} received Message-ID(s) belong to rows not marked sent: {not_sent[:3]}")
    misaddressed = [mid for mid, rs in id_recipients.items() if mid in sent and rs != {sent[mid]}]
    if misaddressed:
        fail(f"{len(misaddressed)} Message-ID(s) arrived for another address than their row's: {misaddressed[:3]}")
    result.notes.append("ledger " + ", ".join(f"{s} {c}" for s, c in sorted(counts.items())))


# -- databases ---------------------------------------------------------------------------------

class Postgres:
    """A private PostgreSQL 15 cluster, a migrated template, and one database per trial cloned from it."""

    def __enter__(self) -> "Postgres":
        from tests.support.pgserver import PostgresServer

        self.server = PostgresServer().start()
        self.admin = create_engine(self.server.url(), isolation_level="AUTOCOMMIT")
        self.template = f"vm_crash_template_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        engine = make_engine(self.server.url(self.template))
        upgrade(engine)
        engine.dispose()
        return self

    def new_database(self) -> tuple[str, str]:
        name = f"vm_crash_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name, self.server.url(name)

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def __exit__(self, *exc) -> None:
        self.admin.dispose()
        self.server.stop()


def run_database(database: str, args, o: Options) -> list[Result]:
    results = []
    pg = Postgres().__enter__() if database == "postgresql" else None
    try:
        for trial in range(args.trials):
            seed = args.seed + trial
            directory = Path(tempfile.mkdtemp(prefix=f"valuemail-crash-{database}-{trial}-"))
            name = None
            if pg is None:
                url = f"sqlite:///{directory / 'var' / 'valuemail.db'}"
            else:
                name, url = pg.new_database()
            try:
                result = run_trial(database, trial, seed, url, directory, o)
            finally:
                if name:
                    try:
                        pg.drop(name)
                    except Exception as exc:  # noqa: BLE001
                        print(f"  (could not drop {name}: {exc})", file=sys.stderr)
            results.append(result)
            print_row(result)
            if o.keep and not result.ok:
                print(f"  kept {directory} (config.toml, send-*.log)")
            else:
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        if pg is not None:
            pg.__exit__(None, None, None)
    return results


# -- output ------------------------------------------------------------------------------------

MARKS = {"printed": "", "observed": "°", "configured": "*", "cpu_count": "*"}
COLUMNS = ("database", "trial", "seed", "kills", "kill at", "P", "received", "distinct", "lost", "duplicates",
           "per kill", "bound", "secs", "ok")
WIDTHS = (10, 5, 8, 5, 16, 4, 8, 8, 4, 10, 12, 5, 5, 3)
LEFT = (0, 4, 10)


def print_header() -> None:
    print("  ".join(f"{c:>{w}}" if i not in LEFT else f"{c:<{w}}" for i, (c, w) in enumerate(zip(COLUMNS, WIDTHS))))
    print("  ".join("-" * w for w in WIDTHS))


def print_row(r: Result) -> None:
    cells = (r.database, r.trial, r.seed, r.kills, ",".join(map(str, r.kill_points)) or "-",
             f"{r.processes}{MARKS[r.processes_source]}", r.received, r.distinct, r.lost,
             r.duplicates, ",".join(map(str, r.per_kill)) or "-", r.bound, f"{r.seconds:.0f}", "yes" if r.ok else "NO")
    print("  ".join(f"{c:>{w}}" if i not in LEFT else f"{c:<{w}}" for i, (c, w) in enumerate(zip(map(str, cells), WIDTHS))),
          flush=True)
    for failure in r.failures:
        print(f"    FAIL (seed {r.seed}): {failure}", flush=True)


def summary(database: str, results: list[Result]) -> str:
    failed = [r for r in results if not r.ok]
    worst = max(results, key=lambda r: (r.duplicates / r.bound if r.bound else r.duplicates), default=None)
    most = max((r.duplicates for r in results), default=0)
    groups = sorted({g for r in results for g in r.group_sizes})
    one_kill = max((d for r in results for d in r.per_kill), default=0)
    line = (f"{database}: {len(results)} trials, {sum(r.kills for r in results)} kills, "
            f"total lost {sum(r.lost for r in results)}, max duplicates {most}, max after one kill {one_kill}")
    if worst is not None:
        line += (f" (closest to its bound: trial {worst.trial}, {worst.duplicates} of {worst.bound}, "
                 f"{worst.kills} kill(s))")
    line += f"; processes in the group at a kill: {groups or '-'}"
    line += f"; {'all checks passed' if not failed else f'{len(failed)} trial(s) FAILED: seeds ' + ', '.join(str(r.seed) for r in failed)}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20270320, help="trial i uses seed + i for its kill points")
    parser.add_argument("--batch-size", type=int, default=100, help="[sending] batch_size")
    parser.add_argument("--commit-every", type=int, default=50, help="[sending] commit_every")
    parser.add_argument("--commit-ms", type=float, default=100, help="[sending] commit_ms")
    parser.add_argument("--processes", type=int, default=2, help="[sending] processes (0 = one per CPU core)")
    parser.add_argument("--concurrency", type=int, default=4, help="[sending] concurrency")
    parser.add_argument("--pool-size", type=int, default=4, help="[provider.smtp] pool_size")
    parser.add_argument("--smtp-delay", type=float, default=0.0, help="seconds the server waits per message")
    parser.add_argument("--pipelining", choices=("auto", "off"), default="auto",
                        help="advertise PIPELINING when SmtpSink can (auto)")
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="fail a trial after this long without mail")
    parser.add_argument("--keep", action="store_true", help="keep a failed trial's project directory")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.contacts < 20:
        parser.error("need --trials >= 1 and --contacts >= 20")

    pipelining = args.pipelining == "auto" and sink_supports_pipelining()
    o = Options(contacts=args.contacts, batch_size=args.batch_size, commit_every=args.commit_every,
                commit_ms=args.commit_ms, processes=args.processes, concurrency=args.concurrency,
                pool_size=args.pool_size, smtp_delay=args.smtp_delay, pipelining=pipelining,
                stall_seconds=args.stall_seconds, keep=args.keep)
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"kill -9 trials: {args.trials} per database ({', '.join(databases)}), {args.contacts} contacts, "
          f"seeds {args.seed}..{args.seed + args.trials - 1}, 1-3 kills each at "
          f"{KILL_LOW:.0%}-{KILL_HIGH:.0%} of the contacts received")
    print(f"[sending] batch_size = {o.batch_size}, commit_every = {o.commit_every}, commit_ms = {o.commit_ms:g}, "
          f"processes = {o.processes}{' (one per CPU core: ' + str(os.cpu_count()) + ')' if o.processes == 0 else ''}, "
          f"concurrency = {o.concurrency}; [provider.smtp] pool_size = {o.pool_size}")
    print(f"SMTP recorder on 127.0.0.1: PIPELINING "
          f"{'advertised' if pipelining else 'not advertised' + ('' if sink_supports_pipelining() else ' (SmtpSink has no pipelining parameter)')}"
          f"{f', {o.smtp_delay:g} s per message' if o.smtp_delay else ''}")
    print("bound = duplicate_bound(settings.sending, processes=P) x kills.  P as printed by `valuemail send`; "
          "P* the configured value (cpu_count for 0);\n"
          "P° fewer than configured: the most processes alive in the send's process group at a kill\n")
    print_header()
    everything: dict[str, list[Result]] = {}
    for database in databases:
        everything[database] = run_database(database, args, o)
    print()
    for database, results in everything.items():
        print(summary(database, results))
    return 1 if any(not r.ok for results in everything.values() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
