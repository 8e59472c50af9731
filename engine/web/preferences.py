"""The preference centre of one recipient, reached from the link every mail carries.

`/p/<token>` shows, in the contact's language: which kinds of mail they receive (and lets them
change that and their language), their points and orders, their surveys, and their data rights:
"download my data" (JSON) and "erase me". The signed, purpose-bound token is the only credential,
as for unsubscribing; every change is a CSRF-protected POST.

A test mail carries a real contact's data but went to the marketer, so its links act for the
contact holding the address the test went to (usually nobody), never for the contact it showed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlmodel import Session

from .. import loyalty, preferences, privacy, surveys
from ..campaigns.kinds import IMPLEMENTATIONS
from ..db import session_scope
from ..errors import NotFound
from ..models import Campaign, Contact, Delivery, Order, Run, Suppression, SurveyResponse
from ..rendering.strings import Strings
from ..suppression import email_key
from .context import db_session, web_context
from .errors import error_page
from .i18n import page_language, preference_labels

bp = Blueprint("preferences", __name__)

#: Order states in the order they happen; returned and cancelled end an order's progress.
ORDER_STEPS = ("placed", "paid", "shipped", "delivered")
#: How many points entries and orders the page lists (the JSON download has them all).
LISTED = 50


@dataclass(frozen=True)
class Subject:
    """Whose preferences a link opens: the delivery, the contact it acts for (None: nobody), a test mail or not."""

    delivery: Delivery
    contact: Contact | None
    test: bool


def subject_of(session: Session, delivery_id: int) -> Subject:
    """The contact a preference link acts for (see the module docstring about test mails)."""
    row = session.execute(select(Delivery, Run.is_test).join(Run, Run.id == Delivery.run_id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None:
        raise NotFound("this mail no longer exists")
    delivery, test = row
    if test:
        contact = session.execute(select(Contact).where(Contact.email_key == email_key(delivery.email))).scalars().first()
    else:
        contact = session.get(Contact, delivery.contact_id)
    return Subject(delivery=delivery, contact=contact, test=bool(test))


@bp.get("/p/", defaults={"token": ""})
@bp.get("/p/<token>")
def page(token: str):
    """The preference centre: subscriptions, language, points, orders, surveys, data rights."""
    ctx = web_context()
    session = db_session()
    subject = subject_of(session, ctx.signer.unsign("preferences", token))
    contact = subject.contact
    lang = page_language(contact)
    t = preference_labels(lang)
    common = dict(token=token, lang=lang, t=t, sender=ctx.settings.sender, test=subject.test,
                  email=subject.delivery.email)
    if contact is None:
        return render_template("public/preferences_nobody.html", **common)
    if contact.erased_at is not None:
        return render_template("public/erased.html", **common)
    now = ctx.clock.now()
    opted_out = preferences.opted_out_kinds(session, contact.id)
    statement = loyalty.statement(session, [contact.id], since=None, now=now, recent=LISTED)[contact.id]
    orders = session.execute(select(Order).where(Order.contact_id == contact.id)
                             .order_by(Order.placed_at.desc()).limit(LISTED)).scalars().all()
    suppression = session.execute(select(Suppression).where(
        Suppression.email_key == email_key(contact.email))).scalars().first()
    return render_template(
        "public/preferences.html", contact=contact, kinds=_kinds(session, opted_out, t), opted_out=opted_out,
        languages=_languages(contact, t), statement=statement, orders=orders, steps=ORDER_STEPS,
        surveys=_survey_history(session, contact.id, lang), saved=request.args.get("saved"),
        can_resubscribe=suppression is None or suppression.reason == "unsubscribe",
        unsubscribe_token=ctx.signer.sign("unsubscribe", subject.delivery.id), **common)


@bp.post("/p/<token>")
def save(token: str):
    """Store the kinds of mail wanted and the language (CSRF-checked by the app)."""
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        subject = subject_of(session, ctx.signer.unsign("preferences", token))
        contact = _living(subject)
        t = preference_labels(page_language(contact))
        known = {k for k, _, _ in _kinds(session, preferences.opted_out_kinds(session, contact.id), t)}
        wanted = [k for k in request.form.getlist("kind") if k in known]
        language = request.form.get("language") or None
        offered = {code for code, _ in _languages(contact, t)}
        try:
            preferences.save_choices(session, contact.id, kinds=known, wanted=wanted,
                                     language=language if language in offered else None,
                                     languages=offered, now=ctx.clock.now())
        except preferences.PreferenceRefused as exc:
            return error_page(400, str(exc), title=t["not_saved"])
    return redirect(url_for("preferences.page", token=token, saved="choices"), code=303)


@bp.post("/p/<token>/resubscribe")
def resubscribe(token: str):
    """Subscribe again after an unsubscribe (refused after a bounce, complaint or block)."""
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        subject = subject_of(session, ctx.signer.unsign("preferences", token))
        contact = _living(subject)
        try:
            preferences.resubscribe(session, contact.id, now=ctx.clock.now())
        except preferences.PreferenceRefused as exc:
            t = preference_labels(page_language(contact))
            return error_page(409, t["blocked"] if exc.reason == "blocked" else str(exc), title=t["not_saved"])
    return redirect(url_for("preferences.page", token=token, saved="resubscribed"), code=303)


@bp.get("/p/<token>/data.json")
def download(token: str):
    """Everything stored about the contact, as a JSON download."""
    ctx = web_context()
    session = db_session()
    subject = subject_of(session, ctx.signer.unsign("preferences", token))
    contact = _living(subject)
    document = privacy.export(session, contact.id, now=ctx.clock.now())
    response = Response(json.dumps(document, indent=2, ensure_ascii=False) + "\n", mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="my-data.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/p/<token>/erase", methods=["GET", "POST"])
def erase(token: str):
    """GET: explain what erasing does and ask to confirm. POST (CSRF): erase."""
    ctx = web_context()
    if request.method != "POST":  # GET and HEAD (which Flask routes here) never change state
        session = db_session()
        subject = subject_of(session, ctx.signer.unsign("preferences", token))
        contact = subject.contact
        lang = page_language(contact)
        common = dict(token=token, lang=lang, t=preference_labels(lang), sender=ctx.settings.sender,
                      test=subject.test, email=subject.delivery.email)
        if contact is None:
            return render_template("public/preferences_nobody.html", **common)
        if contact.erased_at is not None:
            return render_template("public/erased.html", **common)
        return render_template("public/erase.html", **common)
    with session_scope(ctx.engine) as session:
        subject = subject_of(session, ctx.signer.unsign("preferences", token))
        if subject.contact is None:
            raise NotFound("there is no contact with this address")
        lang = page_language(subject.contact)
        privacy.erase(session, subject.contact.id, now=ctx.clock.now())
    return render_template("public/erased.html", token=token, lang=lang, t=preference_labels(lang),
                           sender=ctx.settings.sender, test=subject.test, email="", just_erased=True)


def _living(subject: Subject) -> Contact:
    if subject.contact is None:
        raise NotFound("there is no contact with this address")
    if subject.contact.erased_at is not None:
        raise NotFound("this contact's data was erased")
    return subject.contact


def _kinds(session: Session, opted_out: frozenset[str], t: dict[str, str]) -> list[tuple[str, str, str]]:
    """(kind, label, description) of the kinds this sender mails, plus any the contact opted out of."""
    used = set(session.execute(select(Campaign.kind).distinct()).scalars()) | set(opted_out)
    kinds = [k for k in IMPLEMENTATIONS if k in used] or list(IMPLEMENTATIONS)
    return [(k, t.get(f"kind_{k}", k.replace("_", " ")), t.get(f"kind_{k}_about", "")) for k in kinds]


def _languages(contact: Contact, t: dict[str, str]) -> list[tuple[str, str]]:
    """(code, name) of the languages mails are written in, plus the contact's own if it is another."""
    codes = sorted(Strings(web_context().settings.templates_dir).languages())
    if contact.language and contact.language not in codes:
        codes.append(contact.language)
    return [(c, t.get(f"lang_{c}", c)) for c in codes]


