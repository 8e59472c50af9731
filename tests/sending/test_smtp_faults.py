"""A misbehaving SMTP server against the real sending path: nothing lost, nothing sent twice.

One run, one recipient per fault. The server (tests/support/smtpd.py) answers each address its
own way: every reply class at RCPT and at the end of DATA, dropped connections at each stage, a
server slower than the timeout. `valuemail send` drains the ledger with retries, on SQLite and
PostgreSQL; then every delivery must be sent (and at the server exactly once), failed with the
server's reason, or uncertain with its reason (at the server at most once, never resent).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.models import Delivery, Run
from tests.conftest import write_settings
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts
from tests.support.smtpd import Fault, SmtpSink

AGAIN = "try again in 1 second"  # a 421 without a delay would hold the whole provider for a minute

#: address -> (fault, expected final status, expected reason fragment, expected copies at the server)
CASES = {
    "ok": (None, "sent", None, 1),
    "rcpt-421-once": (Fault(f"rcpt:421 4.7.0 too fast, {AGAIN}", times=1), "sent", None, 1),
    "rcpt-450-once": (Fault("rcpt:450 4.2.1 mailbox busy", times=1), "sent", None, 1),
    "rcpt-451-always": (Fault("rcpt:451 4.3.0 local error"), "failed", "451 4.3.0 local error (gave up after 3", 0),
    "rcpt-452-once": (Fault("rcpt:452 4.2.2 mailbox full", times=1), "sent", None, 1),
    "rcpt-550": (Fault("rcpt:550 5.1.1 no such user"), "failed", "550 5.1.1 no such user", 0),
    "rcpt-552-once": (Fault("rcpt:552 5.2.2 over quota", times=1), "sent", None, 1),
    "rcpt-554": (Fault("rcpt:554 5.7.1 relay denied"), "failed", "554 5.7.1 relay denied", 0),
    "data-421-once": (Fault(f"data:421 4.7.0 too fast, {AGAIN}", times=1), "sent", None, 1),
    "data-450-twice": (Fault("data:450 4.7.1 greylisted", times=2), "sent", None, 1),
    "data-451-once": (Fault("data:451 4.3.0 try again later", times=1), "sent", None, 1),
    "data-452-always": (Fault("data:452 4.3.1 storage"), "failed", "452 4.3.1 storage (gave up after 3", 0),
    "data-550": (Fault("data:550 5.7.1 content rejected"), "failed", "550 5.7.1 content rejected", 0),
    "data-552-always": (Fault("data:552 5.3.4 too big"), "failed", "552 5.3.4 too big (gave up after 3", 0),
    "data-554": (Fault("data:554 5.7.1 spam"), "failed", "554 5.7.1 spam", 0),
    "drop-at-rcpt-once": (Fault("drop:rcpt", times=1), "sent", None, 1),
    "drop-after-rcpt-once": (Fault("drop:data-command", times=1), "sent", None, 1),
    "drop-during-data": (Fault("drop:during-data"), "uncertain", "no reply to the end of the message", 0),
    "drop-after-dot-kept": (Fault("drop:after-dot"), "uncertain", "no reply to the end of the message", 1),
    "drop-after-dot-lost": (Fault("drop:after-dot-lost"), "uncertain", "no reply to the end of the message", 0),
    "drop-after-accept": (Fault("drop:after-accept"), "sent", None, 1),
    "slow-data": (Fault("slow:6"), "uncertain", "timed out", 1),
    "slow-rcpt-once": (Fault("slow-rcpt:6", times=1), "sent", None, 1),
}


@pytest.fixture(params=[False, True], ids=["lock-step", "pipelined"])
def faulty_run(request, project, database_url):
    """The faulty server, offering PIPELINING (RFC 2920) or not: every rule holds either way."""
    only_spring_sale(project)
    with SmtpSink(pipelining=request.param) as sink:
        settings = write_settings(
            project, database_url,
            # One sending process: the pool limits asserted below are per process.
            sending={"concurrency": 3, "batch_size": 5, "max_attempts": 3, "retry_base_seconds": 0.05,
                     "retry_max_seconds": 1.0, "pause_after_errors": 0, "processes": 1},
            extra=f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\ntimeout = 3\npool_size = 2\n')
        yield settings, sink


def add_recipients(settings, names):
    from engine.db import make_engine

    engine = make_engine(settings.database_url)
    for i, name in enumerate(names):
        add_contacts(engine, 1, start=i, domain="faults.example", email=f"{name}@faults.example",
                     email_key=f"{name}@faults.example")
    return engine


def test_every_message_ends_delivered_once_failed_or_uncertain_with_its_reason(faulty_run):
    settings, sink = faulty_run
    for name, (fault, *_) in CASES.items():
        if fault is not None:
            sink.handler.faults[f"{name}@faults.example"] = fault
    engine = add_recipients(settings, CASES)
    try:
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        with Session(engine) as session:
            rows = {d.email.split("@")[0]: d for d in session.execute(select(Delivery)).scalars()}
            run = session.execute(select(Run)).scalars().one()
    finally:
        engine.dispose()
    at_server = sink.handler.count_at_server()
    assert run.status == "finished" and set(rows) == set(CASES)
    for name, (_, status, reason, copies) in CASES.items():
        row = rows[name]
        assert row.status == status, (name, row.status, row.last_error)
        assert at_server.get(row.message_id, 0) == copies, name
        if status == "sent":
            assert row.last_error is None and row.provider == "smtp", name
        else:
            assert reason in row.last_error, (name, row.last_error)
    # Retried as promised: a fault on the first attempt only costs exactly one more attempt.
    assert rows["rcpt-450-once"].attempts == 2 and rows["data-450-twice"].attempts == 3
    assert rows["rcpt-550"].attempts == 1 and rows["rcpt-451-always"].attempts == 3
    # Nothing was delivered twice, and nothing arrived that the ledger does not know of.
    assert max(at_server.values()) == 1
    assert set(at_server) <= {row.message_id for row in rows.values()}
    # The pool never went above its size, however the faults closed connections.
    assert sink.handler.max_open <= 2


def test_sending_threads_share_the_pool_and_it_closes_at_the_end(project, database_url):
    only_spring_sale(project)
    with SmtpSink() as sink:
        settings = write_settings(
            project, database_url, sending={"concurrency": 4, "batch_size": 10, "processes": 1},
            extra=(f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\ntimeout = 5\npool_size = 2\n'
                   'max_messages_per_connection = 15\n'))
        engine = add_recipients(settings, [f"r{i}" for i in range(62)])
        engine.dispose()
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        assert "sent 62" in result.output
        handler = sink.handler
        assert handler.open_now == 0  # the last thread out closed the pool
    assert len(handler.count_at_server()) == 62 and max(handler.count_at_server().values()) == 1
    # Four threads, at most two connections at a time, each retired after 15 messages; every one
    # ended with QUIT (retired, or closed with the pool at the end), none was just dropped.
    assert handler.max_open == 2 and max(handler.per_connection) == 15 and sum(handler.per_connection) == 62
    assert len(handler.per_connection) >= 5 and handler.quits == len(handler.per_connection)
