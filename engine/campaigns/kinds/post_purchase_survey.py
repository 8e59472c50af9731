"""post_purchase_survey: ask for an opinion a while after an order; the first question is answered in the mail."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import String, and_, literal, or_, select

from ... import surveys
from ...models import VOID_ORDER_STATUSES, Order, OrderStatus, TriggerSend
from ...tokens import TokenSigner
from .base import BaseKind, Due, KindContext, Recipient, SectionModel

#: Order statuses in the order an order goes through them; `min_order_status` is one of these.
ORDER_PROGRESS = (OrderStatus.placed.value, OrderStatus.paid.value, OrderStatus.shipped.value,
                  OrderStatus.delivered.value)
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_CHUNK = 500
_SAMPLE_BASE = "https://example.com"
_SAMPLE_ORDER = {"order_id": "SAMPLE-1042", "placed_at": "2027-02-22T10:15:00+00:00", "total": "59.90",
                 "currency": "EUR", "sample": True}
SKIP_VOID = "order returned or cancelled"
SKIP_GONE = "order no longer exists"


def _located(loc: tuple, message: str, value: Any) -> ValidationError:
    """A validation error at `loc` inside the list being validated, so the message names the right line."""
    return ValidationError.from_exception_data("survey", [InitErrorDetails(
        type=PydanticCustomError("survey_question", message), loc=loc, input=value)])


class SurveyQuestion(SectionModel):
    """One question: nps (0-10), rating (1-5), choice (one of `options`) or free text."""

    key: str
    type: Literal["nps", "rating", "choice", "text"]
    text: str
    text_nl: Optional[str] = None
    options: Optional[list[str]] = Field(default=None, validate_default=True)
    options_nl: Optional[list[str]] = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError(f"a question key is lower-case letters, digits and _ (got {value!r})")
        return value

    @field_validator("text", "text_nl")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        kind = info.data.get("type")
        if kind in surveys.SCALES and value is not None:
            scale = surveys.SCALES[kind]
            raise ValueError(f"a{'n' if kind == 'nps' else ''} {kind} question has the fixed scale "
                             f"{scale[0]}-{scale[-1]} and takes no options")
        if kind == "text" and value is not None:
            raise ValueError("a text question takes no options")
        if kind == "choice":
            if value is None or len(value) < 2:
                raise ValueError("a choice question needs at least two options")
            if len(value) > 10:
                raise ValueError("a choice question has at most ten options")
            slugs = [surveys.option_slug(o) for o in value]
            if not all(slugs):
                raise ValueError("every option needs letters or digits")
            if len(set(slugs)) != len(slugs):
                raise ValueError("two options are the same (ignoring case and punctuation)")
        return value

    @field_validator("options_nl")
    @classmethod
    def _options_nl(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        options = info.data.get("options")
        if value is not None and (options is None or len(value) != len(options)):
            raise ValueError("give options_nl only beside options, one translation per option")
        return value


class Survey(SectionModel):
    """The `[survey]` section of a post_purchase_survey campaign."""

    once: Literal["order", "contact_period"] = "order"
    period_days: Optional[int] = Field(default=None, ge=1, le=3650, validate_default=True)
    min_order_status: Optional[Literal["placed", "paid", "shipped", "delivered"]] = None
    wait_days: int = Field(default=14, ge=0, le=180)  # how long after the delay an order may reach min_order_status
    questions: list[SurveyQuestion] = Field(min_length=1, max_length=20)
    thank_you: str = Field(min_length=1)
    thank_you_nl: Optional[str] = None

    @field_validator("period_days")
    @classmethod
    def _period(cls, value: int | None, info: ValidationInfo) -> int | None:
        once = info.data.get("once")
        if once == "contact_period" and value is None:
            raise ValueError('once = "contact_period" needs period_days, e.g. period_days = 90')
        if once == "order" and value is not None:
            raise ValueError('period_days only applies with once = "contact_period"')
        return value

    @field_validator("questions")
    @classmethod
    def _questions(cls, questions: list[SurveyQuestion]) -> list[SurveyQuestion]:
        if questions[0].type == "text":
            raise _located((0, "type"), "the first question is answered with one click in the mail, so it cannot "
                                        "be a text question (put nps, rating or choice first)", "text")
        seen: set[str] = set()
        for i, question in enumerate(questions):
            if question.key in seen:
                raise _located((i, "key"), f"question key {question.key!r} is used twice", question.key)
            seen.add(question.key)
        return questions


class PostPurchaseSurvey(BaseKind):
    """Surveys after an order: once per order or per contact per period, NPS/rating/choice/text questions."""

    name: ClassVar[str] = "post_purchase_survey"
    section_key: ClassVar[str] = "survey"
    section_model: ClassVar[type[SectionModel]] = Survey

    def check_schedule(self, section: Survey, schedule) -> str | None:
        if schedule is None or schedule.trigger != "order":
            return 'a post-purchase survey runs on { trigger = "order", delay = "7d" }'
        return None

    @staticmethod
    def delay(ctx: KindContext) -> timedelta:
        """The time between an order and its survey: the campaign schedule's delay."""
        if ctx.schedule is None:
            raise ValueError("post_purchase_survey.due needs the campaign's schedule in its KindContext")
        return ctx.schedule.delay or timedelta(0)

    # -- scheduling -------------------------------------------------------------------------------

    def due(self, section: Survey, session, ctx: KindContext, *, since: datetime) -> list[Due]:
        """Orders whose survey fell due in (since, now] and that were not surveyed yet (per `once`)."""
        delay = self.delay(ctx)
        candidates = self._candidates(section, session, ctx, since=since, delay=delay)
        if section.once == "order":
            dues = [Due(contact_id=o.contact_id, key=f"order:{o.order_id}", due_at=at, data=_order_data(o))
                    for o, at in candidates]
        else:
            dues = self._once_per_period(section, session, ctx, candidates)
        return sorted(dues, key=lambda d: (d.due_at, d.key))

    def _candidates(self, section: Survey, session, ctx: KindContext, *, since: datetime, delay: timedelta):
        """(order row, due instant) for orders due in (since, now]; in `once = "order"` mode, unsent ones only."""
        now = ctx.now
        columns = (Order.id, Order.order_id, Order.contact_id, Order.placed_at, Order.total_cents, Order.currency,
                   Order.status, Order.updated_at)
        query = select(*columns)
        if section.once == "order":
            key = literal("order:", String) + Order.order_id
            query = query.outerjoin(TriggerSend, and_(TriggerSend.campaign_id == ctx.campaign_id,
                                                      TriggerSend.trigger_key == key)).where(TriggerSend.id.is_(None))
        on_time = and_(Order.placed_at > since - delay, Order.placed_at <= now - delay)
        if section.min_order_status is None:
            rows = session.execute(query.where(Order.status.not_in(VOID_ORDER_STATUSES), on_time)).all()
            return [(row, row.placed_at + delay) for row in rows]
        # With a minimum status an order is due once it also got there (its last update, at the latest);
        # one that gets there more than wait_days after its normal time is not surveyed any more.
        wait = timedelta(days=section.wait_days)
        allowed = ORDER_PROGRESS[ORDER_PROGRESS.index(section.min_order_status):]
        late = and_(Order.updated_at > since, Order.updated_at <= now, Order.placed_at > since - delay - wait,
                    Order.placed_at <= now - delay)
        rows = session.execute(query.where(Order.status.in_(allowed), or_(on_time, late))).all()
        found = []
        for row in rows:
            at = max(row.placed_at + delay, row.updated_at)
            if since < at <= now and at <= row.placed_at + delay + wait:
                found.append((row, at))
        return found

    def _once_per_period(self, section: Survey, session, ctx: KindContext, candidates) -> list[Due]:
        """At most one survey per contact in any period_days: never within that time of another one."""
        period = timedelta(days=section.period_days)
        contacts = sorted({o.contact_id for o, _ in candidates})
        earlier: dict[int, list[datetime]] = {}
        for start in range(0, len(contacts), _CHUNK):
            for contact_id, due_at in session.execute(
                select(TriggerSend.contact_id, TriggerSend.due_at)
                .where(TriggerSend.campaign_id == ctx.campaign_id,
                       TriggerSend.contact_id.in_(contacts[start:start + _CHUNK]))
            ).all():
                earlier.setdefault(contact_id, []).append(due_at)
        dues = []
        for order, at in sorted(candidates, key=lambda c: (c[1], c[0].order_id)):
            taken = earlier.setdefault(order.contact_id, [])
            if any(abs(at - other) < period for other in taken):
                continue
            taken.append(at)
            bucket = int(at.timestamp() // period.total_seconds())
            dues.append(Due(contact_id=order.contact_id, key=f"contact:{order.contact_id}:period:{bucket}", due_at=at,
                            data=_order_data(order)))
        return dues

    # -- sending ----------------------------------------------------------------------------------

    def prepare(self, section: Survey, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        """Skip surveys of orders returned or cancelled since; give everyone their signed answer links."""
        wanted = sorted({str(r.data["order_id"]) for r in recipients
                         if r.data.get("order_id") and not r.data.get("sample")})
        statuses: dict[str, str] = {}
        for start in range(0, len(wanted), _CHUNK):
            statuses.update(session.execute(select(Order.order_id, Order.status)
                                            .where(Order.order_id.in_(wanted[start:start + _CHUNK]))).all())
        signer = TokenSigner(ctx.settings.secret_key)
        base_url = ctx.settings.app.base_url
        first = section.questions[0]
        skips = {}
        for r in recipients:
            order_id = r.data.get("order_id")
            if order_id and not r.data.get("sample"):
                status = statuses.get(str(order_id))
                if status is None:
                    skips[r.delivery_id] = SKIP_GONE
                    continue
                if status in VOID_ORDER_STATUSES:
                    skips[r.delivery_id] = SKIP_VOID
                    continue
            r.extra["survey_url"] = surveys.survey_url(signer, base_url, r.delivery_id)
            r.extra["answer_links"] = surveys.answer_links(signer, base_url, r.delivery_id, first)
        return skips

    def context(self, section: Survey, recipient: Recipient) -> dict[str, Any]:
        order = recipient.data if recipient.data.get("order_id") else _SAMPLE_ORDER
        links = recipient.extra.get("answer_links") or self.sample_recipient_extra(section)["answer_links"]
        page = recipient.extra.get("survey_url") or f"{_SAMPLE_BASE}/s/preview"
        nl = recipient.language == "nl"
        first = section.questions[0]
        labels = _option_labels(first, nl)
        placed = str(order.get("placed_at") or "")
        return {
            "survey": {
                "question": {"key": first.key, "type": first.type,
                             "text": (first.text_nl if nl and first.text_nl else first.text),
                             "min": links[0]["value"] if first.type in surveys.SCALES else None,
                             "max": links[-1]["value"] if first.type in surveys.SCALES else None},
                "answer_links": [{"value": link["value"], "url": link["url"],
                                  "label": labels.get(link["value"], link["value"])} for link in links],
                "url": page,
                "more_questions": len(section.questions) > 1,
                "thank_you": section.thank_you_nl if nl and section.thank_you_nl else section.thank_you,
                "order": {"order_id": order.get("order_id"), "placed_at": placed or None,
                          "placed_on": placed[:10] or None, "total": order.get("total"),
                          "currency": order.get("currency") or "EUR"},
            }
        }

    def sample_recipient_extra(self, section: Survey) -> dict[str, Any]:
        first = section.questions[0]
        page = f"{_SAMPLE_BASE}/s/preview"
        return {**_SAMPLE_ORDER, "survey_url": page,
                "answer_links": [{"value": v, "url": f"{page}/{first.key}/{v}"}
                                 for v in surveys.one_click_values(first)]}

    def satisfaction(self, section: Survey, session, campaign_id: str, *, now: datetime, period: str = "month",
                     periods: int = 2, tz=timezone.utc) -> list[surveys.PeriodScore]:
        """This campaign's NPS and average rating per period, each compared with the one before."""
        return surveys.satisfaction(session, campaign_id, survey=section, now=now, period=period, periods=periods,
                                    tz=tz)


def _order_data(order) -> dict[str, Any]:
    total = (Decimal(order.total_cents) / 100).quantize(Decimal("0.01"))
    return {"order_id": order.order_id, "placed_at": order.placed_at.isoformat(), "total": str(total),
            "currency": order.currency}


def _option_labels(question: SurveyQuestion, nl: bool) -> dict[str, str]:
    """Choice values to the option text in the recipient's language (scales label themselves)."""
    if question.type != "choice":
        return {}
    shown = question.options_nl if nl and question.options_nl else question.options
    return {surveys.option_slug(o): label for o, label in zip(question.options, shown)}
