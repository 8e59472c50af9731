"""The admin area: runs and their delivery ledger. Every view needs a login (see auth.protect)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlmodel import Session

from ..campaigns import load_campaign
from ..db import read_only
from ..errors import InvalidFile
from ..models import Run
from ..sending import ledger, uncertain
from ..surveys import PERIODS, satisfaction
from . import auth
from .context import db_session, web_context
from .ledger import STATUS_ORDER, delivery_page, list_runs, run_summary

bp = Blueprint("admin", __name__, url_prefix="/admin")
# Every view of this blueprint, present and future, needs a login; writes need the admin role.
auth.protect(bp)

RUNS_PER_PAGE = 50
DELIVERIES_PER_PAGE = 100
#: Longest email filter accepted; a substring longer than an address cannot match anyway.
MAX_FILTER = 320


@bp.get("/")
def index():
    """The admin home is the runs list."""
    return redirect(url_for("admin.runs"))


@bp.get("/runs")
def runs():
    """Every run, newest occurrence first, with delivery counts and progress."""
    session = db_session()
    before_id = _int_arg("before")
    before = None
    if before_id is not None:
        before = session.get(Run, before_id)
        if before is None:
            abort(400)
    page, next_before = list_runs(session, before=before, limit=RUNS_PER_PAGE)
    return render_template("admin/runs.html", runs=page, next_before=next_before, statuses=STATUS_ORDER,
                           first_page=before is None, uncertain=uncertain.count_uncertain(session))


@bp.get("/runs/<int:run_id>")
def run_detail(run_id: int):
    """A run's header and its deliveries, keyset-paged by id and filterable by status and email."""
    session = db_session()
    summary = run_summary(session, run_id)
    if summary is None:
        abort(404)
    after = _int_arg("after") or 0
    status = request.args.get("status", "")
    if status and status not in STATUS_ORDER:
        abort(400)
    email = request.args.get("q", "")[:MAX_FILTER]
    # Only statuses the run actually has are scanned; the header's counts already tell us which.
    present = [s for s in summary.counts if summary.counts[s]]
    statuses = [status] if status else present
    if status and status not in present:
        statuses = []
    deliveries, next_after = delivery_page(session, run_id=run_id, statuses=statuses, after=after,
                                           email=email, limit=DELIVERIES_PER_PAGE)
    return render_template(
        "admin/run_detail.html", summary=summary, deliveries=deliveries, next_after=next_after,
        statuses=STATUS_ORDER, status=status, q=email, first_page=after == 0,
    )


@bp.post("/runs/<int:run_id>/pause")
@auth.require_role("admin")
def pause_run(run_id: int):
    """Stop the workers from sending more of a run until it is resumed."""
    ctx = web_context()
    user = auth.current_admin()
    if not ledger.pause(ctx.engine, run_id, reason=f"paused by {user.email}"):
        _not_changed(run_id, "Only a sending run can be paused.")
    return redirect(url_for("admin.run_detail", run_id=run_id))


@bp.post("/runs/<int:run_id>/resume")
@auth.require_role("admin")
def resume_run(run_id: int):
    """Let the workers send the rest of a paused run."""
    if not ledger.resume(web_context().engine, run_id):
        _not_changed(run_id, "Only a paused run can be resumed.")
    return redirect(url_for("admin.run_detail", run_id=run_id))


def _not_changed(run_id: int, message: str) -> None:
    # Not db_session(): on a POST it is a writer, and on SQLite that holds the lock until the request ends.
    with Session(read_only(web_context().engine)) as session:
        if session.get(Run, run_id) is None:
            abort(404)
    flash(message)


@bp.get("/surveys/<campaign_id>/results.json")
def survey_results(campaign_id: str):
    """NPS, average rating and responses per period with the change since the period before (JSON)."""
    ctx = web_context()
    period = request.args.get("period", "month")
    periods = _int_arg("periods")
    periods = 6 if periods is None else periods
    if period not in PERIODS or not 1 <= periods <= 60:
        return jsonify(error=f"period must be one of {', '.join(PERIODS)} and periods 1-60"), 400
    path = ctx.settings.campaigns_dir / f"{campaign_id}.toml"
    if "/" in campaign_id or not path.is_file():
        return jsonify(error=f"no campaign {campaign_id!r}"), 404
    try:
        campaign = load_campaign(path, settings=ctx.settings, segment_names=None, today=None)
    except InvalidFile as exc:
        return jsonify(error="\n".join(str(p.relative_to(ctx.settings.root)) for p in exc.problems)), 409
    if campaign.kind_name != "post_purchase_survey":
        return jsonify(error=f"campaign {campaign_id!r} is not a survey"), 404
    now = ctx.clock.now()
    scores = satisfaction(db_session(), campaign.id, survey=campaign.section, now=now, period=period,
                          periods=periods, tz=ctx.settings.tz)
    return jsonify(campaign=campaign.id, name=campaign.name, period=period, as_of=now.isoformat(),
                   questions=[{"key": q.key, "type": q.type, "text": q.text} for q in campaign.section.questions],
                   periods=[s.as_json() for s in scores])


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        abort(400)
    return int(raw)


# The ledger-wide pages live in their own module and register on this blueprint.
from . import (admin_campaigns, admin_contacts, admin_contests, admin_ops, admin_reports,  # noqa: E402,F401
               admin_surveys)
