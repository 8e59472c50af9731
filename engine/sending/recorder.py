"""Group commits: a process's outcomes written many per transaction, by one thread of their own."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from sqlalchemy.engine import Engine

from . import ledger
from .ledger import Change, Outcome

log = logging.getLogger(__name__)

#: What the progress callback is told per outcome (released rows are not an outcome).
REPORTED = {Change.sent: "sent", Change.uncertain: "uncertain", Change.skipped: "skipped",
            Change.deferred: "deferred"}


def reported_status(outcome: Outcome) -> str | None:
    """The status a progress count gives the outcome: a retried attempt counts as deferred."""
    if outcome.change is Change.attempt_failed:
        return "failed" if outcome.retry_at is None else "deferred"
    return REPORTED.get(outcome.change)


class Recorder:
    """Collects outcomes from the sending stages and commits them every `every` outcomes or `seconds`.

    `wait_for_room` is the back-pressure that bounds what a crash can cost: the sender calls it
    before handing a batch to the provider, and it returns only while fewer than `every` outcomes
    are uncommitted.
    """

    def __init__(self, *, engine: Engine, worker_id: str, every: int, seconds: float,
                 on_commit: Callable[[Sequence[tuple[int, Outcome]]], None]):
        self.engine = engine
        self.worker_id = worker_id
        self.every = every
        self.seconds = seconds
        self.on_commit = on_commit
        self.error: BaseException | None = None
        self._pending: list[tuple[int, Outcome]] = []
        self._writing = 0
        self._oldest: float | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._main, name="valuemail-recorder", daemon=True)
        self._thread.start()

    def add(self, run_id: int, outcomes: Sequence[Outcome]) -> None:
        """Queue outcomes of one run for the next group commit."""
        if not outcomes:
            return
        with self._cond:
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._pending.extend((run_id, o) for o in outcomes)
            self._cond.notify_all()

    def uncommitted(self) -> int:
        """Outcomes queued or being written."""
        with self._cond:
            return len(self._pending) + self._writing

    def wait_for_room(self, stop: threading.Event) -> None:
        """Block while `every` or more outcomes are uncommitted (or until `stop`, or the writer failed)."""
        with self._cond:
            while (len(self._pending) + self._writing >= self.every and self.error is None
                   and not stop.is_set()):
                self._cond.wait(0.5)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Commit everything queued, then stop the writer; raises the writer's error, if any."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._pending and (self._closing or len(self._pending) >= self.every
                                          or time.monotonic() - self._oldest >= self.seconds):
                        break
                    if self._closing:
                        return
                    timeout = None if not self._pending else self.seconds - (time.monotonic() - self._oldest)
                    self._cond.wait(timeout)
                batch, self._pending, self._oldest = self._pending, [], None
                self._writing = len(batch)
            try:
                ledger.record(self.engine, self.worker_id, [o for _, o in batch])
            except BaseException as exc:  # the sender stops; unwritten claims go back to the queue
                log.exception("could not record %d outcomes", len(batch))
                with self._cond:
                    self.error, self._writing, self._pending = exc, 0, []
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = 0
                self._cond.notify_all()
            try:
                self.on_commit(batch)
            except Exception:  # a progress bar must never stop the sending
                log.exception("outcome callback failed")
