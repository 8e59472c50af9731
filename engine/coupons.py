"""Unique coupon codes: unguessable, unambiguous, one per contact per campaign, stored for redemption."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from .errors import ValuemailError
from .models import Campaign, Coupon

#: No 0/O, 1/I/L: codes are read off phones and typed into checkouts.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUPS = 2
GROUP_LENGTH = 5  # 10 symbols of a 31-symbol alphabet: 49.5 bits of randomness


class CouponRefused(ValuemailError):
    """A code that does not exist, was used already, or does not meet the offer's conditions."""


def generate_code(prefix: str = "") -> str:
    """A fresh random code such as SPRING-7KQ2M-X9PDA."""
    groups = ["".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS)]
    return "-".join(([prefix] if prefix else []) + groups)


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
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for _ in range(5):
        existing = dict(session.execute(select(Coupon.contact_id, Coupon.code).where(
            Coupon.campaign_id == campaign_id, Coupon.contact_id.in_(contact_ids))).all())
        missing = [c for c in contact_ids if c not in existing]
        if limit is not None and missing:
            issued = session.execute(select(func.count()).where(Coupon.campaign_id == campaign_id)).scalar()
            missing = missing[:max(0, limit - issued)]
        if not missing:
            return existing
        rows = [{"code": generate_code(prefix), "campaign_id": campaign_id, "contact_id": c, "created_at": now}
                for c in missing]
        # A code collision (astronomically rare) just leaves that row out; the loop issues it again.
        session.execute(insert(Coupon).values(rows).on_conflict_do_nothing())
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
