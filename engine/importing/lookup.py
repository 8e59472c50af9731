"""Find contacts by e-mail address for orders and events, a batch at a time."""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..models import Contact
from . import fields
from .errors import FieldProblem

_contacts = Contact.__table__


def contact_ids(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Map lower-cased e-mail keys to contact ids (one SELECT)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    stmt = select(_contacts.c.email_key, _contacts.c.id).where(_contacts.c.email_key.in_(wanted))
    return {key: cid for key, cid in conn.execute(stmt)}


def resolve_contacts(conn: Connection, emails: Iterable[str]) -> dict[str, int | str]:
    """Map each raw address to its contact id, or to the reason it names no contact.

    Addresses are tried lower-cased first (the common case, no validation cost); only the ones
    that miss are normalised the way contact import does it (IDNA, Unicode) and tried again.
    """
    raw = {email: fields.text(email).lower() for email in set(emails)}
    found = contact_ids(conn, raw.values())
    answer: dict[str, int | str] = {}
    retry: dict[str, str] = {}
    for email, key in raw.items():
        if key in found:
            answer[email] = found[key]
            continue
        try:
            _, normal_key = fields.email(email)
        except FieldProblem as problem:
            answer[email] = str(problem)
            continue
        retry[email] = normal_key
    again = contact_ids(conn, (k for k in retry.values() if k not in found)) if retry else {}
    for email, key in retry.items():
        cid = found.get(key) or again.get(key)
        answer[email] = cid if cid is not None else f"unknown contact {fields.text(email)!r} (import it as a contact first)"
    return answer
