"""The delivery ledger: runs, their per-contact rows, claiming in batches and every outcome.

Guarantees, on SQLite and PostgreSQL alike:
- a run is unique per (campaign, occurrence instant), a delivery per (run, contact);
- filling the ledger is checkpointed by contact id, so a crash mid-fill resumes without gaps;
- a claim is one atomic UPDATE ... RETURNING (PostgreSQL adds FOR UPDATE SKIP LOCKED), so two
  workers never hold the same row;
- outcomes are written in group commits (`record`); a sending process keeps fewer than
  `[sending] commit_every` of them uncommitted before it hands its next batch to the provider, so
  after a crash only messages the provider accepted and whose outcome was not yet committed can be
  sent twice (`bounds.duplicate_bound`).
"""

from __future__ import annotations

import os
import socket
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from sqlalchemy import and_, bindparam, delete, func, literal, or_, select, true, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..db import among, session_scope, upsert_insert
from ..models import (
    OPEN_RUN_STATUSES,
    Campaign,
    Delivery,
    DeliveryStatus,
    Run,
    RunStatus,
    Worker,
)

Q = DeliveryStatus


# -- campaigns and runs -------------------------------------------------------------------------

def sync_campaign(session: Session, campaign, *, now: datetime) -> None:
    """Store (or refresh) the campaign row from its file."""
    values = dict(name=campaign.name, kind=campaign.kind_name, values=list(campaign.values),
                  definition=campaign.as_json(), source_hash=campaign.source_hash, synced_at=now)
    stmt = upsert_insert(session, Campaign).values(id=campaign.id, first_seen_at=now, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


def first_seen(session: Session, campaign, *, now: datetime) -> datetime:
    """When this campaign was first stored (now, for a file seen for the first time)."""
    stmt = upsert_insert(session, Campaign).values(
        id=campaign.id, name=campaign.name, kind=campaign.kind_name, values=list(campaign.values),
        definition=campaign.as_json(), source_hash=campaign.source_hash, synced_at=now, first_seen_at=now,
    ).on_conflict_do_nothing(index_elements=["id"])
    session.execute(stmt)
    seen = session.execute(select(Campaign.first_seen_at).where(Campaign.id == campaign.id)).scalar()
    return seen or now


def open_run(session: Session, campaign_id: str, *, is_test: bool = False) -> Run | None:
    """The campaign's run that is still being filled, sending or paused, if any."""
    return session.execute(
        select(Run).where(Run.campaign_id == campaign_id, Run.is_test == is_test, Run.transactional.is_(False),
                          Run.status.in_(OPEN_RUN_STATUSES + (RunStatus.paused.value,)))
        .order_by(Run.id.desc()).limit(1)
    ).scalars().first()


def last_finished_run(session: Session, campaign_id: str) -> Run | None:
    """The campaign's most recent finished, non-test run."""
    return session.execute(
        select(Run).where(Run.campaign_id == campaign_id, Run.is_test.is_(False), Run.transactional.is_(False),
                          Run.status == RunStatus.finished.value)
        .order_by(Run.id.desc()).limit(1)
    ).scalars().first()


def create_run(session: Session, campaign, *, occurrence_at: datetime, now: datetime, is_test: bool = False,
               transactional: bool = False) -> tuple[Run, bool]:
    """The run for (campaign, occurrence): created now, or the existing one. Returns (run, created).

    `transactional` runs carry mail a recipient asked for (e.g. a contest win) and are exempt
    from the frequency cap.
    """
    stmt = upsert_insert(session, Run).values(
        campaign_id=campaign.id, occurrence_at=occurrence_at, status=RunStatus.populating.value, is_test=is_test,
        transactional=transactional,
        definition=campaign.as_json(), populate_cursor=0, total=0, pause_reason="", created_at=now,
    ).on_conflict_do_nothing(index_elements=["campaign_id", "occurrence_at"]).returning(Run.id)
    created = session.execute(stmt).scalar() is not None
    run = session.execute(select(Run).where(Run.campaign_id == campaign.id, Run.occurrence_at == occurrence_at)).scalars().one()
    return run, created


# -- filling the ledger ---------------------------------------------------------------------------

def populate(engine: Engine, run_id: int, *, members_after, batch_size: int, now: datetime) -> int:
    """Insert the run's deliveries in contact-id batches from `members_after(after_id, limit)`.

    `members_after` returns a Select of (contact_id, email, segment) ordered by contact id. Each
    batch and the cursor advance commit together, so a crash resumes exactly where it stopped.
    Returns the number of deliveries in the run.
    """
    ts = Delivery.__table__.c.created_at.type
    while True:
        with session_scope(engine) as session:
            run = session.get(Run, run_id)
            if run.status != RunStatus.populating.value:
                return run.total
            batch = members_after(run.populate_cursor, batch_size).subquery()
            # WHERE true: SQLite would otherwise read INSERT ... SELECT ... ON CONFLICT as a join.
            rows = select(literal(run_id), batch.c.contact_id, batch.c.email, batch.c.segment,
                          literal(Q.queued.value), literal(0), bindparam("created", now, type_=ts),
                          bindparam("updated", now, type_=ts)).where(true())
            stmt = (upsert_insert(session, Delivery)
                    .from_select(["run_id", "contact_id", "email", "segment", "status", "attempts",
                                  "created_at", "updated_at"], rows)
                    .on_conflict_do_nothing(index_elements=["run_id", "contact_id"])
                    .returning(Delivery.contact_id))
            inserted = session.execute(stmt).scalars().all()
            last_id = max(inserted) if inserted else session.execute(select(func.max(batch.c.contact_id))).scalar()
            if last_id is not None:
                run.populate_cursor = last_id
            else:
                run.total = session.execute(select(func.count()).where(Delivery.run_id == run_id)).scalar()
                run.status = RunStatus.sending.value
                run.started_at = run.started_at or now
            session.add(run)


def add_test_deliveries(session: Session, run: Run, picks: Iterable[tuple[int, str, dict]], *, to: str,
                        now: datetime) -> int:
    """Ledger rows of a test run: one per (contact, segment, trigger data) pick, all addressed to `to`."""
    count = 0
    for contact_id, segment, data in picks:
        session.add(Delivery(run_id=run.id, contact_id=contact_id, email=to, segment=segment, data=data,
                             status=Q.queued.value, attempts=0, created_at=now, updated_at=now))
        count += 1
    run.total = count
    run.status = RunStatus.sending.value
    run.started_at = now
    session.add(run)
    return count


# -- workers and claims --------------------------------------------------------------------------

def register_worker(engine: Engine, worker_id: str, *, now: datetime) -> None:
    """Record this worker and its first heartbeat."""
    with session_scope(engine) as session:
        session.add(Worker(id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), started_at=now, heartbeat_at=now))


