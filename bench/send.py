"""Per-recipient render + MIME throughput on one core, and `valuemail send` end to end, each beside a reference.

Run: .venv/bin/python bench/send.py [--contacts 10000] [--only render|smtp|pg|http|memory ...] [--million]
     (render rows: --messages 3000 --reference-messages 600 --recipients 5000 --repeats 3;
      http rows: --providers postmark,resend,sendgrid,mailgun,ses)

Render rows. A ~40 KB newsletter (templates/emails/bench_newsletter.mjml) is compiled once, then
rendered for thousands of distinct personalised contexts and built into multipart/alternative MIME
messages. The reference, measured in the same run on the same data, builds the same message with
`email.message.EmailMessage` and `policy.SMTP` (`as_bytes()`). The rows are a list of sections
(`sections()` below); each is timed the same way and printed as one row.

The "tracking on" rows render the template compiled with click tracking and the open pixel, as
the sending workers do with `[tracking]` on: every link signed per recipient, and the URLs a run
has not met registered in a real (SQLite, temporary) `links` table. Each timed pass starts a
fresh run, so registering is paid inside the timing. The first row has the links a campaign
usually has, the same for the whole run (the nine articles and the shop: registered once); the
second keeps this data's per-recipient shop URL (`?r=<token>`), a new link and so one `links`
insert with every message, as survey-answer or share links cost.

End-to-end rows time the whole `valuemail send spring-sale` command as a user runs it (a
subprocess, from exec to exit, start-up included; `--as-of` inside the offer), over a fresh
database with `--contacts` contacts inserted directly, and print one table beside references
measured in the same run. Only 127.0.0.1 is ever contacted (no proxy either).

  smtp    SQLite ledger, `[provider.smtp] pool_size = 4`, to Postfix's smtp-sink on 127.0.0.1; the
          reference is Postfix's smtp-source pushing a copy of one message we sent (same size, same
          lines) to the same sink over as many kept-open sessions as ours had open at most (at least
          the pool). `--rounds` (3) rounds of ours then the reference, each on a fresh database; the
          row shows the median of each and the ranges in its notes (on a shared machine one short
          reference run alone can land in a burst of someone else's load).
  pg      the same on a private PostgreSQL 15 (tests/support/pgserver.py): `send` alone, and `send`
          with one `valuemail worker` started just before (timed until the database says the run is
          finished; the worker is stopped after), each with its smtp-source reference.
  http    Postmark, Resend, SendGrid, Mailgun and SES through bench/_apistub.py, a loopback stub of
          each API that answers every request after 80 ms; the reference is the ceiling of one
          message per request at the configured concurrency (requests in flight / 0.08 s), which
          batch endpoints can beat.
  memory  peak RSS of the send process (and its children) at --contacts and 10x that, and at
          1,000,000 with --million: flat in N, target <= 300 MB at a million.

Every row checks that every recipient got exactly one message and the ledger says so (one run,
finished, every delivery sent). For SMTP the timed run is counted by smtp-sink's counter, and a
recorded run of 1,000 recipients first (smtp-sink writing each message to a file) checks every
recipient once and distinct Message-IDs; the API stub counts per recipient in the timed run itself.
A failed check prints FAILED with the reason, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import collections
import compileall
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402
from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402

from engine.db import make_engine  # noqa: E402
from engine.migrate import upgrade  # noqa: E402
from engine.mime import MessageFactory  # noqa: E402
from engine.models import Contact, Delivery, Run  # noqa: E402
from engine.rendering import RenderedEmail, Renderer, sample_context  # noqa: E402
from engine.rendering.links import TRACKING  # noqa: E402
from tests.support.pgserver import BIN as POSTGRES_BIN, PostgresServer  # noqa: E402

TEMPLATE = "bench_newsletter.mjml"
SUBJECT = "{{ contact.first_name }}, your spring newsletter: 9 ideas for a lighter footprint 🌱"
SENDER = ("Example Shop", "news@example.com")
FIRST = ["Anneke", "Sanne", "Joris", "Zoë", "Bjørn", "Åse", "Ingrid", "Sven", "Noël", "Marieke", "Ørjan", "Lars",
         "Femke", "Daan", "Siv", "Kari", "René", "Thijs", "Øystein", "Lotte"]
LAST = ["de Vries", "Jansen", "van den Berg", "Bakker", "Hansen", "Johansen", "Ødegård", "Larsen", "Visser",
        "Smit", "Nilsen", "Berg", "Müller", "Dijkstra", "Haugen"]
CATEGORIES = ["tuin", "keuken", "linnen", "kjøkken", "hage", "cleaning", ""]


@dataclass
class Recipient:
    """One personalised recipient: template context plus envelope data."""

    context: dict
    name: str
    email: str
    message_id: str
    headers: list[tuple[str, str]]


@dataclass
class Section:
    """One row of the table: `run(recipients)` handles each recipient once."""

    name: str
    run: Callable[[list[Recipient]], object]
    messages: int  # how many recipients this row times
    reference_for: str = ""  # the row this one is the reference for


def recipients(count: int, *, seed: int = 20270320) -> list[Recipient]:
    """Distinct, realistic recipient contexts (names with accents, per-recipient links and ids)."""
    rng = random.Random(seed)
    base = sample_context("knowledge_sharing", templates_dir=ROOT / "templates" / "emails")
    base["campaign"] = {"id": "spring-newsletter", "name": "Spring newsletter", "kind": "knowledge_sharing",
                        "values": ["functional", "emotional"]}
    out = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first.lower().encode('ascii', 'ignore').decode() or 'r'}.{i}@example.{rng.choice(['nl', 'no', 'be'])}"
        token = f"{i:08d}.{rng.getrandbits(64):016x}"
        context = dict(base)
        context["contact"] = {
            "email": email, "first_name": first, "last_name": last,
            "country": rng.choice(["NL", "BE", "NO"]), "language": rng.choice(["nl", "no", "en"]),
            "timezone": "Europe/Amsterdam", "attributes": {"favourite_category": rng.choice(CATEGORIES)},
            "ltv": round(rng.uniform(0, 1500), 2), "orders_count": rng.randint(0, 30),
        }
        context["segment"] = "everyone"
        context["links"] = {
            "unsubscribe": f"https://mail.example.com/u/{token}",
            "preferences": f"https://mail.example.com/p/{token}",
            "view_in_browser": f"https://mail.example.com/v/{token}",
            "shop": f"https://example.com/?r={token}",
        }
        out.append(Recipient(
            context=context, name=f"{first} {last}", email=email,
            message_id=f"<bench.{i}.{token[-8:]}@example.com>",
            headers=[("List-Unsubscribe", f"<https://mail.example.com/u/{token}>"),
                     ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
        ))
    return out


def reference_message(r: Recipient, rendered: RenderedEmail, date: datetime) -> bytes:
    """The same message built with the standard library (the reference)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(SENDER[0], addr_spec=SENDER[1])
    msg["To"] = Address(r.name, addr_spec=r.email)
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = r.message_id
    for name, value in r.headers:
        msg[name] = value
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


