"""Helper sending processes: one `valuemail send` or `tick` drains a big run on every CPU core.

Rendering and MIME are Python, so one process sends on one core at most. A drain with more
work than a few batches starts `[sending] processes - 1` helpers (0: one process per core);
each is a Sender of its own (its own worker id, claims, pipeline and group commits) over the
same runs. Where it can, a helper is a fork of this process: it starts at once, with every
module already imported, and its pages are shared with the parent until written. A process
running other threads (`valuemail run`: the web server, the scheduler) forks nothing, because a
lock another thread held at the fork would stay held in the child forever; there a helper is a
new interpreter, `python -m engine.sending.helpers`, with its settings, clock and run ids pickled
on stdin (about a second of start-up). Either way it reports its outcome counts on a pipe, one
JSON line at a time, and dies with its parent (a kill -9 of `valuemail send` stops every
process that was sending).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import IO, Callable

from ..config import Settings

log = logging.getLogger(__name__)

#: A helper is worth its start-up (about a second) only for a run of at least this many batches.
MIN_BATCHES_PER_PROCESS = 4
_REPORT_SECONDS = 0.25


def process_count(settings: Settings) -> int:
    """Sending processes a drain may use: `[sending] processes`, or one per CPU core."""
    if settings.sending.processes:
        return settings.sending.processes
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def helpers_for(settings: Settings, queued: int) -> int:
    """How many helper processes a drain of `queued` deliveries starts besides itself."""
    worth = queued // (MIN_BATCHES_PER_PROCESS * settings.sending.batch_size)
    return max(0, min(process_count(settings) - 1, worth))


def can_fork() -> bool:
    """Whether a helper may be a fork of this process: POSIX, and no other thread running."""
    return hasattr(os, "fork") and threading.active_count() == 1


class _Forked:
    """A forked helper, with the part of `subprocess.Popen` that `Helpers` uses."""

    def __init__(self, pid: int, stdout: IO[bytes]):
        self.pid, self.stdout = pid, stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class Helpers:
    """Helper processes for one drain; `on_outcome(run_id, status, count)` hears what they send.

    `fork`: make each helper a fork of this process (default: when `can_fork()`), else a new
    interpreter.
    """

    def __init__(self, *, settings: Settings, clock, run_ids: list[int], count: int,
                 on_outcome: Callable[[int, str, int], None], fork: bool | None = None):
        self.on_outcome = on_outcome
        self.forked = can_fork() if fork is None else fork
        job = {"settings": settings, "clock": clock, "run_ids": run_ids, "parent": os.getpid()}
        self._procs = [self._fork(job) if self.forked else self._spawn(job) for _ in range(count)]
        # Only once every child exists: a fork made while these threads run would copy them half-way.
        self._readers = [threading.Thread(target=self._read, args=(proc,), name="valuemail-helper-report",
                                          daemon=True) for proc in self._procs]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _spawn(job: dict) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "engine.sending.helpers"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        proc.stdin.write(pickle.dumps(job))
        proc.stdin.close()
        return proc

    @staticmethod
    def _fork(job: dict) -> _Forked:
        read, write = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # or the child would write the parent's buffered output again
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            code = 1
            try:
                os.close(read)
                with os.fdopen(write, "w") as out:
                    code = _serve(job, out)
            except BaseException:  # noqa: BLE001 - the child must end here whatever happened
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        return _Forked(pid, os.fdopen(read, "rb"))

    def __len__(self) -> int:
        return len(self._procs)

    def _read(self, proc) -> None:
        for line in proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            for status, n in report.get("counts", {}).items():
                self.on_outcome(int(report["run_id"]), status, int(n))
        proc.stdout.close()

    def interrupt(self) -> None:
        """Ask every helper to stop after the batch it has with the provider (as Ctrl-C does)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    def wait(self) -> list[int]:
        """Wait for every helper to finish; their exit codes."""
        codes = [proc.wait() for proc in self._procs]
        for reader in self._readers:
            reader.join()
        return codes


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the orphan finishes its batches and stops
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _main() -> int:
    job = pickle.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _serve(job, sys.stdout)


def _serve(job: dict, out: IO[str]) -> int:
    """A helper's life: drain the job's runs as a Sender of its own, reporting counts on `out`."""
    _die_with_parent(job["parent"])
    from ..db import make_engine
    from ..providers import provider_factory
    from ..rendering import Renderer
    from .worker import Sender

    settings: Settings = job["settings"]
    counts: dict[int, dict[str, int]] = {}
    lock = threading.Lock()
    last = [time.monotonic()]

    def report(force: bool = False) -> None:
        with lock:
            if not force and time.monotonic() - last[0] < _REPORT_SECONDS:
                return
            pending = {run_id: c for run_id, c in counts.items() if c}
            counts.clear()
            last[0] = time.monotonic()
        for run_id, c in pending.items():
            out.write(json.dumps({"run_id": run_id, "counts": c}) + "\n")
        out.flush()

    def on_outcome(run_id: int, status: str) -> None:
        with lock:
            run = counts.setdefault(run_id, {})
            run[status] = run.get(status, 0) + 1
        report()

    engine = make_engine(settings.database_url)  # never the parent's: its connections are not ours
    try:
        sender = Sender(engine=engine, settings=settings, clock=job["clock"], provider_factory=provider_factory(settings),
                        renderer=Renderer(settings.templates_dir), on_outcome=on_outcome)
        try:
            sender.drain(job["run_ids"], wait_for_retries=False)
        except KeyboardInterrupt:
            pass
        report(force=True)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