def heartbeat(engine: Engine, worker_id: str, *, now: datetime) -> None:
    """Tell other processes this worker is alive."""
    with engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now))


def unregister_worker(engine: Engine, worker_id: str) -> int:
    """Put this worker's unfinished claims back in the queue and forget it."""
    with session_scope(engine) as session:
        released = _release_claims(session, [worker_id])
        session.execute(delete(Worker).where(Worker.id == worker_id))
    return released


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed process stays a zombie until its parent reaps it: dead all the same. (A helper
        # whose `valuemail send` was killed with it waits for init to reap it.)
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def reclaim_dead_workers(engine: Engine, *, now: datetime, lease_seconds: float, self_id: str | None = None) -> int:
    """Requeue the claims of workers that stopped heartbeating, or whose process on this host is gone.

    A claimed row of a dead worker was either never attempted or was the one message that worker
    thread had in flight when it died; requeueing resends only the latter (see README, "Crashes").
    """
    host = socket.gethostname()
    with session_scope(engine) as session:
        workers = session.execute(select(Worker)).scalars().all()
        dead = [w.id for w in workers if w.id != self_id and (
            w.heartbeat_at < now - timedelta(seconds=lease_seconds) or (w.hostname == host and not _pid_alive(w.pid)))]
        # Claims by workers that left no row at all (e.g. killed before registering) are orphans too.
        live = {w.id for w in workers} - set(dead)
        orphan_ids = session.execute(
            select(Delivery.claimed_by).where(Delivery.status == Q.claimed.value).distinct()
        ).scalars().all()
        dead += [w for w in orphan_ids if w and w not in live and w != self_id and w not in dead]
        if not dead:
            return 0
        released = _release_claims(session, dead)
        session.execute(delete(Worker).where(Worker.id.in_(dead)))
        return released


def _release_claims(session, worker_ids: Sequence[str], delivery_ids: Sequence[int] | None = None) -> int:
    stmt = update(Delivery).where(Delivery.status == Q.claimed.value, Delivery.claimed_by.in_(worker_ids))
    if delivery_ids is not None:
        stmt = stmt.where(among(Delivery.id, delivery_ids))
    return session.execute(stmt.values(status=Q.queued.value, claimed_by=None, claimed_at=None)).rowcount


def release(engine: Engine, worker_id: str, delivery_ids: Sequence[int]) -> int:
    """Give claimed rows back to the queue untouched (e.g. the run was paused mid-batch)."""
    now = datetime.now(timezone.utc)
    return record(engine, worker_id, [Outcome(d, Change.released, now) for d in delivery_ids])


def claim(engine: Engine, *, run_id: int, worker_id: str, limit: int, now: datetime) -> list[int]:
    """Atomically take up to `limit` due rows of a sending run for `worker_id`; returns their ids in order."""
    with session_scope(engine) as session:
        due = (
            select(Delivery.id)
            .where(Delivery.run_id == run_id, Delivery.status == Q.queued.value,
                   or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))
            .order_by(Delivery.id)
            .limit(limit)
        )
        running = select(Run.id).where(Run.id == run_id, Run.status == RunStatus.sending.value)
        if session.get_bind().dialect.name == "postgresql":
            # A MATERIALIZED CTE runs the locking subquery once; inlined into IN (...) PostgreSQL
            # may re-run it per row, and with SKIP LOCKED each run can yield other rows, past LIMIT.
            due = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
            chosen = select(due.c.id)
        else:
            chosen = due
        stmt = (
            update(Delivery)
            .where(Delivery.id.in_(chosen.scalar_subquery()), Delivery.run_id.in_(running.scalar_subquery()))
            .values(status=Q.claimed.value, claimed_by=worker_id, claimed_at=now, updated_at=now)
            .returning(Delivery.id)
        )
        return sorted(session.execute(stmt).scalars().all())


