"""`valuemail tick` and `valuemail worker`: what the scheduler and the queue do, one command each."""

from __future__ import annotations

import logging
import sys
import time

import click

from ..cli import get_runtime, parse_instant
from ..clock import FixedClock
from ..scheduler import run_due
from ..sending.service import refill_unfinished
from .send import Tally, drain, make_sender, start_helpers

log = logging.getLogger(__name__)


def register(main: click.Group) -> None:
    main.add_command(tick)
    main.add_command(worker)


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
    tally = Tally()
    if run_ids:
        helpers = start_helpers(runtime, run_ids, on_outcome=tally.add)
        drain(runtime, run_ids, sender=make_sender(runtime, on_outcome=tally), helpers=helpers, wait=False)
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
