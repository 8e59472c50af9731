"""Admin pages for contacts (search, one contact's whole story) and the suppression list.

The views sit on the admin blueprint: a login for every page, the admin role for every POST
(auth.protect), CSRF on every form (the app's CSRFProtect).

Suppress and lift, the rules:
- suppressing an address (reason manual) goes through suppression.unsubscribe(): the contact, if
  any, becomes unsubscribed and its queued deliveries are skipped;
- only manual and unsubscribe suppressions are lifted freely; hard_bounce and complaint need the
  confirm box (mailing them again hurts the sender's reputation); erased is never lifted (it is
  all that stops an erased person from being mailed again);
- lifting never resubscribes: the contact's status stays as it is. Consent is the contact's to
  give, through the preference centre, which a lifted block no longer stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from flask import Response, abort, flash, redirect, render_template, request, stream_with_context, url_for
from sqlalchemy import String, and_, case, delete, func, literal, or_, select
from sqlmodel import Session

from .. import loyalty, surveys
from ..csvexport import rows_as_csv
from ..db import read_only
from ..errors import ValuemailError
from ..ltv import contact_stats, stats_for_contacts
from ..models import (Contact, ContactTag, ContestEntry, Delivery, Order, PointsEntry, Run, Suppression,
                      SuppressionReason, SurveyAnswer, SurveyResponse)
from ..segments import audience_condition, load_segments
from ..suppression import ERASED_PREFIX, email_key, fingerprint, unsubscribe
from .admin import MAX_FILTER, _int_arg, bp
from .context import db_session, web_context

CONTACTS_PER_PAGE = 50
SUPPRESSIONS_PER_PAGE = 100
#: Latest rows of each list on the contact page; the page must stay small for a contact with years of mail.
LATEST = 50
CSV_BATCH = 1000
MAX_NOTE = 500
#: Lifted without further ado.
LIFTABLE = frozenset({SuppressionReason.manual.value, SuppressionReason.unsubscribe.value})
#: Lifted only with the confirm box ticked.
LIFTABLE_CONFIRMED = frozenset({SuppressionReason.hard_bounce.value, SuppressionReason.complaint.value})
REASONS = tuple(r.value for r in SuppressionReason)
SEGMENTS_FILE = "segments.toml"


# -- contacts -------------------------------------------------------------------------------------

@bp.get("/contacts")
def contacts():
    """Contacts by address prefix, else by name or address substring, in id order, keyset-paged."""
    session = db_session()
    q = request.args.get("q", "").strip()[:MAX_FILTER]
    after = _int_arg("after") or 0
    query = select(Contact).order_by(Contact.id).limit(CONTACTS_PER_PAGE + 1)
    if after:
        query = query.where(Contact.id > after)
    substring = request.args.get("sub") == "1"
    if q:
        key = email_key(q)
        # A range on the unique email_key index: a prefix search stays fast on millions of contacts.
        prefix = and_(Contact.email_key >= key, Contact.email_key < key + "\uffff")
        # Text without spaces may be the start of an address: the index answers that at once.
        if " " not in q and not substring:
            rows = list(session.execute(query.where(prefix)).scalars())
            # No address starts so: look in names and inside addresses (the pager keeps that mode).
            substring = not rows and not after
        else:
            substring = True
        if substring:
            # Bounded by the LIMIT, but no index helps a substring: it is the fallback, not the default.
            name = func.lower(Contact.first_name + " " + Contact.last_name)
            query = query.where(or_(prefix, Contact.email_key.contains(key, autoescape=True),
                                    name.contains(key, autoescape=True)))
            rows = list(session.execute(query).scalars())
    else:
        rows = list(session.execute(query).scalars())
    next_after = rows[CONTACTS_PER_PAGE - 1].id if len(rows) > CONTACTS_PER_PAGE else None
    rows = rows[:CONTACTS_PER_PAGE]
    return render_template("admin/contacts.html", contacts=rows, q=q, next_after=next_after,
                           first_page=not after, substring=substring)


@dataclass(frozen=True)
class SurveyAnswers:
    """One survey response with its answers, for the contact page."""

    campaign_id: str
    first_answered_at: datetime
    submitted_at: datetime | None
    answers: dict[str, Any]


@bp.get("/contacts/<int:contact_id>")
def contact_detail(contact_id: int):
    """One contact: data, LTV and factors, segment now, points, orders, deliveries, surveys, contests, suppression."""
    ctx = web_context()
    session = db_session()
    contact = session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    now = ctx.clock.now()
    tags = sorted(session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact_id)).scalars())
    stats = stats_for_contacts(session, [contact_id], now=now, settings=ctx.settings)[contact_id]
    segment, segment_error = _segment_now(session, contact_id, now)
    mailable = session.execute(select(Contact.id).where(Contact.id == contact_id, audience_condition())).first() is not None
    balance = loyalty.balance(session, [contact_id], at=now)[contact_id]
    points = session.execute(
        select(PointsEntry, Order.order_id).outerjoin(Order, Order.id == PointsEntry.order_id)
        .where(PointsEntry.contact_id == contact_id)
        .order_by(PointsEntry.occurred_at.desc(), PointsEntry.id.desc()).limit(LATEST)).all()
    orders = session.execute(select(Order).where(Order.contact_id == contact_id)
                             .order_by(Order.placed_at.desc(), Order.id.desc()).limit(LATEST)).scalars().all()
    deliveries = session.execute(
        select(Delivery, Run.campaign_id, Run.is_test).join(Run, Run.id == Delivery.run_id)
        .where(Delivery.contact_id == contact_id).order_by(Delivery.id.desc()).limit(LATEST)).all()
    entries = session.execute(select(ContestEntry).where(ContestEntry.contact_id == contact_id)
                              .order_by(ContestEntry.entered_at.desc())).scalars().all()
    referrals = dict(session.execute(select(ContestEntry.campaign_id, func.count())
                                     .where(ContestEntry.referred_by == contact_id)
                                     .group_by(ContestEntry.campaign_id)).all())
    return render_template(
        "admin/contact.html", contact=contact, tags=tags, attributes=_attributes(contact.attributes),
        stats=stats, segment=segment, segment_error=segment_error, mailable=mailable, balance=balance,
        points=points, orders=orders, deliveries=deliveries, surveys=_surveys(session, contact_id),
        entries=entries, referrals=referrals, suppression=_suppression_of(session, contact),
        currency=ctx.settings.ltv.default_currency, latest=LATEST,
    )


@bp.post("/contacts/<int:contact_id>/suppress")
def suppress_contact(contact_id: int):
    """Put the contact's address on the suppression list (reason manual, with a note)."""
    session = db_session()
    contact = session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    if contact.erased_at is not None:
        flash("This contact was erased; its address is suppressed for good.")
    else:
        _add(session, contact.email, request.form.get("note", ""))
    return redirect(url_for("admin.contact_detail", contact_id=contact_id))