# -- outcomes -----------------------------------------------------------------------------------

class Change(str, enum.Enum):
    """What an outcome does to a claimed delivery row."""

    sent = "sent"  # the provider accepted it
    uncertain = "uncertain"  # it went out whole, the answer was lost: never requeued automatically
    attempt_failed = "attempt_failed"  # an attempt failed: requeued for `retry_at`, or failed for good
    skipped = "skipped"  # not to be sent (unsubscribed, suppressed, opted out, capped)
    deferred = "deferred"  # its provider asked us to wait: requeued for `retry_at`, no attempt counted
    released = "released"  # given back to the queue untouched


@dataclass(frozen=True)
class Outcome:
    """One delivery's outcome, written with many others in one transaction (`record`)."""

    delivery_id: int
    change: Change
    at: datetime
    provider: str | None = None
    provider_message_id: str | None = None
    message_id: str | None = None
    error: str | None = None
    retry_at: datetime | None = None  # attempt_failed: None means failed for good; deferred: when

    @property
    def status(self) -> str:
        """The row's status once written."""
        if self.change is Change.attempt_failed:
            return Q.failed.value if self.retry_at is None else Q.queued.value
        return {Change.sent: Q.sent, Change.uncertain: Q.uncertain, Change.skipped: Q.skipped}.get(
            self.change, Q.queued).value


