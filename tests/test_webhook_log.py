"""Retention of the webhook log and the webhook nonces: the scheduler's tick deletes what is too old."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from engine import webhook_log
from engine.db import session_scope
from engine.models import WebhookLog, WebhookNonce
from tests.sending.test_send import cli

NOW = datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc)


def add_log(db, *ages: timedelta) -> None:
    with session_scope(db) as s:
        for age in ages:
            s.add(WebhookLog(provider="postmark", received_at=NOW - age, status="accepted", detail=str(age)))


def log_ages(db) -> list[timedelta]:
    with Session(db) as s:
        return [NOW - at for at in s.execute(select(WebhookLog.received_at).order_by(WebhookLog.id)).scalars()]


def nonces(db) -> list[str]:
    with Session(db) as s:
        return sorted(s.execute(select(WebhookNonce.nonce)).scalars())


def test_the_tick_deletes_log_rows_older_than_log_days_and_expired_nonces(settings, db):
    day = timedelta(days=1)
    add_log(db, 200 * day, 90 * day + timedelta(seconds=1), 90 * day, 89 * day, timedelta(0))
    with session_scope(db) as s:
        s.add(WebhookNonce(provider="ses", nonce="old", seen_at=NOW - 31 * day))
        s.add(WebhookNonce(provider="ses", nonce="recent", seen_at=NOW - 29 * day))

    result = cli(settings, "tick", "--at", NOW.isoformat())
    assert result.exit_code == 0, result.output
    assert "webhooks: deleted 2 webhook log row(s) older than 90 days" in result.output
    assert log_ages(db) == [90 * day, 89 * day, timedelta(0)]
    assert nonces(db) == ["recent"]  # older than the 30 days a nonce is remembered: gone

    # Nothing left to delete: the tick says nothing about it.
    result = cli(settings, "tick", "--at", NOW.isoformat())
    assert result.exit_code == 0 and "webhooks:" not in result.output

    # The retention comes from `[webhooks] log_days`.
    config = Path(settings.source)
    config.write_text(config.read_text() + "[webhooks]\nlog_days = 7\n")
    result = cli(settings, "tick", "--at", NOW.isoformat())
    assert "webhooks: deleted 2 webhook log row(s) older than 7 days" in result.output, result.output
    assert log_ages(db) == [timedelta(0)]


def test_log_days_must_be_positive(settings):
    config = Path(settings.source)
    config.write_text(config.read_text() + "[webhooks]\nlog_days = 0\n")
    result = cli(settings, "tick", "--at", NOW.isoformat())
    assert result.exit_code != 0 and "'webhooks.log_days': Input should be greater than or equal to 1" in result.output


def test_a_purge_call_deletes_one_batch_oldest_first(db):
    day = timedelta(days=1)
    add_log(db, 95 * day, 120 * day, 100 * day, 1 * day)
    with session_scope(db) as s:
        assert webhook_log.purge(s, older_than=90 * day, now=NOW, limit=2) == 2
    assert log_ages(db) == [95 * day, 1 * day]  # the 120 and 100 days old ones, though not the first by id
    with session_scope(db) as s:
        assert webhook_log.purge(s, older_than=90 * day, now=NOW, limit=2) == 1
        assert webhook_log.purge(s, older_than=90 * day, now=NOW, limit=2) == 0
    assert log_ages(db) == [1 * day]
