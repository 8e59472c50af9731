"""Group commits: outcomes are written many per transaction, every N outcomes or T milliseconds."""

from __future__ import annotations

import threading

from sqlalchemy import event, func, select
from sqlmodel import Session

from engine.models import Delivery
from engine.sending import ledger
from engine.sending.ledger import Change, Outcome
from engine.sending.recorder import Recorder
from tests.sending.test_ledger import members, new_run
from tests.support.data import T0, add_contacts

WAIT = 30  # seconds an event may take on a loaded machine; never a timing assertion


def claimed(db, n):
    add_contacts(db, n)
    run_id, _ = new_run(db)
    ledger.populate(db, run_id, members_after=members, batch_size=100, now=T0)
    return run_id, ledger.claim(db, run_id=run_id, worker_id="w", limit=n, now=T0)


def sent(ids):
    return [Outcome(d, Change.sent, T0, provider="smtp", message_id=f"<{d}@x>") for d in ids]


def statuses(db, run_id):
    with Session(db) as s:
        return dict(s.execute(select(Delivery.status, func.count()).where(Delivery.run_id == run_id)
                              .group_by(Delivery.status)).all())


class Commits:
    """Counts the transactions the recorder commits; `wait_for(n)` blocks until n have."""

    def __init__(self, db):
        self.count = 0
        self._cond = threading.Condition()
        event.listen(db, "commit", self._on_commit)
        self.db = db

    def _on_commit(self, _conn):
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= n, timeout=WAIT)

    def remove(self):
        event.remove(self.db, "commit", self._on_commit)


def test_outcomes_are_committed_together_once_n_are_waiting(db):
    run_id, ids = claimed(db, 10)
    commits = Commits(db)
    seen = []
    recorder = Recorder(engine=db, worker_id="w", every=5, seconds=3600, on_commit=seen.append)
    try:
        recorder.add(run_id, sent(ids[:4]))
        recorder.add(run_id, sent(ids[4:5]))  # the fifth: one transaction for all five
        assert commits.wait_for(1)
        assert statuses(db, run_id) == {"sent": 5, "claimed": 5} and [len(b) for b in seen] == [5]
        recorder.add(run_id, sent(ids[5:9]))  # four wait: below N, and T is an hour
        assert recorder.uncommitted() == 4
    finally:
        recorder.close()  # closing commits what waits
        commits.remove()
    assert statuses(db, run_id) == {"sent": 9, "claimed": 1}
    assert commits.count == 2 and [len(b) for b in seen] == [5, 4]


def test_a_lone_outcome_is_committed_after_t_milliseconds(db):
    run_id, ids = claimed(db, 3)
    commits = Commits(db)
    recorder = Recorder(engine=db, worker_id="w", every=1000, seconds=0.05, on_commit=lambda batch: None)
    try:
        recorder.add(run_id, sent(ids[:1]))
        assert commits.wait_for(1)  # nobody closed the recorder or added more: the interval did it
        assert statuses(db, run_id) == {"sent": 1, "claimed": 2}
    finally:
        recorder.close()
        commits.remove()


def test_one_group_commit_writes_every_kind_of_outcome(db):
    run_id, ids = claimed(db, 6)
    later = T0.replace(hour=10)
    assert ledger.record(db, "w", [
        Outcome(ids[0], Change.sent, T0, provider="smtp", provider_message_id="p0", message_id="<0@x>"),
        Outcome(ids[1], Change.uncertain, T0, provider="smtp", message_id="<1@x>", error="no reply"),
        ledger.failed_attempt(ids[2], attempts=0, max_attempts=3, error="451 later", retry_at=later, at=T0,
                              provider="smtp", message_id="<2@x>"),
        ledger.failed_attempt(ids[3], attempts=2, max_attempts=3, error="451 later", retry_at=later, at=T0,
                              provider="smtp"),
        Outcome(ids[4], Change.skipped, T0, error="frequency cap"),
        Outcome(ids[5], Change.deferred, T0, retry_at=later, error="smtp asked us to wait"),
    ]) == 6
    with Session(db) as s:
        rows = {d.id: d for d in s.execute(select(Delivery).where(Delivery.run_id == run_id)).scalars()}
    r = [rows[i] for i in ids]
    assert (r[0].status, r[0].attempts, r[0].provider_message_id, r[0].claimed_by) == ("sent", 1, "p0", None)
    assert (r[1].status, r[1].attempts, r[1].last_error) == ("uncertain", 1, "no reply")
    assert (r[2].status, r[2].attempts, r[2].next_attempt_at) == ("queued", 1, later)
    assert (r[3].status, r[3].attempts, r[3].last_error) == ("failed", 1, "451 later (gave up after 3 attempts)")
    assert (r[4].status, r[4].attempts, r[4].last_error) == ("skipped", 0, "frequency cap")
    assert (r[5].status, r[5].attempts, r[5].next_attempt_at) == ("queued", 0, later)


def test_an_outcome_for_a_claim_taken_away_changes_nothing(db):
    run_id, ids = claimed(db, 2)
    assert ledger.record(db, "someone-else", sent(ids)) == 0
    assert statuses(db, run_id) == {"claimed": 2}


def test_back_pressure_holds_the_sender_until_the_outcomes_are_committed(db):
    run_id, ids = claimed(db, 4)
    gate = threading.Event()
    recorder = Recorder(engine=db, worker_id="w", every=2, seconds=3600, on_commit=lambda batch: gate.wait(WAIT))
    stop = threading.Event()
    try:
        recorder.add(run_id, sent(ids[:1]))
        recorder.wait_for_room(stop)  # one of two: room
        recorder.add(run_id, sent(ids[1:2]))
        # Two are waiting: the sender would wait here; the writer commits them, then there is room.
        recorder.wait_for_room(stop)
        assert recorder.uncommitted() == 0 and statuses(db, run_id) == {"sent": 2, "claimed": 2}
    finally:
        gate.set()
        recorder.close()
