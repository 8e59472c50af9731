"""Admin campaign pages: every campaign file with its status and runs, previews, test sends, run control."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from flask import abort, flash, make_response, redirect, render_template, request, url_for
from sqlalchemy import case, func
from sqlmodel import Session, select

from ..campaigns import CampaignDefinition, campaign_file, campaign_files, load_campaign
from ..campaigns.loader import SEGMENTS_FILE
from ..db import read_only
from ..errors import InvalidFile, NotFound, Problem
from ..models import OPEN_RUN_STATUSES, Delivery, Run, RunStatus
from ..previews import render_previews
from ..rendering import budget
from ..runtime import Runtime
from ..scheduler.cron import next_fire_time
from ..segments import Segments, load_segments
from ..sending import ledger
from ..sending.service import prepare_test_run
from . import auth
from .admin import bp
from .context import db_session, web_context
from .ledger import STATUS_ORDER, RunSummary, status_counts
from .security import DEFAULT_CSP

RUNS_SHOWN = 50
#: The campaign page shows e-mail previews in sandboxed srcdoc iframes. A srcdoc document
#: inherits this page's policy, so mail styles (inline, as MJML writes them) and remote images
#: must be allowed here; still no script-src, so nothing runs, and the sandbox (no allow-scripts,
#: no allow-same-origin) keeps the mail away from this page and its cookies even so.
PREVIEW_CSP = DEFAULT_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self' data:", "img-src 'self' data: https:") + "; frame-src 'self'"
OPEN_STATUSES = OPEN_RUN_STATUSES + (RunStatus.paused.value,)


@dataclass
class CampaignRow:
    """One campaign file as the list shows it."""

    id: str
    file: str
    definition: CampaignDefinition | None = None
    problems: list[Problem] = field(default_factory=list)
    status: str = "invalid"
    next_at: datetime | None = None
    next_note: str = ""
    last_run: RunSummary | None = None
    open_run: Run | None = None

    @property
    def schedule_text(self) -> str:
        schedule = self.definition.schedule if self.definition else None
        if schedule is None:
            return "sent by hand"
        if schedule.kind == "cron":
            return f"cron {schedule.cron}"
        if schedule.kind == "trigger":
            what = f"event {schedule.event_type}" if schedule.trigger == "event" else schedule.trigger
            delay = f" + {_duration(schedule.delay)}" if schedule.delay else ""
            return f"on each {what}{delay}"
        return "once"


def _duration(delta) -> str:
    """A delay as the file writes it (7d, 12h, 30m)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- pages ------------------------------------------------------------------------------------------

@bp.get("/campaigns")
def campaigns():
    """Every campaign file: kind, values, schedule, status, next occurrence and last run."""
    ctx = web_context()
    segments, segment_problems = _segments()
    session = db_session()
    rows = [_row(session, path, segments) for path in campaign_files(ctx.settings.campaigns_dir)]
    return render_template("admin/campaigns.html", rows=rows, segment_problems=segment_problems,
                           statuses=STATUS_ORDER)


@bp.get("/campaigns/<campaign_id>")
def campaign_detail(campaign_id: str):
    """One campaign: per-segment results of its last run, its runs, previews and (for admins) actions."""
    ctx = web_context()
    path = _campaign_path(campaign_id)
    segments, segment_problems = _segments()
    session = db_session()
    row = _row(session, path, segments)
    runs = list(session.exec(select(Run).where(Run.campaign_id == campaign_id)
                             .order_by(Run.id.desc()).limit(RUNS_SHOWN)).all())
    counts = status_counts(session, [r.id for r in runs])
    summaries = [RunSummary(run=r, campaign_name=None, counts=counts[r.id]) for r in runs]
    by_segment = _segment_results(session, row.last_run.run.id) if row.last_run else []
    previews, preview_error = [], None
    if row.definition is not None and segments is not None:
        try:
            with budget.limits():  # every variant's preview together: a GET never holds a web thread longer
                previews = render_previews(_runtime(), segments, row.definition, list(row.definition.segments))
        except (InvalidFile, NotFound) as exc:
            preview_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken template must not take the whole page down
            preview_error = f"{type(exc).__name__}: {exc}"
    html = render_template("admin/campaign_detail.html", row=row, runs=summaries, by_segment=by_segment,
                           previews=previews, preview_error=preview_error, segment_problems=segment_problems,
                           statuses=STATUS_ORDER, open_statuses=OPEN_STATUSES,
                           default_to=auth.current_admin().email, tz=ctx.settings.tz)
    response = make_response(html)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    return response


# -- actions (admin role: auth.protect refuses every other POST, require_role says so here too) ---

@bp.post("/campaigns/<campaign_id>/test")
@auth.require_role("admin")
def send_test(campaign_id: str):
    """Queue a test run: one message per segment variant, all to the given address; the workers send it.

    Queued rather than sent in the request: rendering and the provider's answer (and its retries)
    stay with the workers, as for every other message, and the ledger records the test like any run.
    """
    _campaign_path(campaign_id)
    try:
        to = validate_email(request.form.get("to", "")[:320], check_deliverability=False).normalized
    except EmailNotValidError as exc:
        flash(f"Test not sent: {exc}")
        return redirect(url_for("admin.campaign_detail", campaign_id=campaign_id))
    try:
        prepared = prepare_test_run(_runtime(), campaign_id, to=to)
    except (InvalidFile, NotFound) as exc:
        flash(f"Test not sent: {exc}")
        return redirect(url_for("admin.campaign_detail", campaign_id=campaign_id))
    flash(f"Test run #{prepared.run_id} queued: {prepared.total} message(s), one per segment variant, to {to}. "
          "The workers send it.")
    return redirect(url_for("admin.campaign_detail", campaign_id=campaign_id))


