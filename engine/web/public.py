"""Pages a recipient reaches from a mail: unsubscribe (with RFC 8058 one-click), view in browser, survey answers.

One-click design: the List-Unsubscribe URL is `/u/<token>` itself. A POST to it whose form body
is exactly `List-Unsubscribe=One-Click` is the mailbox provider acting for the recipient; it
carries no cookies, so it is exempt from CSRF and answered 200 text/plain with no redirect. The
signed, purpose-bound token is what authorises it. Every other POST is the browser form and must
carry a valid CSRF token.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request

from .. import surveys
from ..db import session_scope
from ..errors import NotFound
from ..models import Contact, Delivery, SuppressionReason
from ..suppression import unsubscribe as unsubscribe_delivery
from .context import db_session, web_context
from .errors import error_page
from .i18n import page_language, preference_labels, unsubscribe_labels
from .surveys import LABELS, shown_question

bp = Blueprint("public", __name__)

#: Pages whose HTML is the mail itself: no scripts, no forms, no plugins; styles and images as mails use them.
VIEW_CSP = (
    "default-src 'none'; img-src https: http: data: cid:; style-src 'unsafe-inline'; font-src https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
)


@bp.route("/u/", defaults={"token": ""}, methods=["GET", "POST"])
@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """GET: ask to confirm. POST: the confirm form (CSRF) or an RFC 8058 one-click request (no CSRF)."""
    delivery_id = web_context().signer.unsign("unsubscribe", token)
    session = db_session()
    delivery, contact = _load(session, delivery_id)
    lang = page_language(contact)
    view = dict(email=delivery.email, contact=contact, sender=web_context().settings.sender, token=token, lang=lang,
                t=unsubscribe_labels(lang), preferences_token=web_context().signer.sign("preferences", delivery_id))
    if contact is not None and contact.erased_at is not None:
        # Erased: already suppressed for good, and the page must not show the placeholder address.
        if is_one_click(request):
            return Response("You are unsubscribed.\n", status=200, mimetype="text/plain")
        return render_template("public/erased.html", lang=lang, t=preference_labels(lang),
                               sender=web_context().settings.sender)
    if request.method != "POST":  # GET and HEAD (which Flask routes here) never change state
        return render_template("public/unsubscribe.html", **view)
    one_click = is_one_click(request)
    if not one_click:
        # Exempted from the blanket check in create_app so the one-click body can be told apart.
        current_app.extensions["csrf"].protect()
    unsubscribe_delivery(session, delivery_id=delivery_id, reason=SuppressionReason.unsubscribe,
                         clock=web_context().clock)
    session.commit()
    if one_click:
        return Response("You are unsubscribed.\n", status=200, mimetype="text/plain")
    return render_template("public/unsubscribed.html", **view)


@bp.get("/v/", defaults={"token": ""})
@bp.get("/v/<token>")
def view_in_browser(token: str):
    """The mail as HTML under a strict CSP, or a friendly page while no renderer is configured."""
    ctx = web_context()
    delivery_id = ctx.signer.unsign("view", token)
    session = db_session()
    _load(session, delivery_id)
    if ctx.view_renderer is None:
        return render_template("public/not_available.html"), 404
    html = ctx.view_renderer(session, delivery_id)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.get("/s/<token>/<question>/<value>")
def survey_answer(token: str, question: str, value: str):
    """A one-click answer from a survey mail: recorded at once (changeable until the survey is submitted)."""
    ctx = web_context()
    delivery_id = ctx.signer.unsign("survey", token)
    # This GET writes, so it takes a writing session rather than the request's read-only one.
    with session_scope(ctx.engine) as session:
        _, contact = _load(session, delivery_id)
        lang = page_language(contact)
        view = dict(lang=lang, t=LABELS[lang], sender=ctx.settings.sender, token=token)
        try:
            campaign = surveys.survey_for_delivery(session, delivery_id=delivery_id, settings=ctx.settings)
        except surveys.SurveyError:
            # Not a survey invitation, or its campaign file can no longer be read: nothing to answer.
            return error_page(404, "This link does not lead to a survey (any more).", title="Survey not found")
        try:
            state = surveys.record_answer(session, survey=campaign.section, delivery_id=delivery_id,
                                          question=question, value=value, now=ctx.clock.now())
        except surveys.InvalidAnswer as exc:
            return error_page(400, str(exc), title="This answer is not one we can take")
        except surveys.SurveyClosed:
            return render_template("public/survey_answer.html", closed=True, **view), 200
        asked = shown_question(surveys.find_question(campaign.section, question), lang)
        answer = state.answers.get(question)
        if asked.type == "choice":
            answer = dict(asked.choices).get(surveys.option_slug(str(answer)), answer)
    return render_template("public/survey_answer.html", closed=False, question=asked, answer=answer, **view)


def is_one_click(req) -> bool:
    """True for an RFC 8058 one-click POST: a form body (urlencoded or multipart) of List-Unsubscribe=One-Click."""
    if req.method != "POST" or req.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    return req.form.get("List-Unsubscribe", "").strip() == "One-Click"


def _load(session, delivery_id: int) -> tuple[Delivery, Contact | None]:
    delivery = session.get(Delivery, delivery_id)  # TokenSigner already refused ids no column can hold
    if delivery is None:
        raise NotFound("this mail no longer exists")
    return delivery, session.get(Contact, delivery.contact_id)