class TrackedRuns:
    """Fresh runs in a temporary SQLite database, each with the click + open tracking the workers use."""

    def __init__(self):
        import tempfile

        from engine.db import make_engine
        from engine.migrate import upgrade
        from engine.models import Campaign

        self.directory = tempfile.TemporaryDirectory(prefix="valuemail-bench-links-")
        self.engine = make_engine(f"sqlite:///{self.directory.name}/links.db")
        upgrade(self.engine)
        self.now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            conn.execute(Campaign.__table__.insert().values(id="bench", name="Bench", kind="knowledge_sharing",
                                                             values=[], definition={}, source_hash="0" * 64,
                                                             synced_at=self.now))

    def new_run(self):
        """A `RunTracking` for a new run: no link of it registered yet."""
        from engine.models import Run
        from engine.tokens import TokenSigner
        from engine.tracking import LinkRegistry, RunTracking

        with self.engine.begin() as conn:
            run_id = conn.execute(Run.__table__.insert().values(
                campaign_id="bench", occurrence_at=datetime.now(timezone.utc), status="sending", is_test=False,
                transactional=False, definition={}, populate_cursor=0, total=0, pause_reason="",
                created_at=self.now)).inserted_primary_key[0]
        return RunTracking(registry=LinkRegistry(self.engine, run_id), signer=TokenSigner("bench"),
                           base_url="https://mail.example.com", clicks=True, opens=True)

    def close(self) -> None:
        self.engine.dispose()
        self.directory.cleanup()


TRACKED_ROW = "render + MIME, ours, tracking on (clicks + open pixel)"


def run_constant_links(r: Recipient) -> Recipient:
    """`r` with the shop link every recipient of a real run gets (this data makes it per recipient)."""
    context = dict(r.context)
    context["links"] = dict(context["links"], shop="https://example.com/spring")
    return Recipient(context=context, name=r.name, email=r.email, message_id=r.message_id, headers=r.headers)


def tracked_render(compiled, tracking, delivery_id: int, r: Recipient, date: datetime) -> RenderedEmail:
    """What the Composer does with tracking on: the message's tracker in the context, then `finish`."""
    context = dict(r.context)
    context[TRACKING] = tracker = tracking.for_delivery(delivery_id)
    return tracker.finish(compiled.render(context), now=date)