@bp.post("/contacts/<int:contact_id>/unsuppress")
def unsuppress_contact(contact_id: int):
    """Lift the suppression of the contact's address, within the rules (see the module docstring)."""
    session = db_session()
    contact = session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    row = _suppression_of(session, contact)
    if row is None:
        flash("This address is not suppressed.")
    else:
        _lift(session, row)
    return redirect(url_for("admin.contact_detail", contact_id=contact_id))


def _segment_now(session: Session, contact_id: int, now: datetime) -> tuple[str | None, str | None]:
    """The first segment of segments.toml the contact matches now (mailable or not), or an error text."""
    settings = web_context().settings
    path = settings.campaigns_dir / SEGMENTS_FILE
    if not path.is_file():
        return None, f"no {SEGMENTS_FILE}"
    try:
        segments = load_segments(path)
    except ValuemailError as exc:
        return None, f"{SEGMENTS_FILE} has errors: {exc}"
    if not segments:
        return None, None
    # Per contact: the totals of this one contact, not a GROUP BY over every order.
    stats = contact_stats(now=now, settings=settings, contact_ids=[contact_id], per_contact=True)
    label = case(*[(segments[name].condition(stats), literal(name, String)) for name in segments])
    found = session.execute(select(label).select_from(Contact).join(stats, stats.c.contact_id == Contact.id)
                            .where(Contact.id == contact_id)).scalar()
    return found, None


def _attributes(attributes: dict | None) -> list[tuple[str, str]]:
    # Shown as text; the template escapes it, whatever an import put in.
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in sorted((attributes or {}).items(), key=lambda kv: str(kv[0]))]


def _surveys(session: Session, contact_id: int) -> list[SurveyAnswers]:
    responses = session.execute(surveys.real_responses(select(SurveyResponse)).where(SurveyResponse.contact_id == contact_id)
                                .order_by(SurveyResponse.first_answered_at.desc()).limit(LATEST)).scalars().all()
    answers: dict[int, dict[str, Any]] = {}
    if responses:
        for a in session.execute(select(SurveyAnswer).where(SurveyAnswer.response_id.in_([r.id for r in responses]))
                                 .order_by(SurveyAnswer.question)).scalars():
            answers.setdefault(a.response_id, {})[a.question] = a.value_number if a.value_number is not None else a.value_text
    return [SurveyAnswers(r.campaign_id, r.first_answered_at, r.submitted_at, answers.get(r.id, {})) for r in responses]


def _suppression_of(session: Session, contact: Contact) -> Suppression | None:
    # An erased contact's address is gone; its row on the list is a fingerprint nobody can recompute.
    if contact.erased_at is not None:
        return None
    return session.execute(select(Suppression).where(Suppression.email_key == email_key(contact.email))).scalars().first()


# -- the suppression list -------------------------------------------------------------------------

