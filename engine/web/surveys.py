"""The survey page of one invitation: every question on one page, saved together, sent once.

`GET /s/<token>` shows all questions in the contact's language, prefilled with what is already
stored (the one-click answer from the mail among them). `POST /s/<token>` is the CSRF-protected
form: every answer is validated first and only then written, in one transaction, so a form with
one bad value changes nothing. "Save" keeps the response open; "Send" submits it, after which
the page shows the answers read-only. One response per invitation (delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from .. import surveys
from ..errors import NotFound
from ..models import Contact, Delivery
from .context import db_session, web_context
from .errors import error_page

bp = Blueprint("surveys", __name__)

#: Page labels; questions and options come from the campaign file (text_nl / options_nl).
LABELS = {
    "en": {
        "title": "Survey", "intro": "A few questions about your order. Answer what you like; you can save and "
                                    "come back until you send your answers.",
        "save": "Save answers", "send": "Send", "saved": "Your answers are saved. Press \u201cSend\u201d when you "
                                                           "are done.",
        "nps_low": "Not at all likely", "nps_high": "Extremely likely", "rating_low": "Poor", "rating_high": "Excellent",
        "errors": "Some answers could not be saved; nothing was changed. Please check the marked questions.",
        "err_scale": "Choose a number from {lo} to {hi}.", "err_choice": "Choose one of the options.",
        "err_text": "Please keep this under {max} characters.", "err_empty": "Answer at least one question first.",
        "submitted_title": "You already sent your answers", "submitted": "Thank you! Your survey was sent, so the "
                                                                         "answers below can no longer change.",
        "your_answers": "Your answers", "no_answer": "not answered", "thanks_title": "Thank you",
        "optional": "optional",
        "answer_saved": "Thank you — your answer is saved",
        "answer_wrong": "Clicked the wrong one? Open the link with the answer you meant; it replaces this one.",
        "answer_others": "Answer the other questions",
    },
    "nl": {
        "title": "Enquête", "intro": "Een paar vragen over je bestelling. Beantwoord wat je wilt; je kunt tussendoor "
                                     "opslaan en terugkomen tot je je antwoorden verstuurt.",
        "save": "Antwoorden opslaan", "send": "Versturen",
        "saved": "Je antwoorden zijn opgeslagen. Druk op \u201cVersturen\u201d als je klaar bent.",
        "nps_low": "Zeer onwaarschijnlijk", "nps_high": "Zeer waarschijnlijk", "rating_low": "Slecht",
        "rating_high": "Uitstekend",
        "errors": "Sommige antwoorden konden niet worden opgeslagen; er is niets gewijzigd. Kijk de gemarkeerde "
                  "vragen na.",
        "err_scale": "Kies een getal van {lo} tot {hi}.", "err_choice": "Kies een van de opties.",
        "err_text": "Houd dit korter dan {max} tekens.", "err_empty": "Beantwoord eerst minstens één vraag.",
        "submitted_title": "Je hebt je antwoorden al verstuurd", "submitted": "Bedankt! Je enquête is verstuurd, "
                                                                             "dus de antwoorden hieronder kunnen niet "
                                                                             "meer veranderen.",
        "your_answers": "Je antwoorden", "no_answer": "niet beantwoord", "thanks_title": "Bedankt",
        "optional": "optioneel",
        "answer_saved": "Bedankt — je antwoord is opgeslagen",
        "answer_wrong": "Verkeerd getikt? Open de link met het antwoord dat je bedoelde; die vervangt dit antwoord.",
        "answer_others": "Beantwoord de andere vragen",
    },
}


@dataclass(frozen=True)
class Shown:
    """One question as the page shows it, in the contact's language."""

    key: str
    type: str
    text: str
    choices: list[tuple[str, str]]  # (form value, label)

    @property
    def scale(self) -> list[str]:
        return [str(v) for v in surveys.SCALES.get(self.type, ())]


