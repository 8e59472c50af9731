"""`valuemail run`: scheduler, sending workers and the web UI in one process."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import click
from sqlalchemy import func, select
from sqlmodel import Session

from ..cli import get_runtime
from ..errors import ValuemailError
from ..migrate import HEAD, current, upgrade
from ..models import Contact
from ..scheduler import lease, run_due
from ..sending.service import refill_unfinished
from .send import drain, make_sender, start_helpers
from .web import build_app, freeze_heap, start_in_thread

log = logging.getLogger(__name__)

#: The lease that makes one `valuemail run` process the active scheduler.
SCHEDULER_LEASE = "scheduler"


def register(main: click.Group) -> None:
    main.add_command(run)


@click.command()
@click.option("--demo", is_flag=True, help="Apply migrations and load the demo data set first (if the database is empty).")
@click.option("--host", default=None, help="Web address (default from [web] host).")
@click.option("--port", type=int, default=None, help="Web port (default from [web] port).")
@click.pass_context
def run(ctx: click.Context, demo: bool, host: str | None, port: int | None) -> None:
    """Run the scheduler, the sending workers and the web UI until interrupted."""
    from apscheduler.schedulers.background import BackgroundScheduler

    runtime = get_runtime(ctx, migrated=False)
    settings = runtime.settings
    if demo:
        upgrade(runtime.engine)
        with Session(runtime.engine) as session:
            empty = session.execute(select(func.count()).select_from(Contact)).scalar() == 0
        if empty:
            from ..demo import load_demo

            click.echo("loading the demo data set ...")
            click.echo(str(load_demo(runtime.engine, settings=settings, clock=runtime.clock)))
        _demo_admin(runtime)
    elif current(runtime.engine) != HEAD:
        raise ValuemailError("the database schema is not up to date: run `valuemail db upgrade` first")

    server = start_in_thread(build_app(runtime), host=host or settings.web.host,
                             port=settings.web.port if port is None else port)
    click.echo(f"web UI on {server.url}/admin/runs  (provider: {settings.provider.name}; Ctrl-C stops)")

    work = threading.Event()
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def tick() -> None:
        # Only the lease holder schedules; other `run` processes still send and serve.
        if not lease.acquire(runtime.engine, SCHEDULER_LEASE, holder, now=runtime.clock.now(),
                             ttl_seconds=settings.scheduler.lease_seconds):
            return
        report = run_due(runtime, at=runtime.clock.now())
        for problem in report.problems:
            log.error("%s", problem)
        for campaign_id, reason in report.skipped:
            log.warning("%s: skipped, %s", campaign_id, reason)
        for campaign_id, run_id in report.started:
            log.info("%s: started run #%s", campaign_id, run_id)
        for campaign_id, done in report.actions:
            log.info("%s: %s", campaign_id, done)
        work.set()

    scheduler = BackgroundScheduler(timezone=settings.tz)
    scheduler.add_job(tick, "interval", seconds=settings.scheduler.tick_seconds, id="due-occurrences",
                      max_instances=1, coalesce=True, next_run_time=runtime.clock.now())
    scheduler.start()
    sender = make_sender(runtime)
    freeze_heap()  # everything above lives as long as the process
    try:
        failures = 0
        while True:
            failures = 0 if send_round(runtime, sender) else failures + 1
            work.wait(timeout=retry_delay(failures))
            work.clear()
    except KeyboardInterrupt:
        click.echo("stopping ...")
    finally:
        scheduler.shutdown(wait=False)
        lease.release(runtime.engine, SCHEDULER_LEASE, holder)
        server.stop()


def send_round(runtime, sender) -> bool:
    """Drain what is queued once; False (logged) if it failed, so that the web UI and the scheduler
    in this process go on whatever happened to one round of sending."""
    try:
        run_ids = refill_unfinished(runtime)
        if run_ids:
            helpers = start_helpers(runtime, run_ids, on_outcome=lambda *_: None)  # new interpreters: threads run here
            drain(runtime, run_ids, sender=sender, helpers=helpers, wait=False)
    except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
        first_line = (str(exc) or type(exc).__name__).splitlines()[0]  # a database error carries its SQL
        log.error("sending stopped: %s", first_line, exc_info=log.isEnabledFor(logging.DEBUG))
        return False
    return True


def retry_delay(failures: int) -> float:
    """Seconds to the next round: 2, and after failed rounds 4, 8, ... up to 5 minutes."""
    return min(300.0, 2.0 * 2 ** failures)


#: The account `run --demo` makes when there is none, so that the quick start can log in.
DEMO_ADMIN = "demo@example.com"


def _demo_admin(runtime) -> None:
    """Create the demo admin with a fresh random password (printed once) when no account exists yet."""
    import secrets

    from .. import admins
    from ..db import session_scope
    from ..models import AdminUser

    with session_scope(runtime.engine) as session:
        if session.execute(select(AdminUser.id).limit(1)).first() is not None:
            return
        password = secrets.token_urlsafe(12)
        admins.create_admin(session, DEMO_ADMIN, password, role="admin", now=runtime.clock.now())
    click.echo(f"demo admin: {DEMO_ADMIN}  password: {password}  "
               "(shown once; `valuemail admin passwd` changes it)")
