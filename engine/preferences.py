"""A contact's own choices: which campaign kinds they receive, their language, subscribing again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import delete, select
from sqlmodel import Session

from .db import upsert_insert
from .errors import NotFound, ValuemailError
from .models import Contact, ContactStatus, KindOptOut, Suppression, SuppressionReason
from .suppression import email_key


class PreferenceRefused(ValuemailError):
    """A change the contact cannot make here; `reason` is a stable code for pages to pick a text."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Choices:
    """What the preference centre shows and saves: kinds not wanted, the language, subscribed or not."""

    opted_out: frozenset[str]
    language: str | None
    subscribed: bool


def opted_out_kinds(session: Session, contact_id: int) -> frozenset[str]:
    """The campaign kinds the contact asked not to receive."""
    rows = session.execute(select(KindOptOut.kind).where(KindOptOut.contact_id == contact_id)).scalars()
    return frozenset(rows)


def save_choices(session: Session, contact_id: int, *, kinds: Iterable[str], wanted: Iterable[str],
                 language: str | None, languages: Iterable[str], now: datetime) -> Choices:
    """Store which of `kinds` the contact wants (the others are opted out) and their language; idempotent."""
    contact = _contact(session, contact_id)
    kinds, wanted = set(kinds), set(wanted)
    unknown = sorted(wanted - kinds)
    if unknown:
        raise PreferenceRefused("unknown_kind", f"unknown campaign kind {unknown[0]!r}")
    if language is not None and language not in set(languages):
        raise PreferenceRefused("unknown_language", f"language {language!r} is not offered")
    unwanted = kinds - wanted
    if wanted:
        session.execute(delete(KindOptOut).where(KindOptOut.contact_id == contact_id, KindOptOut.kind.in_(wanted)))
    if unwanted:
        session.execute(upsert_insert(session, KindOptOut).on_conflict_do_nothing(),
                        [{"contact_id": contact_id, "kind": k, "created_at": now} for k in sorted(unwanted)])
    if language is not None and language != contact.language:
        contact.language = language
        contact.updated_at = now
        session.add(contact)
    session.flush()
    return Choices(opted_out=opted_out_kinds(session, contact_id), language=contact.language,
                   subscribed=contact.status == ContactStatus.subscribed.value)


def resubscribe(session: Session, contact_id: int, *, now: datetime) -> None:
    """Subscribe again after an unsubscribe (never after a bounce, complaint, manual block or erasure)."""
    contact = _contact(session, contact_id)
    if contact.erased_at is not None:
        raise PreferenceRefused("erased", "this contact's data was erased")
    key = email_key(contact.email)
    suppression = session.execute(select(Suppression).where(Suppression.email_key == key)).scalars().first()
    if suppression is not None:
        if suppression.reason != SuppressionReason.unsubscribe.value:
            # A bounce or complaint says the mailbox cannot or must not take our mail; a click cannot undo that.
            raise PreferenceRefused("blocked", f"this address is blocked ({suppression.reason})")
        session.delete(suppression)
    if contact.status != ContactStatus.subscribed.value:
        contact.status = ContactStatus.subscribed.value
        contact.updated_at = now
        session.add(contact)
    session.flush()


def _contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    return contact