@bp.route("/s/<token>", methods=["GET", "POST"])
def page(token: str):
    """GET: the form (or the read-only answers once sent). POST: save all answers; "Send" also submits."""
    ctx = web_context()
    delivery_id = ctx.signer.unsign("survey", token)  # BadToken: the friendly 400 page
    session = db_session()
    campaign, lang = _load(session, delivery_id)
    if campaign is None:
        return error_page(404, "This link does not lead to a survey (any more).", title="Survey not found")
    section = campaign.section
    labels = LABELS[lang]
    questions = [shown_question(q, lang) for q in section.questions]
    state = surveys.response_state(session, delivery_id=delivery_id)
    stored = _form_values(section, state.answers if state else {})
    view = dict(token=token, lang=lang, t=labels, questions=questions, sender=ctx.settings.sender,
                thank_you=_thank_you(section, lang))

    if state is not None and state.submitted:
        # Sent already: a POST changes nothing and gets the same read-only page.
        return render_template("public/survey.html", submitted=True, values=stored,
                               shown=_shown_answers(questions, stored, labels), **view)
    if request.method != "POST":  # GET and HEAD (which Flask routes here) never change state
        return render_template("public/survey.html", submitted=False, values=stored, errors={},
                               saved=request.args.get("saved") == "1", **view)

    sending = request.form.get("action") == "send"
    values, errors, parsed = _validate(section, request.form, stored, labels)
    if not errors and sending and not parsed and not (state and state.answers):
        errors["_form"] = labels["err_empty"]
    if errors:
        return render_template("public/survey.html", submitted=False, values=values, errors=errors, saved=False,
                               **view), 400
    now = ctx.clock.now()
    try:
        for key, raw in parsed.items():
            surveys.record_answer(session, survey=section, delivery_id=delivery_id, question=key, value=raw, now=now)
        if sending:
            surveys.submit(session, delivery_id=delivery_id, now=now)
        session.commit()
    except surveys.SurveyClosed:
        # Sent from another tab between our read and write: nothing of this form is kept.
        session.rollback()
        state = surveys.response_state(session, delivery_id=delivery_id)
        stored = _form_values(section, state.answers if state else {})
        return render_template("public/survey.html", submitted=True, values=stored,
                               shown=_shown_answers(questions, stored, labels), **view)
    if sending:
        return render_template("public/survey_thanks.html", **view)
    return redirect(url_for("surveys.page", token=token, saved=1), code=303)


def _load(session, delivery_id: int):
    """(campaign, language) of the invitation; campaign None when the delivery is no survey invitation."""
    delivery = session.get(Delivery, delivery_id)  # TokenSigner already refused ids no column can hold
    if delivery is None:
        raise NotFound("this mail no longer exists")
    contact = session.get(Contact, delivery.contact_id) if delivery.contact_id is not None else None
    lang = "nl" if contact is not None and (contact.language or "").lower() == "nl" else "en"
    try:
        campaign = surveys.survey_for_delivery(session, delivery_id=delivery_id, settings=web_context().settings)
    except surveys.SurveyError:
        return None, lang
    return campaign, lang


def shown_question(question, lang: str) -> Shown:
    """A question as a contact reads it: text and option labels in their language."""
    nl = lang == "nl"
    text = question.text_nl if nl and question.text_nl else question.text
    choices: list[tuple[str, str]] = []
    if question.type == "choice":
        options = question.options or []
        labels = question.options_nl if nl and question.options_nl else options
        choices = [(surveys.option_slug(o), label) for o, label in zip(options, labels)]
    return Shown(key=question.key, type=question.type, text=text, choices=choices)


def _thank_you(section, lang: str) -> str:
    return section.thank_you_nl if lang == "nl" and section.thank_you_nl else section.thank_you


def _form_values(section, answers: dict[str, Any]) -> dict[str, str]:
    """Stored answers as the form's values: '8' for scales, the option slug for choices, the text."""
    values: dict[str, str] = {}
    for question in section.questions:
        answer = answers.get(question.key)
        if answer is None:
            continue
        if question.type in surveys.SCALES:
            values[question.key] = str(int(answer))
        elif question.type == "choice":
            values[question.key] = surveys.option_slug(str(answer))
        else:
            values[question.key] = str(answer)
    return values


def _validate(section, form, stored: dict[str, str], labels: dict[str, str]):
    """(values to show again, errors per question key, raw answers to record) without writing anything."""
    values = dict(stored)
    errors: dict[str, str] = {}
    parsed: dict[str, str] = {}
    for question in section.questions:
        raw = form.get(question.key)
        if raw is None:
            continue  # not in the form (a radio group nobody touched): leave it as it is
        values[question.key] = raw
        if question.type != "text" and not raw.strip():
            continue
        if question.type == "text" and not raw.strip() and question.key not in stored:
            continue  # an empty box that was empty before
        try:
            surveys.parse_answer(question, raw)
        except surveys.InvalidAnswer:
            errors[question.key] = _message(question, labels)
            continue
        if raw.strip() != stored.get(question.key, "").strip() or question.key not in stored:
            parsed[question.key] = raw
    if errors:
        errors["_form"] = labels["errors"]
    return values, errors, parsed


def _message(question, labels: dict[str, str]) -> str:
    if question.type in surveys.SCALES:
        scale = surveys.SCALES[question.type]
        return labels["err_scale"].format(lo=scale[0], hi=scale[-1])
    if question.type == "choice":
        return labels["err_choice"]
    return labels["err_text"].format(max=surveys.MAX_TEXT)


def _shown_answers(questions: list[Shown], values: dict[str, str], labels: dict[str, str]) -> list[tuple[str, str]]:
    """(question text, answer as the contact reads it) for the read-only page."""
    rows = []
    for q in questions:
        value = values.get(q.key)
        if value is None:
            rows.append((q.text, ""))
        elif q.type == "choice":
            rows.append((q.text, dict(q.choices).get(value, value)))
        else:
            rows.append((q.text, value))
    return rows