def sections(renderer: Renderer, messages: int, reference_messages: int, runs: TrackedRuns) -> list[Section]:
    """The benchmark rows, in print order."""
    compiled = renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench")
    tracked = renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench", tracking=True)
    factory = MessageFactory(from_addr=SENDER)
    date = datetime(2027, 3, 20, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    rendered_cache: dict[int, RenderedEmail] = {}

    def prerendered(rs: list[Recipient]) -> list[RenderedEmail]:
        for i, r in enumerate(rs):
            if i not in rendered_cache:
                rendered_cache[i] = compiled.render(r.context)
        return [rendered_cache[i] for i in range(len(rs))]

    def render_only(rs):
        for r in rs:
            compiled.render(r.context)

    def ours_render_and_mime(rs):
        for r in rs:
            out = compiled.render(r.context)
            factory.build(to_addr=(r.name, r.email), subject=out.subject, text=out.text_parts,
                          html=out.html_parts, message_id=r.message_id, date=date, headers=r.headers)

    def tracked_render_and_mime(rs, *, per_recipient_link: bool):
        tracking = runs.new_run()
        for i, r in enumerate(rs, start=1):
            if not per_recipient_link:
                r = run_constant_links(r)
            out = tracked_render(tracked, tracking, i, r, date)
            factory.build(to_addr=(r.name, r.email), subject=out.subject, text=out.text_parts,
                          html=out.html_parts, message_id=r.message_id, date=date, headers=r.headers)

    def ours_tracked_render_and_mime(rs):
        tracked_render_and_mime(rs, per_recipient_link=False)

    def ours_tracked_new_link_each(rs):
        tracked_render_and_mime(rs, per_recipient_link=True)

    def reference_render_and_mime(rs):
        for r in rs:
            reference_message(r, compiled.render(r.context), date)

    def ours_mime_only(rs):
        for r, out in zip(rs, prerendered(rs)):
            factory.build(to_addr=(r.name, r.email), subject=out.subject, text=out.text_parts,
                          html=out.html_parts, message_id=r.message_id, date=date, headers=r.headers)

    def ours_mime_whole_strings(rs):
        for r, out in zip(rs, prerendered(rs)):
            factory.build(to_addr=(r.name, r.email), subject=out.subject, text=out.text, html=out.html,
                          message_id=r.message_id, date=date, headers=r.headers)

    def reference_mime_only(rs):
        for r, out in zip(rs, prerendered(rs)):
            reference_message(r, out, date)

    return [
        Section("render + MIME, ours (MessageFactory)", ours_render_and_mime, messages),
        Section(TRACKED_ROW, ours_tracked_render_and_mime, messages),
        Section("  same, plus a new per-recipient link in every message", ours_tracked_new_link_each, messages),
        Section("render + MIME, EmailMessage policy.SMTP", reference_render_and_mime, reference_messages,
                reference_for="render + MIME, ours (MessageFactory)"),
        Section("render only (subject + HTML + text)", render_only, messages),
        Section("MIME only, ours (MessageFactory)", ours_mime_only, messages),
        Section("MIME only, EmailMessage policy.SMTP", reference_mime_only, reference_messages,
                reference_for="MIME only, ours (MessageFactory)"),
        # The same builder given whole strings instead of RenderedEmail.*_parts: every byte
        # goes through b2a_qp for every recipient.
        Section("MIME only, ours, whole strings", ours_mime_whole_strings, messages),
    ]


def timed(section: Section, rs: list[Recipient], repeats: int) -> float:
    """Best-of-`repeats` messages per second for one section."""
    batch = rs[:section.messages]
    section.run(batch[: min(50, len(batch))])  # warm-up: caches, first-call costs
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        section.run(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def tracking_check(renderer: Renderer, r: Recipient, runs: TrackedRuns) -> int:
    """With tracking on every article and shop link is rewritten, the footer's are not; the links registered."""
    import re

    from sqlalchemy import func, select

    from engine.models import Link

    tracking = runs.new_run()
    compiled = renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench", tracking=True)
    out = tracked_render(compiled, tracking, 1, r, datetime.now(timezone.utc))
    hrefs = re.findall(r'<a [^>]*href="([^"]*)"', out.html)
    direct = [h for h in hrefs if not h.startswith("https://mail.example.com/r/")]
    assert direct == [r.context["links"][k] for k in ("preferences", "unsubscribe", "view_in_browser")], direct
    assert "https://example.com/blog/" not in out.html + out.text and "\x00" not in out.html + out.text
    assert out.html.count('/o/') == 1 and "https://mail.example.com/r/" in out.text
    with runs.engine.connect() as conn:
        links = conn.execute(select(func.count()).select_from(Link)
                             .where(Link.run_id == tracking.registry.run_id)).scalar()
    assert links == 10, links  # nine articles and the shop
    return len(hrefs)


def sanity_check(renderer: Renderer, r: Recipient) -> tuple[int, int]:
    """Both builders produce a message that parses back to the same content; their sizes."""
    compiled = renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench")
    out = compiled.render(r.context)
    date = datetime(2027, 3, 20, 9, 0, tzinfo=timezone.utc)
    ours = MessageFactory(from_addr=SENDER).build(to_addr=(r.name, r.email), subject=out.subject,
                                                  text=out.text_parts, html=out.html_parts,
                                                  message_id=r.message_id, date=date, headers=r.headers)
    ref = reference_message(r, out, date)
    for raw in (ours, ref):
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        # policy.SMTP folds "word 🌱" as "word \r\n =?..?=", which reads back with two spaces.
        subject = msg["Subject"] if raw is ours else " ".join(msg["Subject"].split())
        assert subject == out.subject, msg["Subject"]
        for kind, expected in (("html", out.html), ("plain", out.text)):
            got = msg.get_body((kind,)).get_content().replace("\r\n", "\n")
            if raw is ref:  # set_content() appends a final newline when there is none
                got, expected = got.rstrip("\n"), expected.rstrip("\n")
            assert got == expected.replace("\r\n", "\n"), kind
    return len(ours), len(ref)


# -- end to end: the whole `valuemail send` command, beside references measured in the same run --------

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")
CAMPAIGN = "spring-sale"
SEGMENTS = "[gold]\nltv_min = 500\n\n[everyone]\n"
AS_OF = "2027-03-25T10:00"  # during the spring sale's offer (the example campaigns are dated 2027)
POOL_SIZE = 4  # [provider.smtp] pool_size: SMTP connections per sending process
HTTP_CONCURRENCY = 32  # [sending] concurrency: API requests in flight per sending process
API_DELAY = 0.08  # seconds the API stub waits before every answer (a real API, seen from Europe)
RECORDED = 1000  # recipients of each SMTP row's recorded correctness run
HTTP_PROVIDERS = ("postmark", "resend", "sendgrid", "mailgun", "ses")
TOKEN, AWS_KEY, AWS_SECRET, MAILGUN_DOMAIN = "bench-token", "AKIDBENCH", "bench-aws-secret", "mg.example.com"
MEMORY_TARGET_MB = 300  # peak RSS at 1,000,000 recipients
MB = 1024 * 1024
PARTS = ("render", "smtp", "pg", "http", "memory")
_STARTED = re.compile(rb"started run #\d+")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Sent:
    """What one `valuemail send` took."""

    seconds: float  # from exec to exit (with a worker: to the run finished in the database, if later)
    # The largest process's peak RSS: the kernel's high-water mark (VmHWM) of each process, read from
    # /proc until it exits. Not ru_maxrss: Linux carries the parent's high-water mark over fork + exec,
    # so every child of this (by then 380 MB) benchmark would report at least 380 MB.
    rss_mb: float
    pss_mb: float  # the most PSS summed over send and its descendants in any 0.1 s sample
    rss_sum_mb: float  # the same for RSS (counts pages shared by forked processes once per process)
    processes: int  # the most processes of that tree seen at once
    sessions: int  # the most connections to the sink's port open at once (any process)
    fill_seconds: float | None  # until it printed that the run started: start-up + ledger fill
    output: str

    @property
    def peak_mb(self) -> float:
        """The command's memory: its largest process's peak RSS, or its processes' peak PSS together if more."""
        return max(self.rss_mb, self.pss_mb)

    def memory_notes(self) -> str:
        """How many processes, and what each measure of their memory says."""
        if self.processes <= 1:
            return f"1 process, peak RSS {self.rss_mb:.0f} MB"
        return (f"{self.processes} processes: largest peak RSS {self.rss_mb:.0f} MB, together PSS {self.pss_mb:.0f} MB "
                f"(RSS {self.rss_sum_mb:.0f} MB)")


@dataclass
class Row:
    """One end-to-end row: our rate beside its reference's, measured in the same run."""

    name: str
    messages: int
    rate: float | None = None
    reference: str = ""
    reference_rate: float | None = None
    sent: Sent | None = None  # our timed command, for its memory
    notes: str = ""
    problems: list[str] = field(default_factory=list)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    """Return once something listens on 127.0.0.1:`port`; fail if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal one process we started, then SIGKILL it if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sbin(name: str) -> str:
    """The path of one of Postfix's test programs (in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
    if not found:
        raise SystemExit(f"{name} not found: `bash scripts/setup.sh --test` installs Postfix's test programs")
    return found


def bench_env() -> dict[str, str]:
    """The environment of every command: no VALUEMAIL_* or proxy from outside, the stub's credentials."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VALUEMAIL_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(VALUEMAIL_SECRET_KEY="bench", VALUEMAIL_AS_OF=AS_OF, PYTHONUNBUFFERED="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               POSTMARK_TOKEN=TOKEN, RESEND_API_KEY=TOKEN, SENDGRID_API_KEY=TOKEN, MAILGUN_API_KEY=TOKEN,
               AWS_ACCESS_KEY_ID=AWS_KEY, AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    return env


def sending_processes() -> int:
    """Sending processes of one `valuemail send` with `[sending] processes` unset: one per CPU core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- processes and sockets, sampled from /proc

def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def cmdline(pid: int) -> bytes:
    """The command line of a process (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def memory_bytes(pid: int) -> tuple[int, int, int]:
    """(peak RSS so far, RSS, PSS) of a process; PSS shares each page among the processes mapping it."""
    kb = {}
    for name in ("status", "smaps_rollup"):
        try:
            lines = Path(f"/proc/{pid}/{name}").read_text().splitlines()
        except OSError:
            return 0, 0, 0
        kb.update((line.split(":")[0], line.split()[1]) for line in lines if line.startswith(("VmHWM", "Rss", "Pss")))
    return tuple(int(kb.get(key, 0)) * 1024 for key in ("VmHWM", "Rss", "Pss"))


def connections_to(port: int) -> int:
    """Established TCP connections whose server side is 127.0.0.1:`port` (or ::1)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


class Watch(threading.Thread):
    """Samples every 0.1 s: RSS and PSS summed over a process tree, its size, and connections to a port."""

    def __init__(self, pid: int, port: int | None = None):
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.rss = self.pss = self.processes = self.sessions = 0
        self.hwm: dict[int, int] = {}  # the last peak RSS read for each process
        self.done = threading.Event()

    def run(self) -> None:
        ours = Path("/proc/self/cmdline").read_bytes()
        while True:
            pids = descendants(self.pid)
            # Not a child still between fork and exec: that is a view of this process's memory.
            memory = {p: memory_bytes(p) for p in pids if cmdline(p) != ours}
            self.hwm.update((p, hwm) for p, (hwm, _, _) in memory.items() if hwm)
            self.rss = max(self.rss, sum(rss for _, rss, _ in memory.values()))
            self.pss = max(self.pss, sum(pss for _, _, pss in memory.values()))
            self.processes = max(self.processes, len(memory))
            if self.port:
                self.sessions = max(self.sessions, connections_to(self.port))
            if self.done.wait(0.1):
                return

    def finish(self) -> "Watch":
        self.done.set()
        self.join()
        return self


# -- the commands under test

def run_send(config: Path, env: dict[str, str], *, port: int | None = None) -> tuple[Sent, float]:
    """`valuemail send CAMPAIGN` as a user runs it; what it took, and when it started (perf_counter)."""
    start = time.perf_counter()
    proc = subprocess.Popen([VALUEMAIL, "--config", str(config), "send", CAMPAIGN], env=env, cwd=config.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watch = Watch(proc.pid, port)
    watch.start()
    lines, fill = [], None
    for line in proc.stdout:
        if fill is None and _STARTED.search(line):
            fill = time.perf_counter() - start
        lines.append(line)
    proc.wait()
    seconds = time.perf_counter() - start
    proc.stdout.close()
    watch.finish()
    output = b"".join(lines).decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"valuemail send exited with status {proc.returncode}: {tail(output)}")
    return Sent(seconds=seconds, rss_mb=max(watch.hwm.values(), default=0) / MB, pss_mb=watch.pss / MB,
                rss_sum_mb=watch.rss / MB, processes=watch.processes, sessions=watch.sessions,
                fill_seconds=fill, output=output), start


def send_with_worker(config: Path, env: dict[str, str], url: str, *, port: int) -> Sent:
    """`valuemail worker` started (and ready) just before `valuemail send`; timed until the run is finished."""
    worker = subprocess.Popen([VALUEMAIL, "--config", str(config), "worker", "--idle-seconds", "0.2"], env=env,
                              cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    ready, output = threading.Event(), []

    def read() -> None:
        for line in worker.stdout:
            output.append(line)
            if b"started" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"valuemail worker did not start: {tail(b''.join(output).decode(errors='replace'))}")
        sent, start = run_send(config, env, port=port)
        engine = make_engine(url)
        try:
            deadline = time.monotonic() + 300
            while run_statuses(engine) != ["finished"]:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the run did not finish (runs {run_statuses(engine)}); worker: "
                                       f"{tail(b''.join(output).decode(errors='replace'))}")
                time.sleep(0.02)
            sent.seconds = max(sent.seconds, time.perf_counter() - start)
        finally:
            engine.dispose()
        return sent
    finally:
        stop_process(worker, signal.SIGINT)
        reader.join(5)


def tail(output: str, lines: int = 4) -> str:
    """The last lines of a command's output, on one line."""
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:]) or "(no output)"


