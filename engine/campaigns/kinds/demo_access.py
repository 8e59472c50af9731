"""demo_access: a drip of steps over a trial, started by `trial_started`, stopped when the trial ends early."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Optional

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import String, and_, cast, literal, select

from ... import trials
from ...models import Event, TriggerSend
from .base import BaseKind, Due, KindContext, Recipient, SectionModel

#: Steps whose texts (subject, headline, body, button) come with the product, in English and Dutch.
KNOWN_STEPS = ("welcome", "tips", "checkin", "ends_soon", "last_day", "ended")
#: Steps about the trial running out: their button goes to `upgrade_url` when one is given.
_ENDING_STEPS = ("ends_soon", "last_day", "ended")
_STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SAMPLE_START = datetime(2027, 3, 1, 9, 0, tzinfo=timezone.utc)


def _url(value: str) -> str:
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"must be an http(s) URL such as https://app.example.com/start (got {value!r})")
    return value


def _located(loc: tuple, message: str, value: Any) -> ValidationError:
    """A validation error at `loc` inside the list being validated, so the message names the right line."""
    return ValidationError.from_exception_data("trial", [InitErrorDetails(
        type=PydanticCustomError("trial_step", message), loc=loc, input=value)])


class Step(SectionModel):
    """One mail of the drip: sent `day` days after the trial started."""

    day: int = Field(ge=0)
    step: str
    subject: Optional[str] = None
    subject_nl: Optional[str] = None
    headline: Optional[str] = None
    headline_nl: Optional[str] = None
    body: Optional[str] = None
    body_nl: Optional[str] = None
    button: Optional[str] = None
    button_nl: Optional[str] = None
    url: str = ""

    @field_validator("url")
    @classmethod
    def _link(cls, value: str) -> str:
        return _url(value)

    @field_validator("step")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _STEP_NAME.match(value):
            raise ValueError(f"a step name is lower-case letters, digits and _ (got {value!r})")
        return value

    @field_validator("subject", "subject_nl", "headline", "headline_nl", "body", "body_nl", "button", "button_nl")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave the key out to use the standard text)")
        return value


class Trial(SectionModel):
    """The `[trial]` section of a demo_access campaign."""

    length_days: int = Field(ge=1, le=366)
    access_url: str = Field(min_length=1)
    upgrade_url: str = ""
    grace_days: int = Field(default=7, ge=0, le=365)  # conversions this long after the trial still count
    steps: list[Step] = Field(min_length=1, max_length=30)

    @field_validator("access_url", "upgrade_url")
    @classmethod
    def _links(cls, value: str) -> str:
        return _url(value)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[Step], info: ValidationInfo) -> list[Step]:
        length = info.data.get("length_days")
        for i, step in enumerate(steps):
            if i and step.day <= steps[i - 1].day:
                raise _located((i, "day"), f"day {step.day} must come after the previous step's day "
                                           f"{steps[i - 1].day} (steps are in ascending order of day)", step.day)
            if length is not None and step.day > length:
                raise _located((i, "day"), f"day {step.day} is after the trial ends (length_days = {length})", step.day)
            if step.step not in KNOWN_STEPS and (step.subject is None or step.body is None):
                raise _located((i, "step"), f"'{step.step}' is a step of your own (the standard ones are "
                                            f"{', '.join(KNOWN_STEPS)}): give it a subject and a body", step.step)
        return steps


class DemoAccess(BaseKind):
    """Trial drips: steps at day offsets after `trial_started`, stopped at conversion or cancellation."""

    name: ClassVar[str] = "demo_access"
    section_key: ClassVar[str] = "trial"
    section_model: ClassVar[type[SectionModel]] = Trial

    def check_schedule(self, section: Trial, schedule) -> str | None:
        if schedule is None or schedule.trigger != "event" or schedule.event_type != trials.TRIAL_STARTED:
            return 'a trial drip runs on { trigger = "event", event = "trial_started" }'
        if schedule.delay:
            return "give each step's delay as its `day` in [trial] steps, not as a schedule delay"
        return None

    def due(self, section: Trial, session, ctx: KindContext, *, since: datetime) -> list[Due]:
        """Steps whose day has come in (since, now], of trials still running at `now`, not sent yet."""
        found: list[tuple[Any, int, Step]] = []
        for index, step in enumerate(section.steps):
            offset = timedelta(days=step.day)
            key = literal("trial:", String) + cast(Event.id, String) + literal(f":step:{index}", String)
            sent = and_(TriggerSend.campaign_id == ctx.campaign_id, TriggerSend.trigger_key == key)
            rows = session.execute(
                select(Event.id, Event.contact_id, Event.occurred_at)
                .outerjoin(TriggerSend, sent)
                .where(Event.type == trials.TRIAL_STARTED, Event.occurred_at > since - offset,
                       Event.occurred_at <= ctx.now - offset, TriggerSend.id.is_(None))
            ).all()
            found.extend((row, index, step) for row in rows)
        if not found:
            return []
        # A conversion the scheduler already knows of stops the drip before a delivery even exists.
        events = trials.lifecycle_events(session, {row.contact_id for row, _, _ in found},
                                         not_before=min(row.occurred_at for row, _, _ in found))
        dues = []
        for row, index, step in found:
            if trials.stop_reason(events.get(row.contact_id, ()), trial_id=row.id, started_at=row.occurred_at,
                                  until=ctx.now):
                continue
            dues.append(Due(contact_id=row.contact_id, key=f"trial:{row.id}:step:{index}",
                            due_at=row.occurred_at + timedelta(days=step.day),
                            data=self._data(section, step, index, trial_id=row.id, started_at=row.occurred_at)))
        return sorted(dues, key=lambda d: (d.due_at, d.key))

    @staticmethod
    def _data(section: Trial, step: Step, index: int, *, trial_id: int, started_at: datetime) -> dict[str, Any]:
        return {"step": step.step, "step_index": index, "day": step.day, "days_left": section.length_days - step.day,
                "trial_id": trial_id, "trial_started_at": started_at.isoformat(),
                "trial_ends_at": trials.trial_ends_at(started_at, section.length_days).isoformat(),
                "access_url": section.access_url}

    def prepare(self, section: Trial, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        """Skip a step when its trial converted, was cancelled or superseded since it fell due."""
        started = {r.delivery_id: datetime.fromisoformat(r.data["trial_started_at"])
                   for r in recipients if not r.data.get("sample") and r.data.get("trial_started_at")}
        if not started:
            return {}
        events = trials.lifecycle_events(session, {r.contact_id for r in recipients if r.delivery_id in started},
                                         not_before=min(started.values()))
        skips = {}
        for r in recipients:
            if r.delivery_id not in started:
                continue
            reason = trials.stop_reason(events.get(r.contact_id, ()), trial_id=int(r.data.get("trial_id") or 0),
                                        started_at=started[r.delivery_id], until=ctx.now)
            if reason:
                skips[r.delivery_id] = reason
        return skips

    def context(self, section: Trial, recipient: Recipient) -> dict[str, Any]:
        data = recipient.data if recipient.data.get("step") else self.sample_recipient_extra(section)
        step = self._step(section, data)
        nl = recipient.language == "nl"

        def text(name: str) -> str | None:
            if step is None:
                return None
            return (getattr(step, f"{name}_nl") if nl else None) or getattr(step, name)

        name = data["step"]
        subject = text("subject")
        # The variant's URLs win over those recorded with the trigger: a segment may have its own app domain.
        target = (step.url if step is not None else "") or (
            section.upgrade_url if name in _ENDING_STEPS and section.upgrade_url else "") or section.access_url
        return {
            "trial": {
                "step": name,
                "known_step": name in KNOWN_STEPS,
                "day": data["day"],
                "day_number": data["day"] + 1,
                "days_left": data["days_left"],
                "length_days": section.length_days,
                "started_at": data.get("trial_started_at"),
                "ends_at": data.get("trial_ends_at"),
                "access_url": section.access_url,
                "upgrade_url": section.upgrade_url or None,
                "url": target,
                "subject": subject,
                "headline": text("headline") or (subject if name not in KNOWN_STEPS else None),
                "body": text("body"),
                "button": text("button"),
            }
        }

    @staticmethod
    def _step(section: Trial, data: dict[str, Any]) -> Step | None:
        """The variant's step for the trigger's data: by position when the name matches, else by name."""
        index = data.get("step_index")
        if isinstance(index, int) and 0 <= index < len(section.steps) and section.steps[index].step == data["step"]:
            return section.steps[index]
        return next((s for s in section.steps if s.step == data["step"]), None)

    def sample_recipient_extra(self, section: Trial) -> dict[str, Any]:
        step = section.steps[0]
        data = self._data(section, step, 0, trial_id=0, started_at=_SAMPLE_START)
        return {**data, "sample": True}

    def conversion(self, section: Trial, session, campaign_id: str, *, now: datetime) -> trials.Conversion:
        """This campaign's conversion rate, over the trial length plus the grace days."""
        return trials.conversion_rate(session, campaign_id, now=now, length_days=section.length_days,
                                      grace_days=section.grace_days)
