"""Admin contest pages: entries and referrals (real addresses), the commitment, the draw's audit data, winners."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from sqlalchemy import func
from sqlmodel import select

from .. import contests
from ..campaigns import campaign_files, load_campaign, load_campaign_id
from ..db import session_scope
from ..errors import InvalidFile, NotFound
from ..models import Contact, ContestEntry
from . import auth
from .admin import bp
from .context import db_session, web_context

CONTEST_KIND = "contest"


@bp.get("/contests")
def contests_page():
    """Every contest campaign with its entries and whether it was drawn."""
    ctx = web_context()
    session = db_session()
    rows = []
    for path in campaign_files(ctx.settings.campaigns_dir):
        try:
            campaign = load_campaign(path, settings=ctx.settings, segment_names=None, today=None)
        except InvalidFile:
            continue  # the campaigns page lists invalid files with their problems
        if campaign.kind_name != CONTEST_KIND:
            continue
        row = contests.get_contest(session, campaign.id)
        entries = session.exec(select(func.count()).select_from(ContestEntry)
                               .where(ContestEntry.campaign_id == campaign.id)).one()
        rows.append((campaign, row, entries))
    return render_template("admin/contests.html", rows=rows)


@bp.get("/contests/<campaign_id>")
def contest_detail(campaign_id: str):
    """One contest: window, commitment, entries with referrals, and once drawn the seed, digest, verification, winners."""
    ctx = web_context()
    session = db_session()
    campaign = _contest_campaign(session, campaign_id)
    rules = contests.ContestRules.from_section(campaign.section, tz=ctx.settings.tz)
    row = contests.get_contest(session, campaign_id)
    document = contests.published_document(session, campaign_id, rules=rules) if row else None
    found = contests.entrants(session, campaign_id, bonus_entries_per_referral=rules.bonus_entries_per_referral)
    # Who referred whom, with real addresses: admins may see them (the public list is masked).
    referrer = {cid: email for cid, email in session.exec(
        select(ContestEntry.contact_id, Contact.email).join(Contact, Contact.id == ContestEntry.referred_by)
        .where(ContestEntry.campaign_id == campaign_id)).all()}
    verification = contests.verify_document(document) if row and row.drawn_at else None
    by_entry = {e.entry_id: e for e in found}
    winners = [(w, by_entry.get(w["entry_id"])) for w in (row.winners if row and row.drawn_at else [])]
    now = ctx.clock.now()
    return render_template("admin/contest_detail.html", campaign=campaign, rules=rules, row=row, document=document,
                           entrants=found, referrer=referrer, verification=verification, winners=winners,
                           state=contests.window_state(row, rules, now), algorithm=contests.ALGORITHM)


def _contest_campaign(session, campaign_id: str):
    """The contest as last sent (its stored file) or, before its invitation went out, its file as it is now."""
    ctx = web_context()
    try:
        return contests.stored_campaign(session, campaign_id, settings=ctx.settings)
    except InvalidFile:
        abort(404)
    except NotFound:
        pass
    # Never sent: no stored copy yet, so the file decides.
    campaign = load_campaign_id(campaign_id, settings=ctx.settings, kind=CONTEST_KIND)
    if campaign is None:
        abort(404)
    return campaign


@bp.post("/contests/<campaign_id>/draw")
@auth.require_role("admin")
def draw_contest(campaign_id: str):
    """Draw the winners now and queue their mail; refused (with the reason) before entries close or when drawn."""
    ctx = web_context()
    try:
        with session_scope(ctx.engine) as session:
            outcome = contests.draw_contest(session, campaign_id, settings=ctx.settings, now=ctx.clock.now())
    except contests.DrawRefused as exc:
        flash(f"Not drawn: {exc}")
    except NotFound:
        abort(404)
    else:
        mail = f" Winners' mail: run #{outcome.run_id}." if outcome.run_id else ""
        flash(f"Drawn: {len(outcome.result.winners)} winner(s) from {len(outcome.result.entrants)} entries.{mail}")
    return redirect(url_for("admin.contest_detail", campaign_id=campaign_id))