# -- projects and databases

def write_project(directory: Path, database_url: str, provider_toml: str) -> Path:
    """A project: the spring sale, two segments (`gold`, `everyone`), a config; returns the config path."""
    (directory / "campaigns").mkdir(parents=True)
    shutil.copy(ROOT / "campaigns" / f"{CAMPAIGN}.toml", directory / "campaigns")
    (directory / "campaigns" / "segments.toml").write_text(SEGMENTS)
    config = directory / "config.toml"
    config.write_text(f'[paths]\ntemplates = "{ROOT / "templates" / "emails"}"\n'
                      f'[database]\nurl = "{database_url}"\n{provider_toml}')
    return config


def smtp_toml(port: int) -> str:
    """The config's provider part for smtp-sink on `port`."""
    return f'[provider]\nname = "smtp"\n[provider.smtp]\nhost = "127.0.0.1"\nport = {port}\npool_size = {POOL_SIZE}\n'


def http_toml(provider: str, base_url: str) -> str:
    """The config's provider part for an HTTP provider whose API is the stub at `base_url`."""
    extra = f'domain = "{MAILGUN_DOMAIN}"\n' if provider == "mailgun" else ""
    return (f'[provider]\nname = "{provider}"\n[provider.{provider}]\nbase_url = "{base_url}"\n{extra}'
            f"[sending]\nconcurrency = {HTTP_CONCURRENCY}\n")


