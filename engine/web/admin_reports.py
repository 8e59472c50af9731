"""Admin pages over the whole ledger: the send log, one delivery with its timeline, and the dashboard.

The views sit on the admin blueprint, so they need a login like every admin page (auth.protect).
"""

from __future__ import annotations

from datetime import date

from flask import abort, jsonify, render_template, request
from sqlalchemy import select

from .. import dashboard as results
from ..models import Campaign, Delivery, Run
from ..sendlog import STATUSES, LogFilter, log_page, timeline
from .admin import MAX_FILTER, _int_arg, bp
from .charts import Series, line_chart
from .context import db_session, web_context

LOG_PAGE = 50
#: The rates the dashboard charts, in this order.
CHARTED = (("opened", "Open rate"), ("clicked", "Click rate"), ("converted", "Conversion rate"),
           ("unsubscribed", "Unsubscribe rate"), ("bounced", "Bounce rate"))


@bp.get("/log")
def send_log():
    """Every delivery, newest first, filtered by address, campaign, status and day; keyset pages."""
    session = db_session()
    flt = LogFilter(email=request.args.get("email", "").strip()[:MAX_FILTER],
                    campaign=request.args.get("campaign", "").strip()[:200],
                    status=request.args.get("status", ""), day_from=_day("from"), day_to=_day("to"))
    if flt.status and flt.status not in STATUSES:
        abort(400)
    before = _int_arg("before")
    rows, next_before = log_page(session, flt, tz=web_context().settings.tz, before=before, limit=LOG_PAGE)
    campaigns = session.execute(select(Campaign.id).order_by(Campaign.id)).scalars().all()
    return render_template("admin/log.html", rows=rows, next_before=next_before, flt=flt, statuses=STATUSES,
                           campaigns=campaigns, first_page=before is None, args=_filter_args(flt))


@bp.get("/deliveries/<int:delivery_id>")
def delivery_detail(delivery_id: int):
    """One delivery: addresses and ids, what the provider said, and its timeline."""
    session = db_session()
    row = session.execute(select(Delivery, Run).join(Run, Run.id == Delivery.run_id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None:
        abort(404)
    delivery, run = row
    sender = web_context().settings.sender
    # The headers every message of this delivery carried (rebuilt from what the ledger stores).
    headers = [("From", f"{sender.from_name} <{sender.from_email}>"), ("To", delivery.email),
               ("Message-ID", delivery.message_id or "(not sent yet)"),
               ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
               ("Feedback-ID", f"{run.id}:{run.campaign_id}:valuemail")]
    return render_template("admin/delivery.html", delivery=delivery, run=run, headers=headers,
                           events=timeline(session, delivery_id))


@bp.get("/dashboard")
def dashboard_page():
    """Results per campaign kind or value dimension over time, with charts drawn on the server."""
    board = _board()
    labels = [p.label for p in board.periods]
    charts = [line_chart(labels, [Series(group, [f.rate(name) for f in figures]) for group, figures in board.groups.items()],
                         title=title, unit="%") for name, title in CHARTED]
    totals = {group: board.total(group) for group in board.groups}
    return render_template("admin/dashboard.html", board=board, charts=charts, totals=totals,
                           grouping=board.grouping, period=request.args.get("period", "month"),
                           periods=len(board.periods), attribution_days=web_context().settings.tracking.attribution_days)


@bp.get("/dashboard.json")
def dashboard_json():
    """The dashboard's figures as JSON."""
    return jsonify(_board().as_json())


def _board() -> results.Dashboard:
    ctx = web_context()
    grouping = request.args.get("group", "kind")
    period = request.args.get("period", "month")
    periods = _int_arg("periods")
    periods = 6 if periods is None else periods
    if grouping not in results.GROUPINGS or period not in results.PERIODS or not 1 <= periods <= 366:
        abort(400)
    return results.dashboard(db_session(), grouping=grouping, period=period, periods=periods, now=ctx.clock.now(),
                             tz=ctx.settings.tz, attribution_days=ctx.settings.tracking.attribution_days)


def _day(name: str) -> date | None:
    raw = request.args.get(name, "")
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        abort(400)


def _filter_args(flt: LogFilter) -> dict[str, str]:
    """The filter as query arguments, for the pager's links."""
    args = {"email": flt.email, "campaign": flt.campaign, "status": flt.status,
            "from": flt.day_from.isoformat() if flt.day_from else "", "to": flt.day_to.isoformat() if flt.day_to else ""}
    return {k: v for k, v in args.items() if v}
