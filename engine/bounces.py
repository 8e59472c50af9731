"""The bounce policy: verified provider events onto delivery timelines and the suppression list.

One hard bounce or one complaint suppresses the address at once; `soft_bounce_limit` soft bounces
within `soft_bounce_days` suppress it too. Each event is recorded once, however often the provider
delivers it (its key is claimed in `webhook_nonces`). Events about addresses we never mailed are
ignored: a webhook never creates contacts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import delete, func, select
from sqlmodel import Session

from .clock import Clock
from .config import WebhookSettings
from .db import is_postgres, upsert_insert
from .models import Delivery, DeliveryEvent, DeliveryEventType, SuppressionReason, WebhookNonce
from .suppression import email_key, unsubscribe
from .webhooks.base import BounceKind, EventType, WebhookEvent

log = logging.getLogger(__name__)

#: How long event keys and nonces are remembered: longer than any provider keeps retrying (days).
NONCE_RETENTION = timedelta(days=30)
MAX_NONCE = 200
MAX_DIAGNOSTIC = 1000
#: A delivery id as our metadata carries it (bounded so a forged huge number never reaches BIGINT).
DELIVERY_ID = re.compile(r"[0-9]{1,18}")


@dataclass
class Applied:
    """What one request's events did."""

    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    suppressed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A line for the webhook log (addresses are not repeated there)."""
        parts = [f"{self.applied} applied"]
        if self.duplicates:
            parts.append(f"{self.duplicates} already recorded")
        if self.unmatched:
            parts.append(f"{self.unmatched} for addresses never mailed")
        if self.suppressed:
            parts.append(f"{len(self.suppressed)} suppressed")
        return ", ".join(parts)


def apply_events(session: Session, events: Iterable[WebhookEvent], *, provider: str, settings: WebhookSettings,
                 clock: Clock) -> Applied:
    """Record each event on its delivery's timeline once and suppress addresses as the policy says."""
    result = Applied()
    now = clock.now()
    for event in events:
        delivery = find_delivery(session, event)
        if delivery is None:
            result.unmatched += 1
            log.info("%s %s event for an address we never mailed: ignored", provider, event.type.value)
            continue
        if not claim_nonce(session, provider=provider, nonce=f"event:{event.key}", now=now):
            result.duplicates += 1
            continue
        at = min(event.occurred_at or now, now)
        session.add(DeliveryEvent(delivery_id=delivery.id, type=_TYPES[event.type], occurred_at=at,
                                  data=_data(event, provider)))
        session.flush()
        result.applied += 1
        reason = _suppression_reason(session, event, delivery, settings=settings, now=now)
        if reason is not None:
            note = f"{provider} {event.type.value}: {event.diagnostic or event.code or '(no diagnostic)'}"
            if reason is SuppressionReason.soft_bounce:
                note = f"{settings.soft_bounce_limit} soft bounces in {settings.soft_bounce_days} days; last {note}"
            outcome = unsubscribe(session, email=delivery.email, reason=reason, clock=clock, note=note[:500])
            if outcome.newly_suppressed:
                result.suppressed.append(outcome.email_key)
                log.info("suppressed an address (%s) after a %s %s", reason.value, provider, event.type.value)
    return result


def find_delivery(session: Session, event: WebhookEvent) -> Delivery | None:
    """The delivery an event is about: by our metadata, else the provider's id, else our Message-ID.

    Whatever names it, the delivery must have gone to the event's recipient.
    """
    address = email_key(event.recipient)
    if not address:
        return None

    def ours(delivery: Delivery | None) -> bool:
        return delivery is not None and email_key(delivery.email) == address

    if DELIVERY_ID.fullmatch(event.delivery_id):
        delivery = session.get(Delivery, int(event.delivery_id))
        if ours(delivery) and (not event.run_id or event.run_id == str(delivery.run_id)):
            return delivery
    lookups = []
    if event.provider_message_ids:
        lookups.append(Delivery.provider_message_id.in_([i[:255] for i in event.provider_message_ids]))
    if event.message_id:
        mid = event.message_id.strip()
        lookups.append(Delivery.message_id == (mid if mid.startswith("<") else f"<{mid}>")[:255])
    for condition in lookups:
        for delivery in session.execute(select(Delivery).where(condition).limit(20)).scalars():
            if ours(delivery):
                return delivery
    return None


def claim_nonce(session: Session, *, provider: str, nonce: str, now: datetime) -> bool:
    """Remember `nonce` for `provider`; False when it was seen before (a replay or a repeated event)."""
    if len(nonce) > MAX_NONCE:
        nonce = "sha256:" + hashlib.sha256(nonce.encode("utf-8")).hexdigest()
    # ON CONFLICT DO NOTHING: two deliveries of one event racing each other record it once.
    stmt = (upsert_insert(session, WebhookNonce).values(provider=provider, nonce=nonce, seen_at=now)
            .on_conflict_do_nothing(index_elements=["provider", "nonce"])
            .returning(WebhookNonce.__table__.c.nonce))
    return session.execute(stmt).first() is not None


def forget_nonces(session: Session, *, now: datetime) -> None:
    """Drop nonces older than the retention: no provider retries that late, and signatures expire sooner."""
    session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < now - NONCE_RETENTION))


def soft_bounces(session: Session, address: str, *, since: datetime) -> int:
    """Soft bounces recorded for `address` (any delivery to it) at or after `since`."""
    rows = session.execute(
        select(DeliveryEvent.data).join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
        .where(DeliveryEvent.type == DeliveryEventType.bounced.value, DeliveryEvent.occurred_at >= since,
               func.lower(Delivery.email) == email_key(address))).scalars()
    return sum(1 for data in rows if (data or {}).get("kind") == BounceKind.soft.value)


_TYPES = {EventType.delivered: DeliveryEventType.delivered.value, EventType.bounced: DeliveryEventType.bounced.value,
          EventType.complained: DeliveryEventType.complained.value}


def _data(event: WebhookEvent, provider: str) -> dict:
    data = {"provider": provider}
    if event.type is EventType.bounced:
        data["kind"] = (event.kind or BounceKind.soft).value
        data["code"] = event.code[:100]
    if event.diagnostic:
        data["diagnostic"] = event.diagnostic[:MAX_DIAGNOSTIC]
    return data


def _suppression_reason(session: Session, event: WebhookEvent, delivery: Delivery, *, settings: WebhookSettings,
                        now: datetime) -> SuppressionReason | None:
    if event.type is EventType.complained:
        return SuppressionReason.complaint
    if event.type is not EventType.bounced:
        return None
    if event.kind is BounceKind.hard:
        return SuppressionReason.hard_bounce
    if is_postgres(session):
        # Two soft bounces of one address arriving at once must not each count the other out:
        # the second waits here until the first commits (SQLite serialises writers anyway).
        lock_key = func.hashtext("valuemail.bounces:" + email_key(delivery.email))
        session.execute(select(func.pg_advisory_xact_lock(lock_key)))
    since = now - timedelta(days=settings.soft_bounce_days)
    if soft_bounces(session, delivery.email, since=since) >= settings.soft_bounce_limit:
        return SuppressionReason.soft_bounce
    return None
