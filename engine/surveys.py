"""Post-purchase surveys: one-click answer links, answers stored per invitation, satisfaction per period.

One response per survey invitation (a delivery). A click on an answer link in the mail already
records that answer; the respondent may change answers (by clicking again or on the survey page)
until they submit. Satisfaction is measured per calendar month or quarter and compared with the
previous one, as seed 004 asks: NPS (promoters 9-10 minus detractors 0-6, in %) and the average
rating (1-5).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Protocol, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, delete, func, select, update

from .db import upsert_insert
from .errors import ValuemailError
from .models import Delivery, Order, Run, SurveyAnswer, SurveyResponse
from .tokens import TokenSigner
from .unsafe_chars import CONTROLS_BUT_TAB_AND_LINE_BREAKS, INVISIBLE

QUESTION_TYPES = ("nps", "rating", "choice", "text")
#: The values a scale question accepts; these and choice questions can be answered with one click.
SCALES = {"nps": tuple(range(0, 11)), "rating": tuple(range(1, 6))}
MAX_TEXT = 4000
PERIODS = ("month", "quarter")
# Controls but tab and line breaks, C1 controls, bidi embeddings/overrides/isolates and zero-width
# characters: nothing a customer means to type, and bidi tricks would reorder the text on the admin page.
_CONTROL = re.compile(f"[{CONTROLS_BUT_TAB_AND_LINE_BREAKS}{INVISIBLE}]")


class SurveyError(ValuemailError):
    """A survey answer or submission that cannot be accepted."""


class InvalidAnswer(SurveyError):
    """The question does not exist or the value is not one it accepts."""


class SurveyClosed(SurveyError):
    """The response was submitted: its answers can no longer change."""


class Question(Protocol):
    key: str
    type: str
    options: list[str] | None


class Survey(Protocol):
    questions: Sequence[Question]


# -- questions and links --------------------------------------------------------------------------

def option_slug(text: str) -> str:
    """The URL value of a choice option: lower-case ASCII letters and digits joined by '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def one_click_values(question: Question) -> list[str]:
    """The values a mail offers as links for `question` (none for a text question)."""
    if question.type in SCALES:
        return [str(v) for v in SCALES[question.type]]
    if question.type == "choice":
        return [option_slug(o) for o in question.options or ()]
    return []


def survey_url(signer: TokenSigner, base_url: str, delivery_id: int) -> str:
    """The survey page of one invitation."""
    return f"{base_url.rstrip('/')}/s/{signer.sign('survey', delivery_id)}"


def answer_links(signer: TokenSigner, base_url: str, delivery_id: int, question: Question) -> list[dict[str, str]]:
    """One link per possible answer: opening it records that answer for this invitation."""
    page = survey_url(signer, base_url, delivery_id)
    return [{"value": value, "url": f"{page}/{question.key}/{value}"} for value in one_click_values(question)]


def find_question(survey: Survey, key: str) -> Question:
    """The question `key` of `survey`, or InvalidAnswer."""
    for question in survey.questions:
        if question.key == key:
            return question
    raise InvalidAnswer(f"this survey has no question {key!r}")


def parse_answer(question: Question, raw: Any) -> tuple[float | None, str | None]:
    """(number, text) to store for `raw`, the value from a link or form; InvalidAnswer when it does not fit."""
    if question.type in SCALES:
        text = str(raw).strip()
        scale = SCALES[question.type]
        if not re.fullmatch(r"\d{1,2}", text) or int(text) not in scale:
            raise InvalidAnswer(f"answer {question.key!r} with a whole number from {scale[0]} to {scale[-1]}")
        return float(int(text)), None
    if question.type == "choice":
        wanted = str(raw).strip()
        for option in question.options or ():
            if wanted in (option_slug(option), option):
                return None, option
        raise InvalidAnswer(f"{wanted!r} is not one of the options of {question.key!r}")
    # Control characters are never meant (and PostgreSQL refuses NUL in text); line breaks and tabs stay.
    text = _CONTROL.sub("", str(raw)).strip()
    if len(text) > MAX_TEXT:
        raise InvalidAnswer(f"the answer to {question.key!r} is longer than {MAX_TEXT} characters")
    return None, text or None  # an emptied text box removes the answer


# -- recording ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResponseState:
    """One invitation's response as stored."""

    response_id: int
    delivery_id: int
    answers: dict[str, float | str]
    first_answered_at: datetime
    submitted_at: datetime | None
    changed: bool = False  # whether the call that returned this state changed anything

    @property
    def submitted(self) -> bool:
        return self.submitted_at is not None


def real_responses(query):
    """`query` over SurveyResponse narrowed to answers to real sends: a test mail's answers are the
    tester's, so they never show as the contact's (page, admin, data download) nor count in results."""
    return (query.join(Delivery, Delivery.id == SurveyResponse.delivery_id)
            .join(Run, and_(Run.id == Delivery.run_id, Run.is_test.is_(False))))