@bp.post("/runs/<int:run_id>/cancel")
@auth.require_role("admin")
def cancel_run(run_id: int):
    """End a run for good: its queued deliveries are skipped (messages already with a worker go out)."""
    ctx = web_context()
    user = auth.current_admin()
    skipped = ledger.cancel(ctx.engine, run_id, now=ctx.clock.now(), reason=f"cancelled by {user.email}")
    # Not db_session(): on a POST it is a writer, and on SQLite that holds the lock until the request ends.
    with Session(read_only(ctx.engine)) as session:
        run = session.get(Run, run_id)
    if run is None:
        abort(404)
    if skipped is None:
        flash("Only a run that is being filled, sent or paused can be cancelled.")
    else:
        flash(f"Run #{run_id} cancelled: {skipped} queued deliveries skipped.")
    if request.form.get("back") == "campaign":
        return redirect(url_for("admin.campaign_detail", campaign_id=run.campaign_id))
    return redirect(url_for("admin.run_detail", run_id=run_id))


# -- helpers ------------------------------------------------------------------------------------------

def _runtime() -> Runtime:
    """A Runtime on the app's engine and clock, for domain code written for commands."""
    ctx = web_context()
    runtime = Runtime(settings=ctx.settings, clock=ctx.clock)
    runtime.__dict__["engine"] = ctx.engine  # the app's engine, not a second pool (cached_property slot)
    return runtime


def _campaign_path(campaign_id: str):
    path = campaign_file(web_context().settings.campaigns_dir, campaign_id)
    if path is None:
        abort(404)
    return path


def _segments() -> tuple[Segments | None, list[Problem]]:
    try:
        return load_segments(web_context().settings.campaigns_dir / SEGMENTS_FILE), []
    except InvalidFile as exc:
        return None, [p.relative_to(web_context().settings.root) for p in exc.problems]


def _row(session: Session, path, segments: Segments | None) -> CampaignRow:
    ctx = web_context()
    row = CampaignRow(id=path.stem, file=path.name)
    try:
        row.definition = load_campaign(path, settings=ctx.settings,
                                       segment_names=list(segments) if segments is not None else None, today=None)
    except InvalidFile as exc:
        row.problems = [p.relative_to(ctx.settings.root) for p in exc.problems]
    last = session.exec(select(Run).where(Run.campaign_id == row.id, Run.is_test.is_(False))
                        .order_by(Run.id.desc()).limit(1)).first()
    if last is not None:
        row.last_run = RunSummary(run=last, campaign_name=None, counts=status_counts(session, [last.id])[last.id])
    row.open_run = session.exec(select(Run).where(Run.campaign_id == row.id, Run.status.in_(OPEN_STATUSES))
                                .order_by(Run.id.desc()).limit(1)).first()
    if row.definition is None:
        return row
    now = ctx.clock.now()
    schedule = row.definition.schedule
    if schedule is not None and schedule.kind == "cron":
        row.next_at = next_fire_time(schedule.cron, tz=ctx.settings.tz, after=now)
    elif schedule is not None and schedule.kind == "at":
        sent = session.exec(select(func.count()).select_from(Run).where(
            Run.campaign_id == row.id, Run.is_test.is_(False))).one()
        row.next_at = schedule.at if schedule.at > now and not sent else None
    if row.next_at is not None:
        reason = row.definition.kind.inactive_reason(row.definition.section,
                                                     day=row.next_at.astimezone(ctx.settings.tz).date())
        if reason:
            row.next_note = f"will not be sent: {reason}"
    if row.open_run is not None:
        row.status = "running"
    elif row.next_at is not None or (schedule is not None and schedule.kind == "trigger"):
        row.status = "scheduled"
    elif row.last_run is not None:
        row.status = "finished"
    else:
        row.status = "not scheduled"
    return row


@dataclass
class SegmentResult:
    """One segment's outcome in a run."""

    segment: str
    counts: dict[str, int] = field(default_factory=dict)
    opened: int = 0
    clicked: int = 0


def _segment_results(session: Session, run_id: int) -> list[SegmentResult]:
    """Deliveries per segment and status, with first opens and clicks, in one GROUP BY."""
    rows = session.exec(
        select(Delivery.segment, Delivery.status, func.count(),
               func.sum(case((Delivery.opened_at.is_not(None), 1), else_=0)),
               func.sum(case((Delivery.clicked_at.is_not(None), 1), else_=0)))
        .where(Delivery.run_id == run_id).group_by(Delivery.segment, Delivery.status)
    ).all()
    results: dict[str, SegmentResult] = {}
    for segment, status, n, opened, clicked in rows:
        item = results.setdefault(segment, SegmentResult(segment))
        item.counts[status] = n
        item.opened += int(opened or 0)
        item.clicked += int(clicked or 0)
    return [results[k] for k in sorted(results)]