class Databases:
    """Fresh migrated databases: SQLite files under `work`, or databases on a private PostgreSQL 15."""

    def __init__(self, work: Path, postgres=None):
        self.work, self.postgres = work, postgres
        self.kind = "SQLite" if postgres is None else "PostgreSQL"

    def new(self, name: str) -> str:
        if self.postgres is None:
            url = f"sqlite:///{self.work / name / 'valuemail.db'}"
        else:
            admin = create_engine(self.postgres.url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = self.postgres.url(name)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url


def add_contacts(url: str, count: int) -> None:
    """Insert `count` subscribed contacts user<i>@example.com directly (SQLAlchemy executemany)."""
    engine = make_engine(url)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for first in range(0, count, 10_000):
            conn.execute(insert(Contact), [
                {"email": f"user{i}@example.com", "email_key": f"user{i}@example.com",
                 "first_name": FIRST[i % len(FIRST)], "last_name": LAST[i % len(LAST)], "status": "subscribed",
                 "attributes": {}, "created_at": now, "updated_at": now}
                for i in range(first, min(count, first + 10_000))])
    engine.dispose()


def run_statuses(engine) -> list[str]:
    """The status of every run in the database."""
    with engine.connect() as conn:
        return list(conn.execute(select(Run.status)).scalars())


def ledger_problems(url: str, expected: int) -> list[str]:
    """What is wrong with the ledger, if anything: one run, finished, with `expected` deliveries, all sent."""
    engine = make_engine(url)
    try:
        runs = run_statuses(engine)
        with engine.connect() as conn:
            counts = dict(conn.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    finally:
        engine.dispose()
    problems = [] if runs == ["finished"] else [f"runs {runs}, expected one finished"]
    if counts.get("sent", 0) != expected or sum(counts.values()) != expected:
        problems.append(f"ledger {counts}, expected sent {expected}")
    return problems


def once_problems(received: dict[str, int], count: int, where: str) -> list[str]:
    """Unless each of the `count` contacts' addresses got exactly one message (and nobody else any): why."""
    expected = {f"user{i}@example.com" for i in range(count)}
    missing = expected - received.keys()
    repeated = [a for a, n in received.items() if n > 1]
    unexpected = received.keys() - expected
    if not (missing or repeated or unexpected):
        return []
    return [f"{where}: {sum(received.values())} messages for {count} recipients: {len(missing)} got none, "
            f"{len(repeated)} more than one, {len(unexpected)} unexpected address(es)"]


# -- Postfix's smtp-sink and smtp-source

class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1, counting messages (`-c`); with `record`, one file per message there."""

    def __init__(self, work: Path, *, record: Path | None = None):
        self.port = free_port()
        self.counter = work / f"smtp-sink-{self.port}.out"
        command = [sbin("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # required as root: it drops to nobody once the socket is open
        if record is not None:
            record.mkdir()
            os.chmod(record, 0o777)  # nobody writes there
            command += ["-d", f"{record}/m."]
        with self.counter.open("wb") as out:
            self.proc = subprocess.Popen(command + [f"127.0.0.1:{self.port}", "1000"], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, "smtp-sink")

    def received(self) -> int:
        """Messages received so far, from the sink's running counter."""
        with self.counter.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 200))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def __enter__(self) -> "SmtpSink":
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)


def read_recorded(record: Path) -> tuple[collections.Counter, collections.Counter, bytes]:
    """Messages per recipient and per Message-ID in a recording sink's files, and one message as sent."""
    recipients, message_ids, sample = collections.Counter(), collections.Counter(), b""
    for path in sorted(record.iterdir()):
        lines = path.read_bytes().split(b"\n")
        i = 0
        while i < len(lines) and not lines[i].startswith(b"Received: "):  # smtp-sink's own header lines
            if lines[i].startswith(b"X-Rcpt-Args: "):
                recipients[lines[i][13:].split(b">")[0].lstrip(b"<").decode().lower()] += 1
            i += 1
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
        message = b"\n".join(lines[i:-1])  # the dump ends with an empty line of its own
        found = _MESSAGE_ID.search(message.split(b"\n\n", 1)[0])
        message_ids[b"".join(found.group(1).split()) if found else b""] += 1
        sample = sample or message
    return recipients, message_ids, sample


def recorded_problems(record: Path, count: int) -> tuple[list[str], bytes]:
    """Whether every recipient got exactly one message, all Message-IDs distinct; and one message."""
    recipients, message_ids, sample = read_recorded(record)
    problems = once_problems(recipients, count, "recorded run")
    if len(message_ids) != sum(message_ids.values()) or b"" in message_ids:
        problems.append(f"recorded run: {sum(message_ids.values())} messages, {len(message_ids)} distinct Message-IDs")
    return problems, sample


