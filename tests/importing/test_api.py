"""The row-level API the REST API and the demo use: dicts in, ImportResult out, caller's transaction."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from engine.db import session_scope
from engine.importing import StrictImportFailed, upsert_contacts, upsert_events, upsert_orders

from .conftest import contact, snapshot, tags_of


def test_upsert_dicts_with_native_types(db, settings, clock):
    with session_scope(db) as session:
        result = upsert_contacts(session, [
            {"email": "Api@Example.com", "first_name": "Api", "tags": ["VIP", "b2b"],
             "attributes": {"plan": "pro", "seats": 5}, "created_at": datetime(2026, 5, 1, tzinfo=timezone.utc)},
            {"email": "nope"},
        ], settings=settings, clock=clock)
        assert (result.inserted, result.rejected) == (1, 1)
        assert result.rejects[0].line == 2 and result.rejects[0].reason.startswith("invalid email")
        orders = upsert_orders(session, [
            {"order_id": "API-1", "email": "api@example.com", "placed_at": datetime(2026, 6, 1, 12, tzinfo=timezone.utc),
             "total": Decimal("19.90"), "margin": 0.4},
            {"order_id": "API-2", "email": "api@example.com", "placed_at": "2026-06-02", "total": 12.5},
        ], settings=settings, clock=clock)
        assert (orders.inserted, orders.rejected) == (2, 0)
        events = upsert_events(session, [
            {"email": "api@example.com", "type": "trial_started", "occurred_at": "2026-06-01T10:00Z",
             "data": {"plan": "pro"}},
        ], settings=settings, clock=clock)
        assert events.inserted == 1
    stored = contact(db, "api@example.com")
    assert stored.email == "Api@example.com" and stored.attributes == {"plan": "pro", "seats": "5"}
    assert stored.created_at == datetime(2026, 5, 1, tzinfo=timezone.utc)
    assert tags_of(db, "api@example.com") == {"vip", "b2b"}


def test_missing_keys_are_absent_columns(db, settings, clock):
    with session_scope(db) as session:
        upsert_contacts(session, [{"email": "k@example.com", "first_name": "K", "country": "NL", "tags": "a"}],
                        settings=settings, clock=clock)
    with session_scope(db) as session:
        result = upsert_contacts(session, [{"email": "k@example.com", "last_name": "Keep"}], settings=settings, clock=clock)
    assert result.updated == 1
    stored = contact(db, "k@example.com")
    assert (stored.first_name, stored.last_name, stored.country) == ("K", "Keep", "NL")
    assert tags_of(db, "k@example.com") == {"a"}


def test_strict_raises_and_the_callers_transaction_rolls_back(db, settings, clock):
    before = snapshot(db)
    with pytest.raises(StrictImportFailed) as exc:
        with session_scope(db) as session:
            upsert_contacts(session, [{"email": "fine@example.com"}, {"email": "x@example.com", "country": "ZZ"}],
                            settings=settings, clock=clock, strict=True)
    assert exc.value.result.rejected == 1 and exc.value.result.inserted == 1
    assert snapshot(db) == before


def test_allow_resubscribe_is_explicit(db, settings, clock):
    with session_scope(db) as session:
        upsert_contacts(session, [{"email": "u@example.com", "status": "unsubscribed"}], settings=settings, clock=clock)
    with session_scope(db) as session:
        upsert_contacts(session, [{"email": "u@example.com", "status": "subscribed"}], settings=settings, clock=clock)
    assert contact(db, "u@example.com").status == "unsubscribed"
    with session_scope(db) as session:
        upsert_contacts(session, [{"email": "u@example.com", "status": "subscribed"}], settings=settings, clock=clock,
                        allow_resubscribe=True)
    assert contact(db, "u@example.com").status == "subscribed"


# The index-lookup setting exists only on PostgreSQL, so this runs there alone.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_callers_transaction_keeps_its_planner_settings(db, settings, clock):
    with session_scope(db) as session:
        upsert_contacts(session, [{"email": "p@example.com"}], settings=settings, clock=clock)
        assert session.connection().exec_driver_sql("SHOW enable_seqscan").scalar_one() == "on"
