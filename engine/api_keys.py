"""REST API keys: created once in plain text, stored only as a SHA-256 hash, verified, listed, revoked.

A key reads `vm_<prefix>_<secret>`. The prefix (8 hex characters) is stored in plain text so that
a key can be found with one indexed lookup and named in lists and logs; the secret is 256 random
bits, so an unsalted SHA-256 of the whole key is enough (a slow password hash guards guessable
secrets, which these are not) and keeps verification cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from .errors import NotFound, ValuemailError
from .models import ApiKey

#: What every key starts with, so that a leaked one is recognisable (secret scanners, logs).
KEY_PREFIX = "vm"
PREFIX_BYTES = 4  # 8 hex characters: ids, not secrets
SECRET_BYTES = 32
MAX_NAME_LENGTH = 200
#: Longer than any key we issue; anything longer is refused before it is hashed.
MAX_KEY_LENGTH = 200
#: last_used_at is written at most this often per key, so that requests do not each cost a write.
USE_RECORD_INTERVAL = timedelta(minutes=1)
_PREFIX = re.compile(rf"[0-9a-f]{{{PREFIX_BYTES * 2}}}")


class ApiKeyError(ValuemailError):
    """An API key cannot be created as asked (e.g. a bad name)."""


class InvalidApiKey(ValuemailError):
    """A presented key is missing, malformed, unknown, wrong or revoked."""


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `key` is the only time its plain text exists."""

    key: str
    record: ApiKey


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 hex of the whole key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(session: Session, name: str, *, now: datetime) -> NewApiKey:
    """Create a key called `name`; the returned plain key is never stored and cannot be shown again."""
    name = _clean_name(name)
    for _attempt in range(5):
        prefix = secrets.token_hex(PREFIX_BYTES)
        key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
        record = ApiKey(name=name, prefix=prefix, key_hash=hash_key(key), created_at=now)
        # A savepoint, so that a (vanishingly rare) prefix collision retries without losing the caller's transaction.
        try:
            with session.begin_nested():
                session.add(record)
        except IntegrityError:
            continue
        return NewApiKey(key=key, record=record)
    raise ApiKeyError("could not find a free key prefix; try again")


def verify(session: Session, presented: str | None) -> ApiKey:
    """The active key matching `presented`; raises InvalidApiKey otherwise. Only reads."""
    if not presented:
        raise InvalidApiKey("an API key is required: send `Authorization: Bearer <key>`")
    parts = presented.split("_", 2)
    # Checked before any query: a header may carry anything, NUL characters included.
    if (len(presented) > MAX_KEY_LENGTH or len(parts) != 3 or parts[0] != KEY_PREFIX
            or not _PREFIX.fullmatch(parts[1]) or not parts[2]):
        raise InvalidApiKey("the API key is malformed (expected vm_<prefix>_<secret>)")
    record = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    # Compared in constant time so that response times say nothing about how much of a guess was right.
    if record is None or not hmac.compare_digest(record.key_hash, hash_key(presented)):
        raise InvalidApiKey("the API key is not valid")
    if record.revoked_at is not None:
        raise InvalidApiKey("the API key was revoked")
    return record


def use_is_due(record: ApiKey, *, now: datetime) -> bool:
    """True when `record`'s last_used_at is older than USE_RECORD_INTERVAL (so worth a write)."""
    return record.last_used_at is None or now - record.last_used_at >= USE_RECORD_INTERVAL


def record_use(session: Session, key_id: int, *, now: datetime) -> bool:
    """Set last_used_at to `now` unless it was set within USE_RECORD_INTERVAL; True if it wrote."""
    # The condition is in the UPDATE itself, so concurrent requests with one key write at most once.
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id,
               or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - USE_RECORD_INTERVAL))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount > 0


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.exec(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all())


def revoke(session: Session, prefix: str, *, now: datetime) -> tuple[ApiKey, bool]:
    """Revoke the key with `prefix` (the full key is accepted too); returns it and False if it was already revoked."""
    prefix = prefix.strip()
    parts = prefix.split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_PREFIX:
        prefix = parts[1]
    record = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first() if _PREFIX.fullmatch(prefix) else None
    if record is None:
        raise NotFound(f"no API key with prefix {prefix!r} (see `valuemail api-key list`)")
    if record.revoked_at is not None:
        return record, False
    record.revoked_at = now
    session.add(record)
    session.flush()
    return record, True


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ApiKeyError("an API key needs a name (e.g. the shop or integration that uses it)")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiKeyError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    # Control characters (NUL among them, which PostgreSQL refuses) and lone surrogates (undecodable
    # command-line bytes) have no place in a label shown in lists.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise ApiKeyError("the name contains control characters or invalid text")
    return name