_t = Delivery.__table__.c
_MINE = and_(_t.id == bindparam("b_id"), _t.status == Q.claimed.value, _t.claimed_by == bindparam("b_worker"))
# One statement per kind of change, each run as an executemany over that kind's rows.
_WRITES = {
    Change.sent: update(Delivery).where(_MINE).values(
        status=Q.sent.value, attempts=_t.attempts + 1, claimed_by=None, provider=bindparam("b_provider"),
        provider_message_id=bindparam("b_pmid"), message_id=bindparam("b_message_id"), last_error=None,
        sent_at=bindparam("b_at"), updated_at=bindparam("b_at"), next_attempt_at=None),
    Change.uncertain: update(Delivery).where(_MINE).values(
        status=Q.uncertain.value, attempts=_t.attempts + 1, claimed_by=None, claimed_at=None,
        provider=bindparam("b_provider"), message_id=bindparam("b_message_id"), last_error=bindparam("b_error"),
        next_attempt_at=None, sent_at=bindparam("b_at"), updated_at=bindparam("b_at")),
    Change.attempt_failed: update(Delivery).where(_MINE).values(
        status=bindparam("b_status"), attempts=_t.attempts + 1, claimed_by=None, claimed_at=None,
        provider=bindparam("b_provider"), last_error=bindparam("b_error"), next_attempt_at=bindparam("b_retry_at"),
        updated_at=bindparam("b_at"), message_id=bindparam("b_message_id")),
    Change.skipped: update(Delivery).where(_MINE).values(
        status=Q.skipped.value, claimed_by=None, last_error=bindparam("b_error"), updated_at=bindparam("b_at")),
    Change.deferred: update(Delivery).where(_MINE).values(
        status=Q.queued.value, claimed_by=None, claimed_at=None, next_attempt_at=bindparam("b_retry_at"),
        last_error=bindparam("b_error"), updated_at=bindparam("b_at")),
    Change.released: update(Delivery).where(_MINE).values(status=Q.queued.value, claimed_by=None, claimed_at=None),
}


def record(engine: Engine, worker_id: str, outcomes: Sequence[Outcome]) -> int:
    """Write many outcomes of `worker_id`'s claims in one transaction (a group commit); returns rows changed.

    A row whose claim was taken from this worker (it was presumed dead) is left as it is.
    """
    if not outcomes:
        return 0
    by_change: dict[Change, list[dict]] = {}
    for o in outcomes:
        by_change.setdefault(o.change, []).append({
            "b_id": o.delivery_id, "b_worker": worker_id, "b_at": o.at, "b_provider": o.provider,
            "b_pmid": o.provider_message_id, "b_message_id": o.message_id, "b_status": o.status,
            "b_error": None if o.error is None else o.error[:1000], "b_retry_at": o.retry_at})
    changed = 0
    with engine.begin() as conn:  # Core, not an ORM session: this is the hot path
        for change, params in by_change.items():
            changed += conn.execute(_WRITES[change], params).rowcount
    return changed


def failed_attempt(delivery_id: int, *, attempts: int, max_attempts: int, error: str, retry_at: datetime | None,
                   at: datetime, provider: str | None, message_id: str | None = None) -> Outcome:
    """The outcome of a failed attempt given the attempts made before it: a retry, or failed for good."""
    final = retry_at is None or attempts + 1 >= max_attempts
    if final and retry_at is not None:
        error = f"{error} (gave up after {attempts + 1} attempts)"
    return Outcome(delivery_id, Change.attempt_failed, at, provider=provider, message_id=message_id, error=error,
                   retry_at=None if final else retry_at)


def record_sent(engine: Engine, delivery_id: int, *, worker_id: str, provider: str, provider_message_id: str | None,
                message_id: str, now: datetime) -> bool:
    """The provider accepted one message. False if the claim had been taken from this worker."""
    return record(engine, worker_id, [Outcome(delivery_id, Change.sent, now, provider=provider,
                                              provider_message_id=provider_message_id, message_id=message_id)]) == 1