def smtp_source(port: int, sessions: int, messages: int, message: Path) -> float:
    """Seconds smtp-source takes to push `messages` copies of `message` over `sessions` kept-open sessions."""
    start = time.perf_counter()
    subprocess.run([sbin("smtp-source"), "-d", "-s", str(sessions), "-m", str(messages), "-F", str(message),
                    "-f", "news@example.com", "-t", "reference@example.com", f"127.0.0.1:{port}"],
                   check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


# -- the rows

def smtp_row(work: Path, databases: Databases, contacts: int, env: dict[str, str], *, worker: bool, rounds: int) -> Row:
    """`valuemail send` over SMTP to smtp-sink (optionally with a worker), beside smtp-source to the same sink."""
    tag = f"smtp-{databases.kind.lower()}{'-worker' if worker else ''}"
    name = f"SMTP, {databases.kind}: send{' + 1 worker' if worker else ''}"

    def send(config: Path, url: str, port: int) -> Sent:
        if worker:
            return send_with_worker(config, env, url, port=port)
        return run_send(config, env, port=port)[0]

    recorded = min(contacts, RECORDED)
    with SmtpSink(work, record=work / f"{tag}-recorded-mail") as sink:
        url = databases.new(f"{tag}-recorded")
        config = write_project(work / f"{tag}-recorded", url, smtp_toml(sink.port))
        add_contacts(url, recorded)
        send(config, url, sink.port)
        problems, sample = recorded_problems(work / f"{tag}-recorded-mail", recorded)
        problems += [f"recorded run: {p}" for p in ledger_problems(url, recorded)]
    if not sample:
        raise RuntimeError("the recorded run received no message")
    message = work / f"{tag}-message.eml"
    message.write_bytes(sample)
    size = len(sample.replace(b"\n", b"\r\n"))
    # Rounds of ours-then-reference, each a fresh database; the medians are the row. One short
    # reference run alone can land in a burst of another tenant's load on a shared machine.
    ours, references, sessions = [], [], POOL_SIZE * (2 if worker else 1)
    with SmtpSink(work) as sink:
        for round_ in range(1, rounds + 1):
            url = databases.new(f"{tag}-{round_}")
            config = write_project(work / f"{tag}-{round_}", url, smtp_toml(sink.port))
            add_contacts(url, contacts)
            before = sink.received()
            sent = send(config, url, sink.port)
            received = sink.received() - before
            problems += [f"round {round_}: smtp-sink got {received} messages, expected {contacts}"] \
                if received != contacts else []
            problems += [f"round {round_}: {p}" for p in ledger_problems(url, contacts)]
            sessions = max(sessions, sent.sessions)
            reference = smtp_source(sink.port, sessions, contacts, message)
            if sink.received() - before - received != contacts:
                problems.append(f"round {round_}: smtp-sink got {sink.received() - before - received} reference "
                                f"messages, expected {contacts}")
            ours.append((contacts / sent.seconds, sent))
            references.append(contacts / reference)
    rate, sent = sorted(ours, key=lambda pair: pair[0])[len(ours) // 2]
    spread = (f"median of {rounds} rounds: ours {min(r for r, _ in ours):,.0f}-{max(r for r, _ in ours):,.0f}, "
              f"reference {min(references):,.0f}-{max(references):,.0f} msg/s; ") if rounds > 1 else ""
    return Row(name, contacts, rate, f"smtp-source, {sessions} sessions, same sink",
               statistics.median_high(references), sent,
               f"{spread}{size / 1024:.1f} KB/mail; ours: at most {sent.sessions} session(s) open, {sent.processes} "
               f"process(es); recorded run of {recorded:,} checked", problems)


class ApiStub:
    """bench/_apistub.py in a process of its own (its own GIL), answering after API_DELAY."""

    def __enter__(self) -> "ApiStub":
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_apistub.py"), "--delay", str(API_DELAY),
                                      "--token", TOKEN, "--aws-access-key", AWS_KEY, "--mailgun-domain",
                                      MAILGUN_DOMAIN], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on http://127.0.0.1:"):
            stop_process(self.proc)
            raise RuntimeError(f"the API stub did not start: {line!r}")
        self.url = line.split()[-1]
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        return self

    def call(self, method: str, path: str) -> bytes:
        """One request to the stub's own endpoints (/_stub/...)."""
        with self.opener.open(urllib.request.Request(self.url + path, method=method), timeout=30) as answer:
            return answer.read()

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)


def http_name(provider: str) -> str:
    """The row name of one HTTP provider."""
    return f"HTTP, {provider}: send ({API_DELAY * 1000:.0f} ms stub)"


def http_row(work: Path, stub: ApiStub, provider: str, contacts: int, env: dict[str, str]) -> Row:
    """`valuemail send` through one provider's API stub, beside one-message-per-request's ceiling."""
    stub.call("POST", "/_stub/reset")
    url = Databases(work).new(f"http-{provider}")
    config = write_project(work / f"http-{provider}", url, http_toml(provider, stub.url))
    add_contacts(url, contacts)
    sent, _ = run_send(config, env)
    stats = json.loads(stub.call("GET", "/_stub/stats"))
    problems = ledger_problems(url, contacts)
    problems += once_problems(stats["recipients"], contacts, "stub")
    problems += [f"stub refused {n}: {reason}" for reason, n in stats["rejected"].items()]
    in_flight = HTTP_CONCURRENCY * sending_processes()
    endpoints = ", ".join(f"{path} {n:,}" for path, n in stats["endpoints"].items())
    return Row(http_name(provider), contacts, contacts / sent.seconds,
               f"ceiling 1 msg/request, {in_flight} in flight", in_flight / API_DELAY, sent,
               f"{stats['requests']:,} requests ({endpoints or 'none'}), at most {stats['max_in_flight']} in flight",
               problems)


def memory_name(n: int) -> str:
    """The row name of one memory size."""
    return f"memory: send to {n:,}, SQLite, SMTP"


