"""`valuemail send`, and the drain that `tick`, `worker` and `run` share with it."""

from __future__ import annotations

import logging
import threading
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlmodel import Session

from ..cli import get_runtime
from ..models import Run
from ..providers import provider_factory
from ..rendering import Renderer
from ..runtime import Runtime
from ..sending import ledger
from ..sending.service import count_recipients, prepare_run, prepare_test_run
from ..sending.helpers import Helpers, helpers_for
from ..sending.worker import Sender

log = logging.getLogger(__name__)


def register(main: click.Group) -> None:
    main.add_command(send)


def make_sender(runtime: Runtime, **kwargs) -> Sender:
    """A Sender wired to the configured provider and the project's templates."""
    return Sender(engine=runtime.engine, settings=runtime.settings, clock=runtime.clock,
                  provider_factory=provider_factory(runtime.settings),
                  renderer=Renderer(runtime.settings.templates_dir), **kwargs)


class Tally:
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


def start_helpers(runtime: Runtime, run_ids: list[int], *, on_outcome) -> Helpers | None:
    """Helper processes for a drain of the runs, if they have enough work; None if not.

    Call it before this process starts threads of its own (a progress bar, a pool), so the
    helpers can be forks of it (see engine.sending.helpers). `on_outcome(run_id, status, count)`
    hears what they send.
    """
    with Session(runtime.engine) as session:
        queued = ledger.due_count(session, run_ids, now=runtime.clock.now())
    count = helpers_for(runtime.settings, queued)
    if not count:
        return None
    helpers = Helpers(settings=runtime.settings, clock=runtime.clock, run_ids=run_ids, count=count,
                      on_outcome=on_outcome)
    log.info("sending with %d processes", count + 1)
    return helpers


def drain(runtime: Runtime, run_ids: list[int], *, sender: Sender, helpers: Helpers | None, wait: bool) -> None:
    """Send the runs' queued deliveries with `sender`, beside `helpers` (from `start_helpers`) if any."""
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


def _drain_with_progress(runtime: Runtime, run_ids: list[int], total: int, label: str, *, wait: bool) -> Tally:
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    progress = Progress(*columns, console=console, transient=False, disable=not console.is_terminal)
    with Session(runtime.engine) as session:
        done = sum(n for status, n in ledger.counts(session, run_ids[0]).items() if status in ("sent", "failed", "skipped", "uncertain"))
    tally = Tally(progress, progress.add_task(label, total=total, completed=done))
    helpers = start_helpers(runtime, run_ids, on_outcome=tally.add)  # before the bar's refresh thread
    with progress:
        drain(runtime, run_ids, sender=make_sender(runtime, on_outcome=tally), helpers=helpers, wait=wait)
    return tally


def _summary(runtime: Runtime, run_id: int, tally: Tally, seconds: float) -> None:
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
