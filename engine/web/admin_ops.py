"""Admin pages for what providers report: uncertain deliveries (resend or accept) and the webhook log.

The views sit on the admin blueprint: a login for every page, the admin role for every POST
(auth.protect), CSRF on every form (the app's CSRFProtect). Resend and accept go through the
same domain functions as `valuemail uncertain` (engine.sending.uncertain).
"""

from __future__ import annotations

from datetime import timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from sqlmodel import Session

from .. import webhook_log, webhooks
from ..db import read_only
from ..sending import uncertain as domain
from .admin import _int_arg, bp
from .context import db_session, web_context

UNCERTAIN_PER_PAGE = 100
WEBHOOKS_PER_PAGE = 100
#: Most deliveries one form may name: a page's worth, with room to spare.
MAX_CHOSEN = 500
REFUSALS_WINDOW = timedelta(hours=24)


@bp.get("/uncertain")
def uncertain():
    """Deliveries whose outcome is unknown, newest first, keyset-paged, with resend and accept for admins."""
    before = _int_arg("before")
    rows, next_before = domain.uncertain_page(db_session(), before=before, limit=UNCERTAIN_PER_PAGE)
    return render_template("admin/uncertain.html", rows=rows, next_before=next_before, first_page=before is None)


@bp.post("/uncertain/resend")
def uncertain_resend():
    """Ask to confirm (the mail may arrive twice), then requeue the chosen uncertain deliveries."""
    ids = _chosen_ids()
    if not ids:
        return redirect(url_for("admin.uncertain"))
    if request.form.get("confirm") != "yes":
        # Not db_session(): on a POST it is a writer, and on SQLite that holds the lock until the request ends.
        with Session(read_only(web_context().engine)) as session:
            rows = domain.list_uncertain(session, ids=ids)
        if not rows:
            flash("None of the chosen deliveries is uncertain any more.")
            return redirect(url_for("admin.uncertain"))
        return render_template("admin/uncertain_confirm.html", rows=rows)
    ctx = web_context()
    count = domain.resend(ctx.engine, ids, now=ctx.clock.now())
    flash(f"Requeued {count} uncertain deliveries; their recipients may get the mail twice.{_missing(ids, count)}")
    return redirect(url_for("admin.uncertain"))


@bp.post("/uncertain/accept")
def uncertain_accept():
    """Mark the chosen uncertain deliveries sent."""
    ids = _chosen_ids()
    if not ids:
        return redirect(url_for("admin.uncertain"))
    ctx = web_context()
    count = domain.accept(ctx.engine, ids, now=ctx.clock.now())
    flash(f"Marked {count} uncertain deliveries sent.{_missing(ids, count)}")
    return redirect(url_for("admin.uncertain"))


def _chosen_ids() -> list[int]:
    """The delivery ids the form names (400 when malformed); flashes a hint when it names none."""
    raw = request.form.getlist("id")
    if len(raw) > MAX_CHOSEN or not all(r.isascii() and r.isdigit() and len(r) <= 18 for r in raw):
        abort(400)
    ids = sorted({int(r) for r in raw})
    if not ids:
        flash("Tick at least one delivery.")
    return ids


def _missing(ids: list[int], count: int) -> str:
    if count >= len(ids):
        return ""
    return f" {len(ids) - count} of the chosen were not uncertain any more (or their run was cancelled)."


@bp.get("/webhooks")
def webhook_requests():
    """The webhook log, newest first, filtered by provider and status, keyset-paged; refusals of the last 24 h."""
    ctx = web_context()
    session = db_session()
    provider = request.args.get("provider", "")
    status = request.args.get("status", "")
    if (provider and provider not in webhooks.BUILDERS) or (status and status not in webhook_log.STATUSES):
        abort(400)
    before = _int_arg("before")
    rows, next_before = webhook_log.log_page(session, provider=provider, status=status, before=before,
                                             limit=WEBHOOKS_PER_PAGE)
    refused = webhook_log.refusals_since(session, ctx.clock.now() - REFUSALS_WINDOW)
    args = {k: v for k, v in (("provider", provider), ("status", status)) if v}
    return render_template("admin/webhooks.html", rows=rows, next_before=next_before, first_page=before is None,
                           providers=sorted(webhooks.BUILDERS), statuses=webhook_log.STATUSES, provider=provider,
                           status=status, args=args, refused=refused)
