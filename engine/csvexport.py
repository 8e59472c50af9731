"""CSV exports that a spreadsheet opens safely: formula-like cells neutralised, streamed row by row."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Iterator

#: Characters that make Excel, LibreOffice or Google Sheets read a cell as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: Any) -> str:
    """The cell as text; one that a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    # Numbers stay numbers: a negative amount is data, not a formula.
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def rows_as_csv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The CSV text (UTF-8 BOM first, so spreadsheets detect the encoding) in chunks, one per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: Iterable[Any]) -> str:
        writer.writerow([safe_cell(c) for c in cells])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield "\ufeff" + line(header)
    for row in rows:
        yield line(row)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text