def _survey_history(session: Session, contact_id: int, lang: str) -> list[dict]:
    """The contact's survey responses, newest first, with each question's text in their language."""
    rows = session.execute(
        surveys.real_responses(select(SurveyResponse, Campaign.name).join(Campaign, Campaign.id == SurveyResponse.campaign_id))
        .where(SurveyResponse.contact_id == contact_id)
        .order_by(SurveyResponse.first_answered_at.desc()).limit(LISTED)).all()
    history = []
    signer = web_context().signer
    for response, name in rows:
        state = surveys.response_state(session, delivery_id=response.delivery_id)
        answers = dict(state.answers) if state else {}
        texts: dict[str, str] = {}
        try:
            campaign = surveys.survey_for_delivery(session, delivery_id=response.delivery_id,
                                                   settings=web_context().settings)
            for q in campaign.section.questions:
                texts[q.key] = q.text_nl if lang == "nl" and q.text_nl else q.text
        except surveys.SurveyError:
            pass  # its campaign file is gone: the keys stand in for the questions
        history.append({
            "name": name, "answered_at": response.first_answered_at, "submitted_at": response.submitted_at,
            "answers": [(texts.get(k, k), _shown(v)) for k, v in answers.items()],
            "url": None if response.submitted_at else url_for("surveys.page", token=signer.sign("survey", response.delivery_id)),
        })
    return history


def _shown(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