def record_failure(engine: Engine, delivery_id: int, *, worker_id: str, provider: str, error: str,
                   now: datetime, retry_at: datetime | None, max_attempts: int, message_id: str | None = None) -> str:
    """One failed attempt: requeued for `retry_at` while attempts remain, else failed. Returns the new status."""
    with engine.connect() as conn:
        attempts = conn.execute(select(Delivery.attempts).where(Delivery.id == delivery_id)).scalar_one()
    outcome = failed_attempt(delivery_id, attempts=attempts, max_attempts=max_attempts, error=error,
                             retry_at=retry_at, at=now, provider=provider, message_id=message_id)
    record(engine, worker_id, [outcome])
    return outcome.status


def mark_skipped(engine: Engine, delivery_ids: Sequence[int], *, worker_id: str, reason: str, now: datetime) -> int:
    """Claimed rows that must not be sent (unsubscribed or suppressed since the run began)."""
    return record(engine, worker_id, [Outcome(d, Change.skipped, now, error=reason) for d in delivery_ids])


# -- run state ----------------------------------------------------------------------------------

def counts(session: Session, run_id: int) -> dict[str, int]:
    """Deliveries per status for one run (every status present, zero when none)."""
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
    ).all()
    result = {s.value: 0 for s in DeliveryStatus}
    result.update({status: n for status, n in rows})
    return result


def due_count(session: Session, run_ids: Sequence[int], *, now: datetime) -> int:
    """Queued deliveries of the runs that may be claimed now."""
    return session.execute(select(func.count()).where(
        Delivery.run_id.in_(list(run_ids)), Delivery.status == Q.queued.value,
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))).scalar()


def next_retry_at(session: Session, run_id: int) -> datetime | None:
    """When the earliest deferred delivery of the run becomes due, if any is waiting."""
    return session.execute(select(func.min(Delivery.next_attempt_at)).where(
        Delivery.run_id == run_id, Delivery.status == Q.queued.value)).scalar()


def finish_if_done(engine: Engine, run_id: int, *, now: datetime) -> bool:
    """Mark a sending run finished once none of its deliveries is queued or claimed."""
    with session_scope(engine) as session:
        pending = select(Delivery.id).where(
            Delivery.run_id == run_id, Delivery.status.in_([Q.queued.value, Q.claimed.value])).exists()
        return session.execute(update(Run).where(
            Run.id == run_id, Run.status == RunStatus.sending.value, ~pending,
        ).values(status=RunStatus.finished.value, finished_at=now)).rowcount == 1


def pause(engine: Engine, run_id: int, *, reason: str) -> bool:
    """Stop workers from claiming more of the run; `resume` lets them go on."""
    with session_scope(engine) as session:
        return session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.sending.value)
                               .values(status=RunStatus.paused.value, pause_reason=reason[:500])).rowcount == 1


def resume(engine: Engine, run_id: int) -> bool:
    """Let workers claim a paused run again."""
    with session_scope(engine) as session:
        return session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.paused.value)
                               .values(status=RunStatus.sending.value, pause_reason="")).rowcount == 1


def cancel(engine: Engine, run_id: int, *, now: datetime, reason: str) -> int | None:
    """End a run that is being filled, sent or paused: its queued deliveries become skipped.

    Returns how many deliveries were skipped, or None if the run was not open. Rows a worker has
    already claimed are left to it: the message may be with the provider already.
    """
    with session_scope(engine) as session:
        # The status change and the skips commit together, so no worker claims between them
        # (claim only takes rows of a sending run).
        changed = session.execute(update(Run).where(
            Run.id == run_id,
            Run.status.in_([RunStatus.populating.value, RunStatus.sending.value, RunStatus.paused.value]),
        ).values(status=RunStatus.cancelled.value, pause_reason=reason[:500], finished_at=now)).rowcount
        if changed != 1:
            return None
        return session.execute(update(Delivery).where(
            Delivery.run_id == run_id, Delivery.status == Q.queued.value,
        ).values(status=Q.skipped.value, last_error=reason[:1000], next_attempt_at=None, updated_at=now)).rowcount


def sending_runs(session: Session) -> list[int]:
    """Runs workers may claim from, oldest first."""
    return list(session.execute(select(Run.id).where(Run.status == RunStatus.sending.value).order_by(Run.id)).scalars())
