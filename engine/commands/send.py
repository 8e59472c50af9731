"""`valuemail send`, `valuemail tick` and `valuemail worker`."""

from __future__ import annotations

import logging
import sys
import threading
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlmodel import Session

from ..cli import get_runtime, parse_instant
from ..clock import FixedClock
from ..models import Run
from ..providers import provider_factory
from ..rendering import Renderer
from ..runtime import Runtime
from ..sending import ledger
from ..scheduler import run_due
from ..sending.service import count_recipients, prepare_run, prepare_test_run, refill_unfinished
from ..sending.helpers import Helpers, helpers_for
from ..sending.worker import Sender

log = logging.getLogger(__name__)


def register(main: click.Group) -> None:
    main.add_command(send)
    main.add_command(tick)
    main.add_command(worker)


def make_sender(runtime: Runtime, **kwargs) -> Sender:
    """A Sender wired to the configured provider and the project's templates."""
    return Sender(engine=runtime.engine, settings=runtime.settings, clock=runtime.clock,
                  provider_factory=provider_factory(runtime.settings),
                  renderer=Renderer(runtime.settings.templates_dir), **kwargs)


class _Tally:
    """Counts outcomes from this process's sender and its helper processes; feeds a progress bar."""

    def __init__(self, progress: Progress | None = None, task=None):
        self.counts = {"sent": 0, "failed": 0, "skipped": 0, "deferred": 0, "uncertain": 0}
        self.progress, self.task = progress, task
        self._lock = threading.Lock()

    def __call__(self, run_id: int, status: str) -> None:
        self.add(run_id, status, 1)

    def add(self, run_id: int, status: str, count: int) -> None:
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + count
            if self.progress is not None and status != "deferred":
                self.progress.advance(self.task, count)


def drain(runtime: Runtime, run_ids: list[int], *, sender: Sender, on_helper_outcome, wait: bool) -> None:
    """Send the runs' queued deliveries with `sender` and, for a big run, in helper processes too.

    `on_helper_outcome(run_id, status, count)` hears what the helpers sent.
    """
    with Session(runtime.engine) as session:
        queued = ledger.due_count(session, run_ids, now=runtime.clock.now())
    count = helpers_for(runtime.settings, queued)
    helpers = None
    if count:
        helpers = Helpers(settings=runtime.settings, clock=runtime.clock, run_ids=run_ids, count=count,
                          on_outcome=on_helper_outcome)
        log.info("sending with %d processes", count + 1)
    try:
        sender.drain(run_ids, wait_for_retries=wait)
    except KeyboardInterrupt:
        sender.stop.set()
        if helpers is not None:
            helpers.interrupt()
            helpers.wait()
        raise
    if helpers is not None:
        if any(helpers.wait()):
            log.warning("a helper sending process failed; this process sends what it left")
        # What a helper left (a failed helper's claims, deliveries it deferred) and the run's end.
        sender.drain(run_ids, wait_for_retries=wait)


def _drain_with_progress(runtime: Runtime, run_ids: list[int], total: int, label: str, *, wait: bool) -> _Tally:
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        with Session(runtime.engine) as session:
            done = sum(n for status, n in ledger.counts(session, run_ids[0]).items() if status in ("sent", "failed", "skipped", "uncertain"))
        task = progress.add_task(label, total=total, completed=done)
        tally = _Tally(progress, task)
        drain(runtime, run_ids, sender=make_sender(runtime, on_outcome=tally), on_helper_outcome=tally.add, wait=wait)
    return tally