def record_answer(session, *, survey: Survey, delivery_id: int, question: str, value: Any,
                  now: datetime) -> ResponseState:
    """Store (or change) one answer of the invitation `delivery_id`; idempotent; SurveyClosed after submit."""
    asked = find_question(survey, question)
    number, text = parse_answer(asked, value)
    delivery = session.execute(select(Delivery.id, Delivery.contact_id, Delivery.data, Run.campaign_id)
                               .join(Run, Run.id == Delivery.run_id).where(Delivery.id == delivery_id)).first()
    if delivery is None:
        raise SurveyError("this survey invitation does not exist (any more)")
    after = number if number is not None else text
    if after is None and response_state(session, delivery_id=delivery_id) is None:
        raise InvalidAnswer(f"the answer to {question!r} is empty")
    order_pk = None
    order_id = (delivery.data or {}).get("order_id")
    if order_id:
        order_pk = session.execute(select(Order.id).where(Order.order_id == str(order_id))).scalar()
    # Two clicks at once both insert; the unique delivery_id keeps one response.
    session.execute(upsert_insert(session, SurveyResponse).values(
        delivery_id=delivery_id, campaign_id=delivery.campaign_id, contact_id=delivery.contact_id, order_id=order_pk,
        first_answered_at=now, updated_at=now,
    ).on_conflict_do_nothing(index_elements=["delivery_id"]))
    response_id = session.execute(select(SurveyResponse.id)
                                  .where(SurveyResponse.delivery_id == delivery_id)).scalar_one()
    before = _answers(session, response_id).get(question)
    if before != after:
        # The conditional update locks the response row, so a concurrent submit either comes first
        # (and this answer is refused) or waits for this one.
        still_open = session.execute(update(SurveyResponse).where(
            SurveyResponse.id == response_id, SurveyResponse.submitted_at.is_(None)).values(updated_at=now)).rowcount
        if not still_open:
            raise SurveyClosed("this survey was already submitted; thank you!")
        if after is None:
            session.execute(delete(SurveyAnswer).where(SurveyAnswer.response_id == response_id,
                                                       SurveyAnswer.question == question))
        else:
            statement = upsert_insert(session, SurveyAnswer).values(response_id=response_id, question=question,
                                                              value_number=number, value_text=text)
            session.execute(statement.on_conflict_do_update(
                index_elements=["response_id", "question"],
                set_={"value_number": statement.excluded.value_number, "value_text": statement.excluded.value_text}))
    state = response_state(session, delivery_id=delivery_id)
    if before == after and state.submitted:
        raise SurveyClosed("this survey was already submitted; thank you!")
    return ResponseState(**{**state.__dict__, "changed": before != after})


def submit(session, *, delivery_id: int, now: datetime) -> ResponseState:
    """Close the response of `delivery_id` (its answers are final); submitting twice keeps the first time."""
    closed = session.execute(update(SurveyResponse).where(
        SurveyResponse.delivery_id == delivery_id, SurveyResponse.submitted_at.is_(None),
    ).values(submitted_at=now, updated_at=now)).rowcount
    state = response_state(session, delivery_id=delivery_id)
    if state is None:
        raise SurveyError("nothing to submit: no question was answered yet")
    return ResponseState(**{**state.__dict__, "changed": bool(closed)})


def response_state(session, *, delivery_id: int) -> ResponseState | None:
    """The stored response of `delivery_id` with its answers, or None when nothing was answered."""
    row = session.execute(select(SurveyResponse.id, SurveyResponse.first_answered_at, SurveyResponse.submitted_at)
                          .where(SurveyResponse.delivery_id == delivery_id)).first()
    if row is None:
        return None
    return ResponseState(response_id=row.id, delivery_id=delivery_id, answers=_answers(session, row.id),
                         first_answered_at=row.first_answered_at, submitted_at=row.submitted_at)


def _answers(session, response_id: int) -> dict[str, float | str]:
    rows = session.execute(select(SurveyAnswer.question, SurveyAnswer.value_number, SurveyAnswer.value_text)
                           .where(SurveyAnswer.response_id == response_id)).all()
    return {q: (n if n is not None else t) for q, n, t in rows}


