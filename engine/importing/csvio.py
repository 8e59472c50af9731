"""Reading import CSV files as a stream, and writing the rejects file.

A file is read twice: `scan` checks the whole file (encoding, CSV syntax, header) before
anything is applied, so a file-level error never leaves half a file imported; `rows` then
streams it again. Neither pass keeps more than one row in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .errors import CsvFileError
from .result import Reject, SourceRow

#: Called with the number of bytes read so far.
ByteProgress = Callable[[int], None]

_PROGRESS_EVERY = 1000
REJECTS_COLUMNS = ("line", "reason")
#: Columns a header may have: contact fields plus attributes are a few dozen; a sheet of 200,000 is a mistake.
MAX_COLUMNS = 1000
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass(frozen=True)
class CsvFile:
    """A checked CSV file: its header as written, the column names used, and its size."""

    path: Path
    header: list[str]
    columns: list[str]  # known columns lower-cased, custom ones as written (trimmed)
    bom: bool
    size: int
    rows: int  # data rows found by the scan (blank lines not counted)
    skip: int = 0  # leading columns ignored: 2 when the file is a (fixed) rejects file


def scan(path: str | Path, *, known: Sequence[str], required: Sequence[str],
         progress: ByteProgress | None = None) -> CsvFile:
    """Check a whole file before importing it; raise CsvFileError naming the file (and line) if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CsvFileError.single(path, None, "file not found" if not path.exists() else "not a file")
    size = path.stat().st_size
    with path.open("rb") as binary:
        head = binary.read(4)
        for bom, name in _WIDE_BOMS:
            if head.startswith(bom):
                raise CsvFileError.single(path, None, f"file is {name}-encoded; save it as UTF-8")
        if head.startswith(b"PK\x03\x04"):
            raise CsvFileError.single(path, None, "file is a ZIP archive (an Excel workbook?); export it as CSV UTF-8")
        has_bom = head.startswith(codecs.BOM_UTF8)
        binary.seek(0)
        header: list[str] | None = None
        header_line = 1
        count = 0
        line = 0
        reader = csv.reader(_text(binary), strict=True)
        try:
            for fields in reader:
                start, line = line + 1, reader.line_num
                if _blank(fields):
                    continue
                if header is None:
                    header, header_line = fields, start
                    continue
                count += 1
                if progress is not None and count % _PROGRESS_EVERY == 0:
                    progress(binary.tell())
        except UnicodeDecodeError:
            raise CsvFileError.single(path, _first_non_utf8_line(path), "not valid UTF-8 (save the file as UTF-8)") from None
        except csv.Error as exc:
            raise CsvFileError.single(path, line + 1, f"malformed CSV: {_csv_message(exc)}") from None
    if progress is not None:
        progress(size)
    if header is None:
        raise CsvFileError.single(path, None, "file is empty (a header row is required)")
    header = [h.lstrip("\ufeff") for h in header]
    # A rejects file, once fixed, can be imported as it is: its own line and reason are not data.
    skip = len(REJECTS_COLUMNS) if [h.strip().lower() for h in header[:2]] == list(REJECTS_COLUMNS) else 0
    columns = _columns(path, header[skip:], header_line, known=known, required=required)
    return CsvFile(path=path, header=header[skip:], columns=columns, bom=has_bom, size=size, rows=count, skip=skip)


def rows(csv_file: CsvFile, *, progress: ByteProgress | None = None) -> Iterator[SourceRow]:
    """Stream the data rows of a scanned file with their physical line numbers."""
    width = len(csv_file.columns)
    skip = csv_file.skip
    with csv_file.path.open("rb") as binary:
        reader = csv.reader(_text(binary), strict=True)
        line = 0
        seen_header = False
        count = 0
        try:
            for fields in reader:
                # A quoted field may span lines: the row starts one after where the previous one ended.
                start, line = line + 1, reader.line_num
                if _blank(fields):
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                if skip:
                    fields = fields[skip:]
                problem = None
                if len(fields) != width:
                    problem = f"row has {len(fields)} fields, the header has {width}"
                yield SourceRow(line=start, values=dict(zip(csv_file.columns, fields)), raw=fields, problem=problem)
                count += 1
                if progress is not None and count % _PROGRESS_EVERY == 0:
                    progress(binary.tell())
        except (UnicodeDecodeError, csv.Error) as exc:
            # Only if the file changed since it was scanned.
            raise CsvFileError.single(csv_file.path, line + 1, f"file changed while importing: {exc}") from None
    if progress is not None:
        progress(csv_file.size)


class RejectsWriter:
    """Writes rejected rows (line, reason, then the original columns) as they come; the file is made on first use."""

    def __init__(self, path: Path, header: Sequence[str], *, bom: bool = False):
        self.path = path
        self.header = list(header)
        self.bom = bom
        self.count = 0
        self._file: io.TextIOBase | None = None
        self._writer = None

    def write(self, reject: Reject) -> None:
        """Append one rejected row."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Mirror the input's BOM so a spreadsheet opens the rejects the way it opened the input.
            self._file = self.path.open("w", encoding="utf-8-sig" if self.bom else "utf-8", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow([*REJECTS_COLUMNS, *self.header])
        raw = reject.row.raw
        if raw is None:
            raw = [_cell(reject.row.values.get(name)) for name in self.header]
        self._writer.writerow([reject.line, reject.reason, *raw])
        self.count += 1

    def close(self) -> None:
        """Flush and close the file, if one was opened."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RejectsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(binary) -> io.TextIOWrapper:
    # utf-8-sig drops a leading BOM if there is one; newline='' lets csv see quoted newlines.
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")


def _blank(fields: list[str]) -> bool:
    return not fields or not any(f.strip() for f in fields)


def _cell(value) -> str:
    return "" if value is None else str(value)


def _columns(path: Path, header: list[str], line: int, *, known: Sequence[str], required: Sequence[str]) -> list[str]:
    """Column names from the header: known names matched case-insensitively, no blanks, no repeats."""
    if any("\x00" in name for name in header):
        raise CsvFileError.single(path, line, "the header holds NUL characters: is the file UTF-16? save it as UTF-8")
    if len(header) > MAX_COLUMNS:
        raise CsvFileError.single(path, line, f"the header has {len(header):,} columns, at most {MAX_COLUMNS:,} are read")
    known = set(known)
    columns: list[str] = []
    seen: set[str] = set()  # not `in columns`: quadratic in the number of columns
    for number, name in enumerate(header, start=1):
        name = name.lstrip("\ufeff").strip()
        if not name:
            raise CsvFileError.single(path, line, f"header column {number} has no name")
        column = name.lower() if name.lower() in known else name
        if column in seen:
            raise CsvFileError.single(path, line, f"header names column {column!r} twice")
        columns.append(column)
        seen.add(column)
    missing = [c for c in required if c not in seen]
    if missing:
        raise CsvFileError.single(
            path, line,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(the header has: {', '.join(columns)})",
        )
    return columns


def _csv_message(exc: csv.Error) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        return "a quoted field that starts on this line is never closed"
    return message


def _first_non_utf8_line(path: Path) -> int | None:
    """The first line that is not valid UTF-8 (UTF-8 never uses the newline byte inside a character)."""
    with path.open("rb") as binary:
        for number, raw in enumerate(binary, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
