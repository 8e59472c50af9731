"""Unique coupon codes: unguessable, unambiguous, one per contact per campaign, stored for redemption."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from .models import Coupon

#: No 0/O, 1/I/L: codes are read off phones and typed into checkouts.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUPS = 2
GROUP_LENGTH = 5  # 10 symbols of a 31-symbol alphabet: 49.5 bits of randomness


def generate_code(prefix: str = "") -> str:
    """A fresh random code such as SPRING-7KQ2M-X9PDA."""
    groups = ["".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS)]
    return "-".join(([prefix] if prefix else []) + groups)


def ensure_coupons(session: Session, *, campaign_id: str, contact_ids: Sequence[int], prefix: str,
                   now: datetime) -> dict[int, str]:
    """Each contact's code for the campaign, issuing the missing ones in one statement."""
    if not contact_ids:
        return {}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for _ in range(5):
        existing = dict(session.execute(select(Coupon.contact_id, Coupon.code).where(
            Coupon.campaign_id == campaign_id, Coupon.contact_id.in_(contact_ids))).all())
        missing = [c for c in contact_ids if c not in existing]
        if not missing:
            return existing
        rows = [{"code": generate_code(prefix), "campaign_id": campaign_id, "contact_id": c, "created_at": now}
                for c in missing]
        # A code collision (astronomically rare) or a concurrent issuer just leaves the row out; loop again.
        session.execute(insert(Coupon).values(rows).on_conflict_do_nothing())
    raise RuntimeError("could not issue unique coupon codes")