def memory_row(work: Path, sink: SmtpSink, n: int, env: dict[str, str]) -> Row:
    """Peak memory of `valuemail send` to `n` recipients (SQLite, SMTP to smtp-sink)."""
    url = Databases(work).new(f"memory-{n}")
    config = write_project(work / f"memory-{n}", url, smtp_toml(sink.port))
    add_contacts(url, n)
    before = sink.received()
    sent, _ = run_send(config, env, port=sink.port)
    received = sink.received() - before
    problems = [f"smtp-sink got {received} messages, expected {n}"] if received != n else []
    problems += ledger_problems(url, n)
    fill = f"start-up + ledger fill {sent.fill_seconds:.1f} s; " if sent.fill_seconds is not None else ""
    return Row(memory_name(n), n, n / sent.seconds, sent=sent, notes=fill + sent.memory_notes(), problems=problems)


def attempt(name: str, messages: int, make: Callable[[], Row]) -> Row:
    """The row `make` measures, or a failed row saying why."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - one failed row must not lose the others
        return Row(name, messages, problems=[f"{type(exc).__name__}: {exc}"])


def end_to_end(parts: set[str], contacts: int, providers: list[str], memory_sizes: list[int], *, rounds: int) -> list[Row]:
    """Every selected end-to-end row, each in fresh databases under one temporary directory."""
    work = Path(tempfile.mkdtemp(prefix="valuemail-bench-"))
    os.chmod(work, 0o755)  # smtp-sink runs as nobody and records into it
    env = bench_env()
    rows: list[Row] = []

    def pg_rows() -> list[Row]:
        server = PostgresServer().start()
        try:
            pg = Databases(work, server)
            return [attempt(f"SMTP, PostgreSQL: send{' + 1 worker' if worker else ''}", contacts,
                            partial(smtp_row, work, pg, contacts, env, worker=worker, rounds=rounds)) for worker in (False, True)]
        finally:
            server.stop()

    def http_rows() -> list[Row]:
        with ApiStub() as stub:
            return [attempt(http_name(p), contacts, partial(http_row, work, stub, p, contacts, env)) for p in providers]

    def memory_rows() -> list[Row]:
        out = []
        with SmtpSink(work) as sink:
            for n in memory_sizes:
                out.append(attempt(memory_name(n), n, partial(memory_row, work, sink, n, env)))
                shutil.rmtree(work / f"memory-{n}", ignore_errors=True)  # a million contacts' database
        return out

    def failed(name: str, exc: Exception) -> list[Row]:
        return [Row(name, contacts, problems=[f"{type(exc).__name__}: {exc}"])]

    try:
        if "smtp" in parts:
            rows.append(attempt("SMTP, SQLite: send", contacts,
                                partial(smtp_row, work, Databases(work), contacts, env, worker=False, rounds=rounds)))
        for part, name, make in (("pg", "SMTP, PostgreSQL", pg_rows), ("http", "HTTP", http_rows),
                                 ("memory", "memory", memory_rows)):
            if part in parts:
                try:
                    rows += make()
                except Exception as exc:  # noqa: BLE001 - a server that did not start fails its rows only
                    rows += failed(name, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_end_to_end(rows: list[Row]) -> None:
    """One table: our msg/s beside the reference's, peak RSS, checks; then any failure in full."""
    def number(value: float | None, fmt: str = ",.0f") -> str:
        """A number for the table, or nothing."""
        return "" if value is None else format(value, fmt)

    head = ("row", "mails", "msg/s", "reference", "ref msg/s", "ours/ref", "peak mem", "checks", "notes")
    table = [head] + [(r.name, f"{r.messages:,}", number(r.rate), r.reference, number(r.reference_rate),
                       f"{r.rate / r.reference_rate:.2f}x" if r.rate and r.reference_rate else "",
                       f"{r.sent.peak_mb:.0f} MB" if r.sent else "", "FAILED" if r.problems else "ok",
                       r.notes) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    right = {1, 2, 4, 5, 6}
    for j, line in enumerate(table):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
              .rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        for problem in r.problems:
            print(f"FAILED {r.name}: {problem}")
    memory = [r for r in rows if r.name.startswith("memory:") and r.sent]
    if len(memory) >= 2:
        first, last = memory[0].sent, memory[-1].sent
        print(f"\nmemory, {memory[0].messages:,} -> {memory[-1].messages:,} recipients "
              f"({memory[-1].messages / memory[0].messages:.0f}x): the command {first.peak_mb:.0f} -> "
              f"{last.peak_mb:.0f} MB ({last.peak_mb / first.peak_mb:.2f}x), its largest process "
              f"{first.rss_mb:.0f} -> {last.rss_mb:.0f} MB ({last.rss_mb / first.rss_mb:.2f}x)")
    million = [r for r in memory if r.messages >= 1_000_000]
    if million:
        peak = million[0].sent.peak_mb
        print(f"memory target <= {MEMORY_TARGET_MB} MB at 1,000,000 recipients: "
              f"{'met' if peak <= MEMORY_TARGET_MB else 'NOT met'} ({peak:.0f} MB)")


def machine() -> str:
    """Cores, CPU, memory, load and the versions that matter, for the top of the output."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    memory = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)

    def version(command: list[str]) -> str:
        """What `command` prints, or nothing when it is not installed."""
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = " with uncommitted changes" if version(["git", "-C", str(ROOT), "status", "--porcelain"]) else ""
    postfix = version([shutil.which("postconf", path="/usr/sbin:/usr/bin") or "postconf", "-d", "mail_version"])
    postgres = version([str(POSTGRES_BIN / "postgres"), "--version"]) or "PostgreSQL not installed"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({sending_processes()} usable), {cpu}, {memory:,} MB RAM, "
            f"load {load}, Linux {platform.release()}\n"
            f"versions: valuemail {commit}{dirty}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, "
            f"SQLAlchemy {sqlalchemy.__version__}, {postgres.replace('postgres (PostgreSQL)', 'PostgreSQL')}, "
            f"Postfix {postfix.split('=')[-1].strip() or 'not installed'}")


# -- render + MIME rows, and main

def pin_to_one_core() -> str:
    """Run on a single CPU so the numbers mean 'one core' even on a busy machine."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def render_rows(args) -> None:
    """The per-recipient render + MIME table, on one core."""
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinned = pin_to_one_core()
    try:
        rs = recipients(max(args.recipients, args.messages, args.reference_messages))
        renderer = Renderer(ROOT / "templates" / "emails")
        start = time.perf_counter()
        renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench")
        compile_ms = (time.perf_counter() - start) * 1000
        ours_size, ref_size = sanity_check(renderer, rs[0])
        runs = TrackedRuns()
        tracked_links = tracking_check(renderer, rs[0], runs)
        html_size = len(renderer.compile(TEMPLATE, subject=SUBJECT, variant="bench").render(rs[0].context).html.encode())

        print(f"Python {sys.version.split()[0]}, {pinned}; template {TEMPLATE}: compile once {compile_ms:.0f} ms")
        print(f"message: HTML part {html_size / 1024:.1f} KB; whole message {ours_size / 1024:.1f} KB ours, "
              f"{ref_size / 1024:.1f} KB EmailMessage; {len(rs)} distinct recipients; "
              f"with tracking {tracked_links - 3} of {tracked_links} links rewritten\n")
        rows = []
        rates: dict[str, float] = {}
        try:
            for section in sections(renderer, args.messages, args.reference_messages, runs):
                rate = timed(section, rs, args.repeats)
                rates[section.name] = rate
                rows.append((section, rate))
        finally:
            runs.close()
    finally:
        if all_cpus:
            os.sched_setaffinity(0, all_cpus)  # end to end uses the whole machine, like a real send
    width = max(len(s.name) for s, _ in rows)
    print(f"{'section':<{width}}  {'messages':>8}  {'msg/s':>8}  {'µs/msg':>8}  vs reference")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 8}  {'-' * 12}")
    for section, rate in rows:
        ratio = ""
        for other, other_rate in rows:
            if other.reference_for == section.name:
                ratio = f"{rate / other_rate:.1f}x faster"
        print(f"{section.name:<{width}}  {section.messages:>8}  {rate:>8,.0f}  {1e6 / rate:>8.0f}  {ratio}")
    for name in ("render + MIME, ours (MessageFactory)", TRACKED_ROW):
        target = rates[name]
        print(f"\ntarget >= 3,000 msg/s for {name} on one core: {'met' if target >= 3000 else 'NOT met'} "
              f"({target:,.0f} msg/s)", end="")
    print()


