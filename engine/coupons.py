"""Unique coupon codes: unguessable, unambiguous, one per contact per campaign, stored for redemption."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Sequence

from sqlalchemy import func, select, update
from sqlmodel import Session

from .db import among, upsert_insert
from .errors import InvalidFile, NotFound, ValuemailError
from .models import Campaign, Coupon, Delivery, Run

#: No 0/O, 1/I/L: codes are read off phones and typed into checkouts.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUPS = 2
GROUP_LENGTH = 5  # 10 symbols of a 31-symbol alphabet: 49.5 bits of randomness


class CouponRefused(ValuemailError):
    """A code that does not exist, was used already, or does not meet the offer's conditions."""


def generate_code(prefix: str = "") -> str:
    """A fresh random code such as SPRING-7KQ2M-X9PDA."""
    return generate_codes(1, prefix)[0]


def generate_codes(count: int, prefix: str = "") -> list[str]:
    """`count` fresh random codes, from one read of the system's randomness (not one per symbol)."""
    symbols = GROUPS * GROUP_LENGTH
    # A byte below 248 (8 x 31) maps to a symbol without bias; the others are thrown away.
    usable = len(ALPHABET) * (256 // len(ALPHABET))
    picked: list[str] = []
    while len(picked) < count * symbols:
        picked.extend(ALPHABET[b % len(ALPHABET)] for b in secrets.token_bytes(count * symbols + 16) if b < usable)
    codes = []
    for i in range(count):
        chars = picked[i * symbols:(i + 1) * symbols]
        groups = ["".join(chars[g * GROUP_LENGTH:(g + 1) * GROUP_LENGTH]) for g in range(GROUPS)]
        codes.append("-".join(([prefix] if prefix else []) + groups))
    return codes


def sample_code(prefix: str) -> str:
    """The code a test mail shows: shaped like a real one, never issued (no real code has a 0 in it)."""
    return "-".join(([prefix] if prefix else []) + ["TEST0", "00000"][:GROUPS])


def issue(session: Session, *, campaign_id: str, contact_ids: Sequence[int], prefix: str, now: datetime,
          limit: int | None = None) -> dict[int, str]:
    """Each contact's code for the campaign, issuing missing ones while the pool (`limit`) lasts.

    Contacts left without a code are missing from the result. The campaign row is locked while
    codes are counted and issued, so concurrent workers never exceed the pool.
    """
    if not contact_ids:
        return {}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(select(Campaign.id).where(Campaign.id == campaign_id).with_for_update())
    for _ in range(5):
        existing = dict(session.execute(select(Coupon.contact_id, Coupon.code).where(
            Coupon.campaign_id == campaign_id, among(Coupon.contact_id, contact_ids))).all())
        missing = [c for c in contact_ids if c not in existing]
        if limit is not None and missing:
            issued = session.execute(select(func.count()).where(Coupon.campaign_id == campaign_id)).scalar()
            missing = missing[:max(0, limit - issued)]
        if not missing:
            return existing
        rows = [{"code": code, "campaign_id": campaign_id, "contact_id": c, "created_at": now}
                for c, code in zip(missing, generate_codes(len(missing), prefix))]
        # A code collision (astronomically rare) just leaves that row out; the loop issues it again.
        # An executemany of one statement, compiled once, not a VALUES list compiled per batch size.
        session.execute(upsert_insert(session, Coupon).on_conflict_do_nothing(), rows)
    raise RuntimeError("could not issue unique coupon codes")


def redeem(session: Session, code: str, *, order_id: int | None, order_total: float, now: datetime,
           min_order: float | None = None, valid_from: datetime | None = None,
           valid_until: datetime | None = None) -> Coupon:
    """Mark a unique code used for an order, once; the offer's window and minimum order apply."""
    coupon = session.execute(select(Coupon).where(Coupon.code == code.strip().upper())).scalars().first()
    if coupon is None:
        raise CouponRefused(f"unknown code {code!r}")
    if coupon.redeemed_at is not None:
        if coupon.order_id is not None and coupon.order_id == order_id:
            return coupon  # the same order redeemed twice: idempotent
        raise CouponRefused(f"code {coupon.code} was already used on {coupon.redeemed_at:%Y-%m-%d}")
    if valid_from is not None and now < valid_from:
        raise CouponRefused(f"code {coupon.code} is valid from {valid_from:%Y-%m-%d}")
    if valid_until is not None and now > valid_until:
        raise CouponRefused(f"code {coupon.code} expired on {valid_until:%Y-%m-%d}")
    if min_order is not None and order_total < min_order:
        raise CouponRefused(f"code {coupon.code} needs an order of at least {min_order:.2f}")
    claimed = session.execute(update(Coupon).where(Coupon.id == coupon.id, Coupon.redeemed_at.is_(None))
                              .values(redeemed_at=now, order_id=order_id)).rowcount
    if not claimed:
        raise CouponRefused(f"code {coupon.code} was just used by another order")
    session.refresh(coupon)
    return coupon


# -- the coupon page of a delivery ------------------------------------------------------------------

@dataclass(frozen=True)
class CouponView:
    """The offer one delivery carried, as its coupon page shows it."""

    code: str
    percent: int | None
    amount: float | None
    currency: str
    min_order: float | None
    valid_from: date | None
    valid_until: date
    headline: str
    shop_url: str
    tier: str | None
    redeemed_at: datetime | None


def coupon_for_delivery(session: Session, *, delivery_id: int, settings) -> CouponView | None:
    """The discount a delivery's mail offered (None when its campaign offers none); NotFound if it is gone."""
    from . import ltv
    from .campaigns import load_stored

    row = session.execute(select(Delivery, Run).join(Run, Run.id == Delivery.run_id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None:
        raise NotFound("this mail no longer exists")
    delivery, run = row
    try:
        campaign = load_stored(run.definition, settings=settings)
    except InvalidFile:
        return None  # the stored campaign can no longer be read: there is nothing trustworthy to show
    if campaign.kind_name != "seasonal_discount" or delivery.segment not in campaign.variants:
        return None
    kind, offer = campaign.kind, campaign.variant(delivery.segment).section
    coupon = None
    if offer.code == "unique" and run.is_test:
        return CouponView(code=sample_code(offer.code_prefix), percent=offer.percent, amount=offer.amount,
                          currency=offer.currency, min_order=offer.min_order, valid_from=offer.valid_from,
                          valid_until=offer.valid_until, headline=offer.headline, shop_url=_shop_url(offer, settings),
                          tier=None, redeemed_at=None)
    if offer.code == "unique":
        coupon = session.execute(select(Coupon).where(Coupon.campaign_id == run.campaign_id,
                                                      Coupon.contact_id == delivery.contact_id)).scalars().first()
        if coupon is None:
            return None  # the pool ran out before this contact (the mail was skipped)
    percent, amount = offer.percent, offer.amount
    tier = None
    if offer.tiers:
        # The tier the mail showed: the spend over the period before it was sent.
        at = delivery.sent_at or delivery.created_at
        spend = ltv.spend_since(session, [delivery.contact_id], at - timedelta(days=offer.spend_period_days))
        picked = kind.pick_tier(offer, spend.get(delivery.contact_id, Decimal(0)))
        if picked is not None:
            percent, amount = picked.percent, picked.amount
            tier = picked.name or f"{picked.min_spend:g}+"
    return CouponView(code=coupon.code if coupon else offer.code, percent=percent, amount=amount,
                      currency=offer.currency, min_order=offer.min_order, valid_from=offer.valid_from,
                      valid_until=offer.valid_until, headline=offer.headline, shop_url=_shop_url(offer, settings),
                      tier=tier, redeemed_at=coupon.redeemed_at if coupon else None)


def _shop_url(offer, settings) -> str:
    # Only a web address goes behind the shop button, whatever the file says.
    return offer.url if offer.url.startswith(("https://", "http://")) else settings.app.base_url
