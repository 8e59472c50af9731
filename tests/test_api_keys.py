"""engine.api_keys: keys created once, stored hashed, verified, used, listed and revoked."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine import api_keys
from engine.api_keys import ApiKeyError, InvalidApiKey
from engine.db import session_scope
from engine.errors import NotFound
from engine.models import ApiKey

T0 = datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc)


def _create(db, name: str = "shop", now: datetime = T0) -> api_keys.NewApiKey:
    with session_scope(db) as s:
        return api_keys.create(s, name, now=now)


def test_create_returns_the_key_once_and_stores_only_its_hash(db):
    new = _create(db, "  web shop  ")
    kind, prefix, secret = new.key.split("_", 2)
    assert kind == "vm" and len(prefix) == 8 and len(secret) >= 43
    assert new.record.prefix == prefix and new.record.name == "web shop"
    with Session(db) as s:
        (row,) = s.execute(select(ApiKey)).scalars().all()
        stored = [str(value) for value in s.execute(select(ApiKey.__table__)).one()]
    assert row.key_hash == hashlib.sha256(new.key.encode()).hexdigest()
    assert row.created_at == T0 and row.last_used_at is None and row.revoked_at is None
    # Neither the key nor its secret appears in any column.
    assert not any(new.key in value or secret in value for value in stored)


def test_every_key_is_different(db):
    first, second = _create(db, "a"), _create(db, "b")
    assert first.key != second.key and first.record.prefix != second.record.prefix


def test_verify_accepts_the_key_and_refuses_everything_else(db):
    new = _create(db)
    prefix, secret = new.record.prefix, new.key.split("_", 2)[2]
    # Built to differ from the real ones whatever random digits they have (a prefix may be all
    # decimal, so prefix.upper() can equal it; 43 base64url characters lack a letter with chance 1e-31).
    other_prefix = "".join("1" if c == "0" else "0" for c in prefix)
    other_case = secret.swapcase()
    assert other_prefix != prefix and other_case != secret
    with Session(db) as s:
        assert api_keys.verify(s, new.key).id == new.record.id
        for wrong in [None, "", "vm", "vm__", f"vm_{prefix}_", f"xx_{prefix}_secret", f"vm_{prefix}_wrong",
                      new.key + "x", new.key[:-1], f"vm_{other_prefix}_{secret}",
                      f"vm_{prefix}_\x00", f"vm_{prefix}_{other_case}", f"VM_{prefix}_{secret}",
                      f"vm_\x00{prefix[1:]}_x", "vm_" + "a" * 500]:
            with pytest.raises(InvalidApiKey):
                api_keys.verify(s, wrong)


def test_a_revoked_key_is_refused_and_revoking_twice_is_harmless(db):
    new = _create(db)
    with session_scope(db) as s:
        record, changed = api_keys.revoke(s, new.record.prefix, now=T0 + timedelta(hours=1))
    assert changed and record.revoked_at == T0 + timedelta(hours=1)
    with Session(db) as s:
        with pytest.raises(InvalidApiKey, match="revoked"):
            api_keys.verify(s, new.key)
    with session_scope(db) as s:
        record, changed = api_keys.revoke(s, new.key, now=T0 + timedelta(hours=2))  # the whole key works too
    assert not changed and record.revoked_at == T0 + timedelta(hours=1)


def test_revoking_an_unknown_prefix_is_not_found(db):
    _create(db)
    with session_scope(db) as s:
        with pytest.raises(NotFound, match="no API key with prefix"):
            api_keys.revoke(s, "deadbeef", now=T0)
        with pytest.raises(NotFound):
            api_keys.revoke(s, "  ", now=T0)


def test_use_is_recorded_at_most_once_a_minute(db):
    new = _create(db)
    with session_scope(db) as s:
        assert api_keys.record_use(s, new.record.id, now=T0)
        assert not api_keys.record_use(s, new.record.id, now=T0 + timedelta(seconds=59))
        assert api_keys.record_use(s, new.record.id, now=T0 + timedelta(seconds=60))
    with Session(db) as s:
        record = s.get(ApiKey, new.record.id)
    assert record.last_used_at == T0 + timedelta(seconds=60)
    assert not api_keys.use_is_due(record, now=T0 + timedelta(seconds=90))
    assert api_keys.use_is_due(record, now=T0 + timedelta(seconds=120))


def test_list_shows_every_key_oldest_first(db):
    _create(db, "second", now=T0 + timedelta(days=1))
    first = _create(db, "first")
    with session_scope(db) as s:
        api_keys.revoke(s, first.record.prefix, now=T0 + timedelta(days=2))
    with Session(db) as s:
        keys = api_keys.list_keys(s)
    assert [(k.name, k.revoked_at is not None) for k in keys] == [("first", True), ("second", False)]


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "tab\there", "nul\x00", "bad\udcff"])
def test_bad_names_are_refused(db, name):
    with session_scope(db) as s:
        with pytest.raises(ApiKeyError):
            api_keys.create(s, name, now=T0)
    with Session(db) as s:
        assert api_keys.list_keys(s) == []
