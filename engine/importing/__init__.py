"""Importing contacts, orders and events: from CSV files or from rows of dicts (REST API, demo).

Row-level API (runs in the caller's transaction, returns counts and rejects):

    upsert_contacts(session, rows, *, settings, clock, strict=False, allow_resubscribe=False) -> ImportResult
    upsert_orders(session, rows, *, settings, clock, strict=False) -> ImportResult
    upsert_events(session, rows, *, settings, clock, strict=False) -> ImportResult

File API (scans, streams, commits per batch or all-or-nothing with strict):

    import_csv(engine, kind, path, *, settings, clock, strict=False, rejects_path=None) -> CsvImportOutcome
"""

from .contacts import upsert_contacts
from .csvimport import KINDS, CsvImportOutcome, default_rejects_path, import_csv
from .errors import CsvFileError, StrictImportFailed
from .events import upsert_events
from .orders import upsert_orders
from .result import ImportResult, Reject, SourceRow

__all__ = [
    "KINDS", "CsvFileError", "CsvImportOutcome", "ImportResult", "Reject", "SourceRow", "StrictImportFailed",
    "default_rejects_path", "import_csv", "upsert_contacts", "upsert_events", "upsert_orders",
]
