"""The delivery ledger: filling, claiming, outcomes, crashes — on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.db import session_scope
from engine.models import Contact, Delivery, Run, Worker
from engine.sending import ledger
from tests.support.data import T0, add_contacts

CAMPAIGN = SimpleNamespace(id="c1", name="C1", kind_name="seasonal_discount", values=("economic",), source_hash="x",
                           as_json=lambda: {"file": "c1.toml", "source": ""})


def members(after_id, limit):
    """Every contact, by id: the shape membership_query has."""
    return (select(Contact.id.label("contact_id"), Contact.email, Contact.first_name.label("segment"))
            .where(Contact.id > after_id).order_by(Contact.id).limit(limit))


def new_run(db, occurrence=T0):
    with session_scope(db) as session:
        ledger.sync_campaign(session, CAMPAIGN, now=T0)
        run, created = ledger.create_run(session, CAMPAIGN, occurrence_at=occurrence, now=T0)
    return run.id, created


def test_a_run_is_unique_per_campaign_and_instant(db):
    first, created = new_run(db)
    again, created_again = new_run(db)
    other, _ = new_run(db, T0 + timedelta(minutes=1))
    assert created and not created_again and first == again and other != first


def test_populate_inserts_one_row_per_member_in_batches(db):
    add_contacts(db, 237)
    run_id, _ = new_run(db)
    assert ledger.populate(db, run_id, members_after=members, batch_size=50, now=T0) == 237
    with Session(db) as s:
        assert s.execute(select(func.count(func.distinct(Delivery.contact_id))).where(Delivery.run_id == run_id)).scalar() == 237
        assert s.get(Run, run_id).status == "sending"
    # Filling again is a no-op: the unique (run, contact) key and the run status both guard it.
    assert ledger.populate(db, run_id, members_after=members, batch_size=50, now=T0) == 237


def test_populate_resumes_after_a_crash_without_gaps_or_doubles(db):
    add_contacts(db, 120)
    run_id, _ = new_run(db)
    calls = {"n": 0}

    def crashing(after_id, limit):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed mid-fill")
        return members(after_id, limit)

    with pytest.raises(RuntimeError):
        ledger.populate(db, run_id, members_after=crashing, batch_size=25, now=T0)
    with Session(db) as s:
        assert s.get(Run, run_id).populate_cursor > 0
        assert s.execute(select(func.count()).where(Delivery.run_id == run_id)).scalar() == 50
    assert ledger.populate(db, run_id, members_after=members, batch_size=25, now=T0) == 120


def test_claims_by_concurrent_workers_never_overlap(db):
    add_contacts(db, 400)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=100, now=T0)
    taken: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def work(name):
        barrier.wait()
        mine = taken.setdefault(name, [])
        while ids := ledger.claim(db, run_id=run_id, worker_id=name, limit=7, now=T0):
            mine.extend(ids)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == 400 and len(set(every)) == 400
    with Session(db) as s:
        assert ledger.counts(s, run_id)["claimed"] == 400


def test_claim_takes_only_due_rows_of_a_sending_run(db):
    add_contacts(db, 3)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=10, now=T0)
    ids = ledger.claim(db, run_id=run_id, worker_id="w", limit=1, now=T0)
    ledger.record_failure(db, ids[0], worker_id="w", provider="smtp", error="451 later", now=T0,
                          retry_at=T0 + timedelta(minutes=5), max_attempts=3)
    assert len(ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0)) == 2
    assert ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0 + timedelta(minutes=4)) == []
    assert ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0 + timedelta(minutes=5)) == ids
    ledger.release(db, "w", ids)
    assert ledger.pause(db, run_id, reason="test")
    assert ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0 + timedelta(hours=1)) == []
    assert ledger.resume(db, run_id)
    assert ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0 + timedelta(hours=1)) == ids


def test_outcomes_are_recorded_and_the_run_finishes(db):
    add_contacts(db, 3)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=10, now=T0)
    a, b, c = ledger.claim(db, run_id=run_id, worker_id="w", limit=10, now=T0)
    assert ledger.record_sent(db, a, worker_id="w", provider="smtp", provider_message_id="p1", message_id="<m1@x>", now=T0)
    assert ledger.record_failure(db, b, worker_id="w", provider="smtp", error="550 no such user", now=T0,
                                 retry_at=None, max_attempts=3) == "failed"
    assert ledger.record_failure(db, c, worker_id="w", provider="smtp", error="451 later", now=T0,
                                 retry_at=T0, max_attempts=1) == "failed"
    assert not ledger.record_sent(db, a, worker_id="w", provider="smtp", provider_message_id="p1",
                                  message_id="<m1@x>", now=T0), "an outcome is recorded once"
    assert ledger.finish_if_done(db, run_id, now=T0)
    with Session(db) as s:
        rows = {d.id: d for d in s.execute(select(Delivery).where(Delivery.run_id == run_id)).scalars()}
        assert rows[a].status == "sent" and rows[a].attempts == 1 and rows[a].message_id == "<m1@x>"
        assert rows[b].last_error == "550 no such user"
        assert "gave up after 1 attempts" in rows[c].last_error
        assert s.get(Run, run_id).status == "finished"


def test_claims_of_a_killed_worker_are_requeued_but_a_live_ones_are_not(db):
    add_contacts(db, 10)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=10, now=T0)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with session_scope(db) as s:
        s.add(Worker(id="dead", hostname=os.uname().nodename, pid=dead.pid, started_at=T0, heartbeat_at=T0))
        s.add(Worker(id="alive", hostname=os.uname().nodename, pid=os.getpid(), started_at=T0, heartbeat_at=T0))
    ledger.claim(db, run_id=run_id, worker_id="dead", limit=4, now=T0)
    ledger.claim(db, run_id=run_id, worker_id="alive", limit=3, now=T0)
    ledger.claim(db, run_id=run_id, worker_id="ghost", limit=1, now=T0)  # never registered
    assert ledger.reclaim_dead_workers(db, now=T0, lease_seconds=60) == 5
    with Session(db) as s:
        assert ledger.counts(s, run_id) == {"queued": 7, "claimed": 3, "sent": 0, "failed": 0, "skipped": 0, "uncertain": 0}
    # A worker that stopped heartbeating past the lease is presumed dead wherever it runs.
    assert ledger.reclaim_dead_workers(db, now=T0 + timedelta(seconds=61), lease_seconds=60) == 3


def test_a_killed_worker_not_yet_reaped_is_dead(db):
    """A sending process killed with its parent stays a zombie until init reaps it: its claims go back."""
    add_contacts(db, 3)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=10, now=T0)
    zombie = subprocess.Popen(["true"])
    with open(f"/proc/{zombie.pid}/stat", "rb") as fh:  # wait, without reaping, until it has exited
        while fh.seek(0) == 0 and b") Z " not in fh.read():
            time.sleep(0.01)
    try:
        with session_scope(db) as s:
            s.add(Worker(id="zombie", hostname=os.uname().nodename, pid=zombie.pid, started_at=T0, heartbeat_at=T0))
        ledger.claim(db, run_id=run_id, worker_id="zombie", limit=2, now=T0)
        assert ledger.reclaim_dead_workers(db, now=T0, lease_seconds=60) == 2
    finally:
        zombie.wait()


def test_cancel_skips_queued_rows_leaves_claimed_and_sent_ones_and_stops_claims(db):
    add_contacts(db, 4)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=10, now=T0)
    a, b = ledger.claim(db, run_id=run_id, worker_id="w", limit=2, now=T0)
    ledger.record_sent(db, a, worker_id="w", provider="smtp", provider_message_id="p", message_id="<m@x>", now=T0)
    assert ledger.cancel(db, run_id, now=T0, reason="cancelled by a@x") == 2
    assert ledger.cancel(db, run_id, now=T0, reason="again") is None, "a cancelled run stays as it is"
    assert not ledger.resume(db, run_id)
    with Session(db) as s:
        statuses = {d.id: d.status for d in s.execute(select(Delivery).where(Delivery.run_id == run_id)).scalars()}
        run = s.get(Run, run_id)
    assert statuses[a] == "sent" and statuses[b] == "claimed"
    assert sorted(v for k, v in statuses.items() if k not in (a, b)) == ["skipped", "skipped"]
    assert run.status == "cancelled" and run.finished_at is not None
    assert ledger.claim(db, run_id=run_id, worker_id="w2", limit=10, now=T0) == []