def print_legend(contacts: int, memory_sizes: list[int]) -> None:
    """What the end-to-end rows measure and check, above their table."""
    print(f"\nend to end: the whole `valuemail send {CAMPAIGN}` command (exec to exit, start-up included), "
          f"{contacts:,} personalised mails per row, a fresh database each, only 127.0.0.1 contacted.\n"
          f"  SMTP rows: [provider.smtp] pool_size = {POOL_SIZE} to Postfix's smtp-sink (counting), beside "
          "smtp-source pushing the same message (a copy of one we sent) over as many kept-open sessions as "
          "ours used (at least the pool) to the same sink; checks: the sink's count and the ledger (one run, "
          "finished, all sent) for every timed round (median of rounds shown), and every recipient exactly once with distinct Message-IDs "
          f"in a recorded run of {min(contacts, RECORDED):,} first.\n"
          f"  HTTP rows: each API stubbed on loopback (bench/_apistub.py, answers after {API_DELAY * 1000:.0f} "
          f"ms), [sending] concurrency = {HTTP_CONCURRENCY} per process and {sending_processes()} processes "
          "(one per core, the default), beside the ceiling of one message per request at that concurrency; "
          "checks: every recipient exactly once at the stub, nothing refused, the ledger.\n"
          "  peak mem: the send command's memory: the peak RSS of its largest process (the kernel's VmHWM), "
          "or, with helper processes, their PSS summed (sampled every 0.1 s) if that is more.\n"
          f"  memory rows: SMTP to smtp-sink, SQLite, at {', '.join(f'{n:,}' for n in memory_sizes)} "
          "recipients; checks: the sink's count, the ledger.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); default: all of " + ", ".join(PARTS))
    parser.add_argument("--contacts", type=int, default=10_000,
                        help="recipients of each end-to-end row; the memory rows use this and 10x this")
    parser.add_argument("--million", action="store_true", help="add a memory row at 1,000,000 recipients")
    parser.add_argument("--providers", default=",".join(HTTP_PROVIDERS),
                        help="HTTP providers of the http rows, comma-separated (default: all five)")
    parser.add_argument("--messages", type=int, default=3000, help="recipients per timed render row (ours)")
    parser.add_argument("--reference-messages", type=int, default=600, help="recipients per reference render row")
    parser.add_argument("--recipients", type=int, default=5000, help="distinct personalised render contexts")
    parser.add_argument("--repeats", type=int, default=3, help="render rows: best of this many passes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="SMTP rows: rounds of ours then smtp-source, each on a fresh database; the medians are shown")
    args = parser.parse_args(argv)
    parts = set(args.only or PARTS)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = set(providers) - set(HTTP_PROVIDERS)
    if unknown:
        parser.error(f"--providers: unknown {', '.join(sorted(unknown))} (known: {', '.join(HTTP_PROVIDERS)})")

    # The commands are timed as they start on a user's machine after their first run: with our
    # modules' bytecode cached (PYTHONDONTWRITEBYTECODE in the shell would make every run compile them).
    compileall.compile_dir(ROOT / "engine", quiet=1)
    print(machine() + "\n")
    if "render" in parts:
        render_rows(args)
    if parts - {"render"}:
        memory_sizes = [args.contacts, 10 * args.contacts] + ([1_000_000] if args.million else [])
        print_legend(args.contacts, memory_sizes)
        rows = end_to_end(parts, args.contacts, providers, memory_sizes, rounds=max(1, args.rounds))
        print_end_to_end(rows)
        if any(r.problems for r in rows):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
