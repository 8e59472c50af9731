"""Import a contacts, orders or events CSV file: scan, stream, upsert, write the rejects.

Non-strict imports commit after every batch, so a huge file does not hold the database's
write lock for minutes and an interrupted import can simply be run again (upserts are
idempotent). Strict imports run in one transaction that is rolled back if any row is bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..clock import Clock
from ..config import Settings
from ..db import session_scope
from . import contacts, csvio, events, orders
from .errors import CsvFileError, StrictImportFailed
from .result import ImportResult, Reject
from .runner import DEFAULT_BATCH_SIZE, Handler, run_import

#: Called with (phase, bytes done, bytes total); phase is "checking" or "importing".
Progress = Callable[[str, int, int], None]

SAMPLE_SIZE = 20


@dataclass(frozen=True)
class Kind:
    """One importable kind of file: its columns and the handler that applies its rows."""

    name: str
    columns: Sequence[str]
    required: Sequence[str]
    handler: Callable[..., Handler]


KINDS: dict[str, Kind] = {
    "contacts": Kind("contacts", contacts.COLUMNS, contacts.REQUIRED, contacts.ContactHandler),
    "orders": Kind("orders", orders.COLUMNS, orders.REQUIRED, orders.OrderHandler),
    "events": Kind("events", events.COLUMNS, events.REQUIRED, events.EventHandler),
}


@dataclass
class CsvImportOutcome:
    """What happened to one file."""

    path: Path
    kind: str
    result: ImportResult
    applied: bool  # False: a strict import found bad rows and rolled everything back
    rejects_path: Path | None  # None when no row was rejected
    sample: list[Reject] = field(default_factory=list)  # the first rejects, for printing


def default_rejects_path(path: Path) -> Path:
    """`<stem>.rejects.csv` next to the input."""
    return path.with_name(f"{path.stem}.rejects.csv")


def import_csv(engine: Engine, kind: str, path: str | Path, *, settings: Settings, clock: Clock,
               strict: bool = False, rejects_path: str | Path | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None) -> CsvImportOutcome:
    """Import one CSV file of `kind`; file-level problems raise CsvFileError before anything is applied."""
    spec = KINDS[kind]
    path = Path(path)
    target = Path(rejects_path) if rejects_path else default_rejects_path(path)
    if target.resolve() == path.resolve():
        raise CsvFileError.single(path, None, "the rejects file cannot be the input file")
    _check_writable(target)
    checked = csvio.scan(path, known=spec.columns, required=spec.required,
                         progress=_phase(progress, "checking", path))
    handler = spec.handler(settings=settings, clock=clock)
    sample: list[Reject] = []
    with csvio.RejectsWriter(target, checked.header, bom=checked.bom) as writer:
        def on_reject(reject: Reject) -> None:
            writer.write(reject)
            if len(sample) < SAMPLE_SIZE:
                sample.append(reject)

        source = csvio.rows(checked, progress=_phase(progress, "importing", path))
        applied = True
        if strict:
            try:
                with session_scope(engine) as session:
                    result = run_import(session, handler, source, batch_size=batch_size, strict=True,
                                        on_reject=on_reject)
            except StrictImportFailed as failed:
                result, applied = failed.result, False
        else:
            with Session(engine, expire_on_commit=False) as session:
                result = run_import(session, handler, source, batch_size=batch_size,
                                    on_reject=on_reject, on_batch=lambda _: session.commit())
                session.commit()
    if not writer.count and target.exists():
        # A rejects file left by an earlier run would read as this run's rejects.
        target.unlink()
    return CsvImportOutcome(path=path, kind=kind, result=result, applied=applied,
                            rejects_path=target if writer.count else None, sample=sample)


def _check_writable(target: Path) -> None:
    """Fail before importing, not after the first batches, if the rejects file cannot be written."""
    folder = target.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if (target.exists() and not os.access(target, os.W_OK)) or not os.access(folder, os.W_OK):
        raise CsvFileError.single(target, None, "cannot write the rejects file here (choose another with --rejects PATH)")


def _phase(progress: Progress | None, phase: str, path: Path) -> csvio.ByteProgress | None:
    if progress is None:
        return None
    total = path.stat().st_size
    return lambda done: progress(phase, done, total)
