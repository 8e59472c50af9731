"""seasonal_discount: a discount tied to a date window, the order amount or the customer's spend."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .base import BaseKind, Recipient, SectionModel, currency_code, date_value

_SHARED_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,39}$")


class Tier(SectionModel):
    """A discount level reached by spending at least `min_spend` over the spend period."""

    min_spend: float = Field(ge=0)
    name: str = ""
    percent: Optional[int] = Field(default=None, ge=1, le=100)
    amount: Optional[float] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_discount(self):
        if (self.percent is None) == (self.amount is None):
            raise ValueError("a tier needs exactly one of percent or amount")
        return self


_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class Season(SectionModel):
    """A window of the year, e.g. { from = "03-20", until = "06-20" }; it may wrap past new year."""

    start: str = Field(alias="from")
    until: str

    @field_validator("start", "until")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not _MONTH_DAY.match(value):
            raise ValueError(f"{value!r} must be a month and day such as \"03-20\"")
        return value

    def contains(self, day: date) -> bool:
        """True when `day` falls in the window (both ends included)."""
        key = f"{day.month:02d}-{day.day:02d}"
        if self.start <= self.until:
            return self.start <= key <= self.until
        return key >= self.start or key <= self.until


class Product(SectionModel):
    name: str
    url: str
    image_url: str = ""
    price: Optional[float] = None


class Offer(SectionModel):
    """The `[offer]` section of a seasonal_discount campaign."""

    percent: Optional[int] = Field(default=None, ge=1, le=100)
    amount: Optional[float] = Field(default=None, gt=0)
    currency: str = "EUR"
    min_order: Optional[float] = Field(default=None, ge=0)
    valid_from: Optional[date] = None
    valid_until: date
    code: str = Field(description='"unique", or a shared code such as "SPRING15"')
    code_prefix: str = ""
    max_codes: Optional[int] = Field(default=None, ge=1)  # unique codes the campaign may issue in total
    season: Optional[Season] = None  # the offer runs only in this window of each year
    headline: str = ""
    url: str = ""
    tiers: list[Tier] = []
    spend_period_days: int = Field(default=365, ge=1)
    products: list[Product] = []

    _parse_dates = field_validator("valid_from", "valid_until", mode="before")(date_value)

    _currency = field_validator("currency")(currency_code)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if value != "unique" and not _SHARED_CODE.match(value):
            raise ValueError(f'must be "unique" or a shared code of 3-40 capitals, digits, - or _ (got {value!r})')
        return value

    @field_validator("code_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Z0-9]{1,10}", value):
            raise ValueError("must be 1-10 capitals or digits")
        return value

    # Cross-key checks are field validators (fields validate in declaration order) so that the
    # error carries the key, and with it the line, rather than the section header.
    @field_validator("amount")
    @classmethod
    def _not_both(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("percent") is not None:
            raise ValueError("give percent or amount, not both")
        return value

    @field_validator("valid_until")
    @classmethod
    def _window(cls, value: date, info: ValidationInfo) -> date:
        start = info.data.get("valid_from")
        if start and start > value:
            raise ValueError(f"valid_from {start} is after valid_until {value}")
        return value

    @field_validator("tiers")
    @classmethod
    def _distinct_tiers(cls, value: list[Tier]) -> list[Tier]:
        spends = [t.min_spend for t in value]
        if len(set(spends)) != len(spends):
            raise ValueError("two tiers have the same min_spend")
        return value

    @model_validator(mode="after")
    def _discount(self):
        if self.percent is None and self.amount is None and not self.tiers:
            raise ValueError("give percent, amount, or tiers")
        return self


class SeasonalDiscount(BaseKind):
    """Discounts with a validity window, a minimum order, shared or unique codes and spend tiers."""

    name: ClassVar[str] = "seasonal_discount"
    section_key: ClassVar[str] = "offer"
    section_model: ClassVar[type[SectionModel]] = Offer
    #: Keys that replace each other: a variant giving `amount` drops the base `percent`.
    alternatives: ClassVar[tuple[tuple[str, ...], ...]] = (("percent", "amount"),)

    def check(self, section: Offer, *, today: date) -> list[tuple[tuple, str]]:
        problems = []
        if section.valid_until < today:
            problems.append((("valid_until",), f"the offer ended on {section.valid_until} (today is {today})"))
        return problems

    def inactive_reason(self, section: Offer, *, day: date) -> str | None:
        # Before valid_from is fine: a mail may announce an offer ("valid from 20 March").
        if day > section.valid_until:
            return f"the offer ended on {section.valid_until}"
        if section.season and not section.season.contains(day):
            return f"{day} is outside the season {section.season.start} to {section.season.until}"
        return None

    def prepare(self, section: Offer, session, ctx, recipients: list[Recipient]) -> dict[int, str]:
        """Spend over the period for tiers; unique codes from the pool (skip when it is used up)."""
        ids = [r.contact_id for r in recipients]
        if section.tiers:
            from ... import ltv

            spend = ltv.spend_since(session, ids, ctx.now - timedelta(days=section.spend_period_days))
            for r in recipients:
                r.spend = spend.get(r.contact_id, Decimal(0))
        if section.code != "unique":
            return {}
        from ...coupons import issue, sample_code

        if ctx.test:  # a test mail shows what a code looks like, never a member's own
            for r in recipients:
                r.coupon = sample_code(section.code_prefix)
            return {}

        codes = issue(session, campaign_id=ctx.campaign_id, contact_ids=ids, prefix=section.code_prefix,
                      now=ctx.now, limit=section.max_codes)
        skips = {}
        for r in recipients:
            r.coupon = codes.get(r.contact_id)
            if r.coupon is None:
                skips[r.delivery_id] = "coupon pool exhausted"
        return skips

    def pick_tier(self, section: Offer, spend: Decimal) -> Tier | None:
        """The richest tier the customer's spend reaches, if any."""
        reached = [t for t in section.tiers if Decimal(str(t.min_spend)) <= spend]
        return max(reached, key=lambda t: t.min_spend) if reached else None

    def context(self, section: Offer, recipient: Recipient) -> dict[str, Any]:
        tier = self.pick_tier(section, recipient.spend)
        percent, amount = section.percent, section.amount
        if tier is not None:
            percent, amount = tier.percent, tier.amount
        code = recipient.coupon if section.code == "unique" else section.code
        return {
            "offer": {
                "percent": percent,
                "amount": amount,
                "currency": section.currency,
                "min_order": section.min_order,
                "valid_from": section.valid_from.isoformat() if section.valid_from else None,
                "valid_until": section.valid_until.isoformat(),
                "code": code or "",
                "tier": (tier.name or f"{tier.min_spend:g}+") if tier else None,
                "headline": section.headline or None,
                "products": [p.model_dump() for p in section.products],
            }
        }