@bp.get("/suppressions")
def suppressions():
    """The suppression list, newest first, by reason and address prefix; keyset pages."""
    session = db_session()
    reason = request.args.get("reason", "")
    if reason and reason not in REASONS:
        abort(400)
    q = request.args.get("q", "").strip()[:MAX_FILTER]
    before = _int_arg("before")
    query = (select(Suppression, Contact.id).outerjoin(Contact, Contact.email_key == Suppression.email_key)
             .order_by(Suppression.id.desc()).limit(SUPPRESSIONS_PER_PAGE + 1))
    if reason:
        query = query.where(Suppression.reason == reason)
    if q:
        key = email_key(q)
        matches = and_(Suppression.email_key >= key, Suppression.email_key < key + "\uffff")
        if "@" in key:
            # An erased address is only on the list as its fingerprint: a full address still finds it.
            matches = or_(matches, Suppression.email_key == fingerprint(key))
        query = query.where(matches)
    if before is not None:
        query = query.where(Suppression.id < before)
    rows = session.execute(query).all()
    next_before = rows[SUPPRESSIONS_PER_PAGE - 1][0].id if len(rows) > SUPPRESSIONS_PER_PAGE else None
    args = {k: v for k, v in (("reason", reason), ("q", q)) if v}
    return render_template("admin/suppressions.html", rows=rows[:SUPPRESSIONS_PER_PAGE], reason=reason, q=q,
                           reasons=REASONS, next_before=next_before, first_page=before is None, args=args,
                           erased_prefix=ERASED_PREFIX, max_note=MAX_NOTE)


@bp.post("/suppressions")
def add_suppression():
    """Add an address to the list by hand (reason manual, with a note)."""
    email = request.form.get("email", "").strip()
    if not _plausible_address(email):
        flash("Enter an email address to suppress.")
    else:
        _add(db_session(), email, request.form.get("note", ""))
    return redirect(url_for("admin.suppressions"))


@bp.post("/suppressions/<int:suppression_id>/remove")
def remove_suppression(suppression_id: int):
    """Lift one suppression, within the rules (see the module docstring)."""
    session = db_session()
    row = session.get(Suppression, suppression_id)
    if row is None:
        abort(404)
    _lift(session, row)
    return redirect(url_for("admin.suppressions"))


@bp.get("/suppressions.csv")
def suppressions_csv():
    """Every suppression as CSV (erased rows carry the fingerprint, never an address), streamed."""
    engine = read_only(web_context().engine)

    def rows() -> Iterator[tuple]:
        # Its own session, read in id batches: the response outlives the view, and no batch holds the whole list.
        with Session(engine) as session:
            after = 0
            while True:
                batch = session.execute(select(Suppression.id, Suppression.email_key, Suppression.reason,
                                               Suppression.note, Suppression.created_at)
                                        .where(Suppression.id > after).order_by(Suppression.id)
                                        .limit(CSV_BATCH)).all()
                for id_, key, reason, note, created in batch:
                    yield id_, key, reason, note, created.isoformat() if created else ""
                if len(batch) < CSV_BATCH:
                    return
                after = batch[-1][0]

    body = rows_as_csv(("id", "address_or_fingerprint", "reason", "note", "created_at"), rows())
    return Response(stream_with_context(body), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="suppressions.csv"',
                             "X-Content-Type-Options": "nosniff"})


# -- shared actions -------------------------------------------------------------------------------

def _add(session: Session, email: str, note: str) -> None:
    key = email_key(email)
    if session.execute(select(Suppression.id).where(Suppression.email_key == fingerprint(key))).first() is not None:
        # Erased: the list must never hold the address itself again.
        flash("This address is already suppressed (erased).")
        return
    existing = session.execute(select(Suppression).where(Suppression.email_key == key)).scalars().first()
    result = unsubscribe(session, email=email, reason=SuppressionReason.manual, note=note.strip()[:MAX_NOTE],
                         clock=web_context().clock)
    session.commit()
    if existing is not None:
        flash(f"{key} was already suppressed ({existing.reason}); nothing changed.")
    else:
        skipped = f", {result.skipped_deliveries} queued deliveries skipped" if result.skipped_deliveries else ""
        flash(f"{key} is suppressed (manual){skipped}.")


def _lift(session: Session, row: Suppression) -> None:
    confirmed = request.form.get("confirm") == "yes"
    if row.reason in LIFTABLE or (row.reason in LIFTABLE_CONFIRMED and confirmed):
        label = "an erased address" if row.email_key.startswith(ERASED_PREFIX) else row.email_key
        session.execute(delete(Suppression).where(Suppression.id == row.id))
        session.commit()
        subscribed = session.execute(select(Contact.status).where(Contact.email_key == row.email_key)).scalar()
        tail = " The contact stays unsubscribed until they subscribe again." if subscribed == "unsubscribed" else ""
        flash(f"The {row.reason} suppression of {label} is lifted.{tail}")
    elif row.reason in LIFTABLE_CONFIRMED:
        flash(f"A {row.reason.replace('_', ' ')} suppression is lifted only with the confirm box ticked.")
    else:
        flash(f"An {row.reason} suppression can never be lifted.")


def _plausible_address(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and local and domain) and len(email) <= 320 and not any(c.isspace() for c in email)