def survey_for_delivery(session, *, delivery_id: int, settings):
    """The campaign (as it was sent) whose survey `delivery_id` invites to; SurveyError when it is none."""
    from .campaigns import load_stored  # the campaign package builds on this module's kinds
    from .errors import InvalidFile

    row = session.execute(select(Run.definition).join(Delivery, Delivery.run_id == Run.id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None:
        raise SurveyError("this survey invitation does not exist (any more)")
    try:
        campaign = load_stored(row.definition or {}, settings=settings)
    except InvalidFile as exc:
        raise SurveyError(f"the survey of this invitation can no longer be read: {exc}") from exc
    if campaign.kind_name != "post_purchase_survey":
        raise SurveyError("this link does not belong to a survey")
    return campaign


# -- satisfaction per period ----------------------------------------------------------------------

@dataclass(frozen=True)
class PeriodScore:
    """Satisfaction in one calendar period, and how it moved since the period before."""

    label: str  # 2027-03 or 2027-Q1
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    responses: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    average_rating: float | None = None
    ratings: int = 0
    previous: "PeriodScore | None" = field(default=None, repr=False)

    @property
    def nps_answers(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        """Promoters minus detractors as a percentage of NPS answers, one decimal (None without answers)."""
        n = self.nps_answers
        return round((self.promoters - self.detractors) * 100 / n, 1) if n else None

    @property
    def delta_nps(self) -> float | None:
        """NPS change since the previous period, in points (None when either lacks answers)."""
        if self.previous is None or self.nps is None or self.previous.nps is None:
            return None
        return round(self.nps - self.previous.nps, 1)

    @property
    def delta_rating(self) -> float | None:
        if self.previous is None or self.average_rating is None or self.previous.average_rating is None:
            return None
        return round(self.average_rating - self.previous.average_rating, 2)

    @property
    def delta_responses(self) -> int | None:
        return None if self.previous is None else self.responses - self.previous.responses

    def as_json(self) -> dict[str, Any]:
        """The period's figures and their change since the period before, JSON-ready."""
        return {
            "period": self.label, "start": self.start.isoformat(), "end": self.end.isoformat(),
            "responses": self.responses, "nps": self.nps, "promoters": self.promoters, "passives": self.passives,
            "detractors": self.detractors, "average_rating": self.average_rating, "ratings": self.ratings,
            "change": {"responses": self.delta_responses, "nps": self.delta_nps, "average_rating": self.delta_rating},
        }


def period_bounds(now: datetime, *, period: str, count: int, tz: ZoneInfo | timezone = timezone.utc) -> list[datetime]:
    """count + 1 UTC instants: the starts of the `count` periods up to the one holding `now`, then its end."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period!r})")
    months = 1 if period == "month" else 3
    local = now.astimezone(tz)
    index = local.year * 12 + (local.month - 1) // months * months  # months since year 0 of the current start
    starts = [index - k * months for k in range(count - 1, -2, -1)]
    return [datetime(m // 12, m % 12 + 1, 1, tzinfo=tz).astimezone(timezone.utc) for m in starts]


def _label(start: datetime, period: str, tz) -> str:
    local = start.astimezone(tz)
    return f"{local:%Y-%m}" if period == "month" else f"{local.year}-Q{(local.month - 1) // 3 + 1}"


def satisfaction(session, campaign_id: str, *, survey: Survey, now: datetime, period: str = "month", periods: int = 2,
                 tz: ZoneInfo | timezone = timezone.utc) -> list[PeriodScore]:
    """NPS and average rating for the last `periods` calendar periods (oldest first; the last holds `now`).

    A response counts in the period of its first answer; test sends do not count. NPS is taken
    over the survey's nps questions, the average over its rating questions.
    """
    if periods < 1:
        raise ValueError("periods must be at least 1")
    bounds = period_bounds(now, period=period, count=periods + 1, tz=tz)  # one more, for the first delta
    nps_keys = [q.key for q in survey.questions if q.type == "nps"]
    rating_keys = [q.key for q in survey.questions if q.type == "rating"]
    answered = SurveyResponse.first_answered_at
    bucket = case(*[(answered < end, i) for i, end in enumerate(bounds[1:])]).label("bucket")
    is_nps = SurveyAnswer.question.in_(nps_keys)
    value = SurveyAnswer.value_number
    rows = session.execute(
        select(bucket, func.count(func.distinct(SurveyResponse.id)),
               func.sum(case((and_(is_nps, value >= 9), 1), else_=0)),
               func.sum(case((and_(is_nps, value >= 7, value < 9), 1), else_=0)),
               func.sum(case((and_(is_nps, value <= 6), 1), else_=0)),
               func.avg(case((SurveyAnswer.question.in_(rating_keys), value))),
               func.count(case((SurveyAnswer.question.in_(rating_keys), value))))
        .join(Delivery, Delivery.id == SurveyResponse.delivery_id)
        .join(Run, Run.id == Delivery.run_id)
        .outerjoin(SurveyAnswer, SurveyAnswer.response_id == SurveyResponse.id)
        .where(SurveyResponse.campaign_id == campaign_id, Run.is_test.is_(False),
               answered >= bounds[0], answered < bounds[-1])
        .group_by(bucket)
    ).all()
    found = {int(r[0]): r for r in rows}
    scores: list[PeriodScore] = []
    previous = None
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        r = found.get(i)
        score = PeriodScore(
            label=_label(start, period, tz), start=start, end=end, previous=previous,
            **({} if r is None else {"responses": int(r[1]), "promoters": int(r[2] or 0), "passives": int(r[3] or 0),
                                     "detractors": int(r[4] or 0), "ratings": int(r[6] or 0),
                                     "average_rating": round(float(r[5]), 2) if r[5] is not None else None}))
        scores.append(score)
        previous = score
    return scores[1:]


def nps_of(values: Iterable[int]) -> float | None:
    """NPS of plain 0-10 scores (promoters 9-10 minus detractors 0-6, in %, one decimal)."""
    values = list(values)
    if not values:
        return None
    return round((sum(v >= 9 for v in values) - sum(v <= 6 for v in values)) * 100 / len(values), 1)