def _summary(runtime: Runtime, run_id: int, tally: _Tally, seconds: float) -> None:
    with Session(runtime.engine) as session:
        run = session.get(Run, run_id)
        counts = ledger.counts(session, run_id)
    rate = tally.counts["sent"] / seconds if seconds > 0 else 0.0
    click.echo(f"this time: sent {tally.counts['sent']}, failed {tally.counts['failed']}, "
               f"skipped {tally.counts['skipped']}, deferred {tally.counts['deferred']}, "
               f"uncertain {tally.counts['uncertain']} "
               f"in {seconds:.1f} s ({rate:.0f} msg/s)")
    click.echo(f"run #{run_id} ({run.status}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if run.status == "paused":
        click.echo(f"run #{run_id} is paused: {run.pause_reason}\nfix the cause, then run the same command to resume.")
    elif counts["queued"]:
        click.echo(f"{counts['queued']} deliveries wait for a retry; `valuemail tick` or `valuemail worker` sends them.")
    if counts["uncertain"]:
        click.echo(f"{counts['uncertain']} deliveries are uncertain (maybe delivered, not resent): "
                   "see `valuemail uncertain`.")


@click.command()
@click.argument("campaign")
@click.option("--test-to", metavar="EMAIL", help="Send one message per segment variant to EMAIL only.")
@click.option("--dry-run", is_flag=True, help="Show who would get which variant; send and store nothing.")
@click.option("--again", is_flag=True, help="Send a new occurrence even though the campaign was sent before.")
@click.option("--no-wait", is_flag=True, help="Do not wait for deferred retries; leave them to tick or worker.")
@click.pass_context
def send(ctx: click.Context, campaign: str, test_to: str | None, dry_run: bool, again: bool, no_wait: bool) -> None:
    """Run one occurrence of CAMPAIGN now (resuming an interrupted or paused run)."""
    runtime = get_runtime(ctx)
    if dry_run:
        counts = count_recipients(runtime, campaign)
        total = sum(counts.values())
        click.echo(f"{campaign}: would send {total} messages (" +
                   ", ".join(f"{seg} {n}" for seg, n in counts.items()) + "); nothing sent")
        return
    if test_to:
        from email_validator import EmailNotValidError, validate_email

        try:
            test_to = validate_email(test_to, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise click.BadParameter(str(exc), param_hint="--test-to") from None
        prepared = prepare_test_run(runtime, campaign, to=test_to)
        click.echo(f"test run #{prepared.run_id}: {prepared.total} message(s), one per segment variant, to {test_to}")
    else:
        prepared = prepare_run(runtime, campaign, again=again)
        verb = "resuming" if prepared.resumed else "started"
        click.echo(f"{prepared.campaign.name} ({prepared.campaign.id}): {verb} run #{prepared.run_id}, "
                   f"{prepared.total} recipients")
    started = time.monotonic()
    tally = _drain_with_progress(runtime, [prepared.run_id], prepared.total, prepared.campaign.id, wait=not no_wait)
    _summary(runtime, prepared.run_id, tally, time.monotonic() - started)


@click.command()
@click.option("--at", "at_text", metavar="ISO-8601", help="The instant to act as of (default: now).")
@click.pass_context
def tick(ctx: click.Context, at_text: str | None) -> None:
    """Do everything due at an instant (scheduled occurrences), then drain the queue once."""
    runtime = get_runtime(ctx)
    if at_text:
        runtime.clock = FixedClock(parse_instant(at_text, runtime.settings.tz, option="--at"))
    at = runtime.clock.now()
    report = run_due(runtime, at=at)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    for campaign_id, reason in report.skipped:
        click.echo(f"{campaign_id}: skipped, {reason}")
    for campaign_id, run_id in report.started:
        click.echo(f"{campaign_id}: started run #{run_id}")
    for campaign_id, done in report.actions:
        click.echo(f"{campaign_id}: {done}")
    run_ids = refill_unfinished(runtime)
    tally = _Tally()
    if run_ids:
        drain(runtime, run_ids, sender=make_sender(runtime, on_outcome=tally), on_helper_outcome=tally.add, wait=False)
    click.echo(f"tick at {at.astimezone(runtime.settings.tz):%Y-%m-%d %H:%M:%S %Z}: "
               + ", ".join(f"{k} {v}" for k, v in tally.counts.items()))
    if report.problems:
        sys.exit(1)


@click.command()
@click.option("--idle-seconds", default=2.0, show_default=True, help="Pause between polls when there is no work.")
@click.pass_context
def worker(ctx: click.Context, idle_seconds: float) -> None:
    """Send queued deliveries of every run until stopped (one role only, for scaling out)."""
    runtime = get_runtime(ctx)
    sender = make_sender(runtime)
    click.echo(f"worker {sender.worker_id} started (provider {runtime.settings.provider.name})")
    try:
        while True:
            run_ids = refill_unfinished(runtime)
            if run_ids:
                sender.drain(run_ids, wait_for_retries=False)
            time.sleep(idle_seconds)
    except KeyboardInterrupt:
        click.echo("worker stopped")
