"""Unsubscribes and the suppression list: addresses that must never be mailed again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, select

from .clock import Clock
from .db import upsert_insert
from .errors import NotFound
from .models import Contact, ContactStatus, Delivery, DeliveryStatus, Run, Suppression, SuppressionReason

#: What a skipped delivery records as its last error when its contact unsubscribed.
SKIPPED_UNSUBSCRIBED = "unsubscribed"
#: The prefix of an erased address's fingerprint on the suppression list.
ERASED_PREFIX = "erased:sha256:"


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome of one unsubscribe: which address, whose contact, and what changed."""

    email_key: str
    contact_id: int | None
    newly_suppressed: bool
    skipped_deliveries: int


def email_key(email: str) -> str:
    """The case-insensitive key an address is stored and suppressed under."""
    return email.strip().lower()


def fingerprint(email: str) -> str:
    """The suppression key that remembers an erased address without keeping it."""
    return ERASED_PREFIX + hashlib.sha256(email_key(email).encode("utf-8")).hexdigest()


def unsubscribe(
    session: Session,
    *,
    delivery_id: int | None = None,
    email: str | None = None,
    reason: str | SuppressionReason,
    clock: Clock,
    note: str = "",
) -> Unsubscribed:
    """Suppress an address (idempotent), mark its contact unsubscribed and skip its queued deliveries.

    With `delivery_id` the address is the one that delivery went to (the mailbox the recipient
    clicked from) and the contact is the delivery's; with `email` the contact is looked up by key.
    Claimed deliveries are left alone: the sender re-checks suppression just before sending.
    """
    reason = SuppressionReason(reason).value
    contact: Contact | None
    if delivery_id is not None:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        key = email_key(delivery.email)
        run = session.get(Run, delivery.run_id)
        if run is not None and run.is_test:
            # A test mail went to the marketer, rendered with a real contact's data: the
            # marketer's address is the one to suppress, never that contact's.
            contact = session.exec(select(Contact).where(Contact.email_key == key)).first()
        else:
            contact = session.get(Contact, delivery.contact_id)
    elif email is not None and email_key(email):
        key = email_key(email)
        contact = session.exec(select(Contact).where(Contact.email_key == key)).first()
    else:
        raise ValueError("unsubscribe needs a delivery_id or an email")

    now = clock.now()
    newly = _insert_suppression(session, key=key, reason=reason, note=note, now=now)
    skipped = 0
    if contact is not None:
        if contact.status != ContactStatus.unsubscribed.value:
            contact.status = ContactStatus.unsubscribed.value
            contact.updated_at = now
            session.add(contact)
        result = session.exec(
            update(Delivery)
            .where(Delivery.contact_id == contact.id, Delivery.status == DeliveryStatus.queued.value)
            .values(status=DeliveryStatus.skipped.value, last_error=SKIPPED_UNSUBSCRIBED, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        skipped = result.rowcount or 0
    if delivery_id is not None:
        from .models import DeliveryEvent, DeliveryEventType

        # On the delivery's timeline once: mail clients repeat the one-click POST.
        kind = DeliveryEventType.unsubscribed.value
        seen = session.exec(select(DeliveryEvent.id).where(DeliveryEvent.delivery_id == delivery_id,
                                                           DeliveryEvent.type == kind).limit(1)).first()
        if seen is None:
            session.add(DeliveryEvent(delivery_id=delivery_id, type=kind, occurred_at=now, data={"reason": reason}))
    session.flush()
    return Unsubscribed(email_key=key, contact_id=contact.id if contact else None,
                        newly_suppressed=newly, skipped_deliveries=skipped)


def is_suppressed(session: Session, email_key_: str) -> bool:
    """True when the address (compared case-insensitively) is on the suppression list, or was erased."""
    key = email_key(email_key_)
    keys = (key, fingerprint(key))
    return session.exec(select(Suppression.id).where(Suppression.email_key.in_(keys)).limit(1)).first() is not None


def _insert_suppression(session: Session, *, key: str, reason: str, note: str, now) -> bool:
    # ON CONFLICT DO NOTHING rather than select-then-insert: mail clients fire the one-click
    # POST more than once, sometimes concurrently, and the first reason recorded wins.
    stmt = (
        upsert_insert(session, Suppression)
        .values(email_key=key, reason=reason, note=note, created_at=now)
        .on_conflict_do_nothing(index_elements=["email_key"])
        .returning(Suppression.__table__.c.id)
    )
    # RETURNING yields a row only when this call inserted it; rowcount is unreliable across drivers.
    return session.exec(stmt).first() is not None
