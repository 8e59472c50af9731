"""loyalty_points: points statements, and a "you earned a reward" mail when a balance crosses a threshold.

The ledger and its rules live in `engine.loyalty`; this module reads the `[points]` section,
credits points before each statement run and on every reward tick, and gives templates a
`points` context. The ledger is one per shop: every loyalty campaign should declare the same
earning rules (points_per_unit, welcome_bonus, expiry_months, starts_on), since whichever
campaign syncs first credits an order, once.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator
from sqlalchemy import func, select

from ... import loyalty
from ...models import Delivery, DeliveryStatus, Run, TriggerSend
from .base import BaseKind, Due, KindContext, Recipient, SectionModel, currency_code, date_value

SKIP_NO_ACTIVITY = "no points activity"
SKIP_NO_REWARD = "no reward crossed"


class RewardModel(SectionModel):
    """One reward threshold: `points` to reach, and what the customer gets."""

    points: int = Field(gt=0)
    name: str = Field(min_length=1, max_length=120)


class Points(SectionModel):
    """The `[points]` section of a loyalty_points campaign."""

    points_per_unit: float = Field(gt=0, le=1000, description="points per 1 unit of currency spent")
    currency: str = "EUR"
    welcome_bonus: int = Field(default=0, ge=0, le=1_000_000)
    expiry_months: int = Field(default=0, ge=0, le=120, description="0: points never expire")
    starts_on: Optional[date] = None
    rewards: list[RewardModel] = []
    mail: Literal["statement", "reward"] = "statement"
    url: str = ""
    expiring_notice_days: int = Field(default=30, ge=1, le=366)

    _date = field_validator("starts_on", mode="before")(date_value)

    _currency = field_validator("currency")(currency_code)

    @field_validator("points_per_unit")
    @classmethod
    def _precision(cls, value: float) -> float:
        if Decimal(str(value)).as_tuple().exponent < -4:
            raise ValueError("use at most 4 decimals (e.g. 0.25)")
        return value


class LoyaltyPoints(BaseKind):
    """Points per purchase, a welcome bonus, expiry, statements and reward notifications."""

    name: ClassVar[str] = "loyalty_points"
    section_key: ClassVar[str] = "points"
    section_model: ClassVar[type[SectionModel]] = Points

    # -- validation -----------------------------------------------------------------------------

    def check(self, section: Points, *, today: date) -> list[tuple[tuple, str]]:
        problems = []
        for i in range(1, len(section.rewards)):
            before, this = section.rewards[i - 1].points, section.rewards[i].points
            if this <= before:
                problems.append((("rewards", i, "points"),
                                 f"rewards must go up: {this} points comes after {before}"))
        if section.mail == "reward" and not section.rewards:
            problems.append((("mail",), 'a reward mail needs at least one [[points.rewards]] threshold'))
        return problems

    def check_schedule(self, section: Points, schedule) -> str | None:
        if section.mail == "reward":
            if schedule is None or schedule.kind != "trigger" or schedule.trigger != "reward":
                return 'a reward mail goes out when a balance crosses a threshold: use { trigger = "reward" }'
            return None
        if schedule is not None and schedule.kind == "trigger":
            return 'a statement runs on an at or cron schedule; for reward mails set mail = "reward"'
        return None

    def program(self, section: Points, settings) -> loyalty.Program:
        """The domain's view of the section: earning rules and thresholds (the start in the app timezone)."""
        return to_program(section, tz=settings.tz)

    # -- scheduler hooks ------------------------------------------------------------------------

    def before_occurrence(self, section: Points, session, ctx: KindContext) -> None:
        loyalty.sync_points(session, self.program(section, ctx.settings), now=ctx.now)

    def due(self, section: Points, session, ctx: KindContext, *, since: datetime) -> list[Due]:
        if section.mail != "reward":
            return []
        program = self.program(section, ctx.settings)
        loyalty.sync_points(session, program, now=ctx.now)
        crossings = loyalty.reward_crossings(session, program, since=since, now=ctx.now)
        mailed = _keys_sent(session, ctx.campaign_id, [c.key for c in crossings])
        return [
            Due(contact_id=c.contact_id, key=c.key, due_at=c.at, data={
                "reward": {"points": c.reward.points, "name": c.reward.name},
                "crossed": [{"points": r.points, "name": r.name} for r in c.crossed],
                "balance": c.balance,
                "crossed_at": c.at.isoformat(),
            })
            for c in crossings if c.key not in mailed
        ]

    # -- sending hooks --------------------------------------------------------------------------

    def prepare(self, section: Points, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        if not recipients:
            return {}
        program = self.program(section, ctx.settings)
        ids = [r.contact_id for r in recipients]
        last = _last_statements(session, ctx, ids)
        since = {cid: last.get(cid, program.starts_at) for cid in ids}
        statements = loyalty.statement(session, ids, since=since, now=ctx.now,
                                       expiring_within=timedelta(days=section.expiring_notice_days))
        is_test = ctx.run_id is not None and bool(session.execute(
            select(Run.is_test).where(Run.id == ctx.run_id)).scalar())
        skips = {}
        for recipient in recipients:
            found = statements[recipient.contact_id]
            # Loaded for a skipped recipient too, so "view in browser" still renders real numbers.
            recipient.extra["points"] = statement_context(found, program, now=ctx.now, tz=ctx.settings.tz)
            if is_test:
                continue
            if section.mail == "statement" and not found.active:
                skips[recipient.delivery_id] = SKIP_NO_ACTIVITY
            elif section.mail == "reward" and not recipient.data.get("reward"):
                # Only a crossing's trigger says which reward was earned; never mail a guess.
                skips[recipient.delivery_id] = SKIP_NO_REWARD
        return skips

    def context(self, section: Points, recipient: Recipient) -> dict[str, Any]:
        points = dict(recipient.extra.get("points") or _empty_statement(section))
        points.update({
            "mail": section.mail,
            "reward": recipient.data.get("reward"),
            "per_unit": _number(section.points_per_unit),
            "currency": section.currency,
            "expiry_months": section.expiry_months,
            "welcome_bonus": section.welcome_bonus,
            "rewards": [{"points": r.points, "name": r.name} for r in section.rewards],
        })
        return {"points": points}

    def sample_recipient_extra(self, section: Points) -> dict[str, Any]:
        program = to_program(section, tz=None)
        welcome = section.welcome_bonus or 50
        earned = 87 + welcome
        first = program.rewards[0].points if program.rewards else 500
        balance = first + 35 if section.mail == "reward" else earned - 12
        reward = program.reached(balance)[-1] if program.reached(balance) else None
        as_of = datetime(2027, 3, 1, 9, 0)
        sample = loyalty.Statement(
            contact_id=0, balance=balance, since=as_of - timedelta(days=30), earned=earned, spent=0, expired=12,
            expiring=min(60, balance) if program.expiry_months else 0,
            expiring_at=as_of + timedelta(days=21) if program.expiry_months else None,
            recent=(
                loyalty.Entry(id=3, kind="earn", points=87, occurred_at=as_of - timedelta(days=4), order="A-1042"),
                loyalty.Entry(id=2, kind="welcome", points=welcome, occurred_at=as_of - timedelta(days=12)),
                loyalty.Entry(id=1, kind="expire", points=-12, occurred_at=as_of - timedelta(days=20)),
            ),
        )
        data: dict[str, Any] = {"points": statement_context(sample, program, now=as_of, tz=None)}
        if reward is not None:
            data["reward"] = {"points": reward.points, "name": reward.name}
        return data


def to_program(section: Points, *, tz) -> loyalty.Program:
    """The `[points]` section as a `loyalty.Program`; without `tz` the start date is left out."""
    starts_at = None
    if section.starts_on is not None and tz is not None:
        starts_at = datetime.combine(section.starts_on, time(0), tzinfo=tz)
    return loyalty.Program(
        points_per_unit=Decimal(str(section.points_per_unit)), welcome_bonus=section.welcome_bonus,
        expiry_months=section.expiry_months, starts_at=starts_at,
        rewards=tuple(loyalty.Reward(r.points, r.name) for r in section.rewards),
    )


def _keys_sent(session, campaign_id: str, keys: list[str]) -> set[str]:
    """The keys among `keys` that the scheduler already queued for this campaign."""
    sent: set[str] = set()
    for start in range(0, len(keys), 1000):
        sent.update(session.execute(select(TriggerSend.trigger_key).where(
            TriggerSend.campaign_id == campaign_id, TriggerSend.trigger_key.in_(keys[start:start + 1000]))).scalars())
    return sent


def _last_statements(session, ctx: KindContext, contact_ids: list[int]) -> dict[int, datetime]:
    """When each contact was last sent this campaign (test runs and this run do not count)."""
    query = (
        select(Delivery.contact_id, func.max(Delivery.sent_at))
        .join(Run, Run.id == Delivery.run_id)
        .where(Run.campaign_id == ctx.campaign_id, Run.is_test.is_(False), Delivery.contact_id.in_(contact_ids),
               Delivery.status == DeliveryStatus.sent.value, Delivery.sent_at.is_not(None))
        .group_by(Delivery.contact_id)
    )
    if ctx.run_id is not None:
        query = query.where(Run.id != ctx.run_id)
    return {cid: at for cid, at in session.execute(query) if at is not None}


def statement_context(found: loyalty.Statement, program: loyalty.Program, *, now: datetime, tz) -> dict[str, Any]:
    """A statement as the template sees it: plain numbers, dates as {iso, day, month, year}."""
    upcoming = program.next_reward(found.balance)
    reached = program.reached(found.balance)
    return {
        "balance": found.balance,
        "as_of": _day(now, tz),
        "since": _day(found.since, tz) if found.since else None,
        "earned": found.earned,
        "spent": found.spent,
        "expired": found.expired,
        "reversed": found.reversed,
        "expiring": found.expiring,
        "expiring_on": _day(found.expiring_at, tz) if found.expiring_at else None,
        "next_reward": {"points": upcoming.points, "name": upcoming.name} if upcoming else None,
        "distance": upcoming.points - found.balance if upcoming else None,
        "progress": min(100, found.balance * 100 // upcoming.points) if upcoming else 100,
        "available": [{"points": r.points, "name": r.name} for r in reached],
        "entries": [{"kind": e.kind, "points": e.points, "order": e.order, "date": _day(e.occurred_at, tz)}
                    for e in found.recent],
    }


def _empty_statement(section: Points) -> dict[str, Any]:
    program = to_program(section, tz=None)
    empty = loyalty.Statement(contact_id=0, balance=0, since=None)
    return statement_context(empty, program, now=datetime(2000, 1, 1), tz=None)


def _day(value: datetime, tz) -> dict[str, Any]:
    local = value.astimezone(tz) if tz is not None and value.tzinfo is not None else value
    return {"iso": local.date().isoformat(), "day": local.day, "month": local.month, "year": local.year}


def _number(value: float) -> str:
    """1.0 → "1", 0.5 → "0.5": how a rate reads in a sentence."""
    return format(Decimal(str(value)).normalize(), "f")
