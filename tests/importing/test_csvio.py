"""Reading CSV files: encodings, BOM, header checks, line numbers and file-level errors."""

from __future__ import annotations

import pytest

from engine.importing import CsvFileError, csvio
from engine.importing.contacts import COLUMNS, REQUIRED

from .conftest import snapshot, write_csv


def scan(path):
    return csvio.scan(path, known=COLUMNS, required=REQUIRED)


def file_error(path) -> str:
    with pytest.raises(CsvFileError) as exc:
        scan(path)
    return str(exc.value)


def test_bom_is_dropped_and_known_columns_match_case_insensitively(tmp_path):
    checked = scan(write_csv(tmp_path / "c.csv", " Email ,First_Name,Plan\na@example.com,A,pro\n", bom=True))
    assert checked.columns == ["email", "first_name", "Plan"]  # custom columns keep their spelling
    assert checked.header == [" Email ", "First_Name", "Plan"]
    assert checked.bom and checked.rows == 1


def test_physical_line_numbers_count_quoted_newlines_and_blank_lines(tmp_path):
    path = write_csv(tmp_path / "c.csv", "\n"            # 1: blank line before the header
                     "email,first_name\r\n"               # 2: header (CRLF)
                     'a@example.com,"two\r\nlines"\r\n'   # 3-4
                     "\r\n"                               # 5: blank
                     'b@example.com,"three\nmore\nlines"\n'  # 6-8
                     "c@example.com,plain\n"              # 9
                     ",,\n"                               # 10: an all-empty row is blank, skipped
                     "d@example.com,last")                # 11: no final newline
    rows = list(csvio.rows(scan(path)))
    assert [(r.line, r.values["email"]) for r in rows] == [
        (3, "a@example.com"), (6, "b@example.com"), (9, "c@example.com"), (11, "d@example.com")]
    assert rows[0].values["first_name"] == "two\r\nlines"


def test_empty_files_are_errors(tmp_path):
    assert file_error(write_csv(tmp_path / "e.csv", "")) == f"{tmp_path / 'e.csv'}: file is empty (a header row is required)"
    assert "file is empty" in file_error(write_csv(tmp_path / "b.csv", "", bom=True))
    assert "file is empty" in file_error(write_csv(tmp_path / "n.csv", "\n\n  \n"))


def test_header_only_file_is_fine(tmp_path):
    assert scan(write_csv(tmp_path / "h.csv", "email\n")).rows == 0


def test_missing_file(tmp_path):
    assert file_error(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: file not found"


def test_header_problems(tmp_path):
    assert file_error(write_csv(tmp_path / "a.csv", "first_name,country\nA,NL\n")) == \
        f"{tmp_path / 'a.csv'}:1: missing required column email (the header has: first_name, country)"
    assert "header names column 'email' twice" in file_error(write_csv(tmp_path / "b.csv", "email,EMAIL\n"))
    assert "header column 2 has no name" in file_error(write_csv(tmp_path / "c.csv", "email,,x\n"))


def test_wrong_encodings_are_named(tmp_path):
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("email\na@example.com\n".encode("utf-16"))
    assert file_error(utf16) == f"{utf16}: file is UTF-16-encoded; save it as UTF-8"
    no_bom = tmp_path / "u16le.csv"
    no_bom.write_bytes("email\na@example.com\n".encode("utf-16-le"))
    assert "the header holds NUL characters: is the file UTF-16?" in file_error(no_bom)
    xlsx = tmp_path / "contacts.xlsx.csv"
    xlsx.write_bytes(b"PK\x03\x04" + bytes(100))
    assert "file is a ZIP archive (an Excel workbook?)" in file_error(xlsx)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("email,first_name\na@example.com,Ann\nb@example.com,Jos\xe9\n".encode("latin-1"))
    assert file_error(latin1) == f"{latin1}:3: not valid UTF-8 (save the file as UTF-8)"


def test_malformed_csv_names_the_line_where_the_bad_row_starts(tmp_path):
    path = write_csv(tmp_path / "q.csv", 'email,first_name\na@example.com,ok\nb@example.com,"never closed\nc@example.com,x\n')
    assert file_error(path) == f"{path}:3: malformed CSV: a quoted field that starts on this line is never closed"
    path = write_csv(tmp_path / "r.csv", 'email,first_name\na@example.com,"quoted"junk\n')
    assert file_error(path).startswith(f"{path}:2: malformed CSV:")


def test_file_errors_apply_nothing(db, run_import, tmp_path):
    # The bad byte is on the last line: the scan catches it before any batch is written.
    lines = "".join(f"user{i}@example.com\n" for i in range(50))
    path = tmp_path / "late.csv"
    path.write_bytes(b"email\n" + lines.encode() + b"bad\xff@example.com\n")
    before = snapshot(db)
    with pytest.raises(CsvFileError, match=r"late.csv:52: not valid UTF-8"):
        run_import("contacts", path, batch_size=10)
    assert snapshot(db) == before


def test_rejects_file_cannot_overwrite_the_input(run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email\nbad\n")
    with pytest.raises(CsvFileError, match="the rejects file cannot be the input file"):
        run_import("contacts", path, rejects_path=path)


def test_a_header_of_200000_columns_is_refused_and_1000_are_read(tmp_path):
    wide = ",".join(["email", *(f"c{i}" for i in range(200_000))])
    assert file_error(write_csv(tmp_path / "wide.csv", wide + "\n")) == \
        f"{tmp_path / 'wide.csv'}:1: the header has 200,001 columns, at most {csvio.MAX_COLUMNS:,} are read"
    names = ["email", *(f"c{i}" for i in range(csvio.MAX_COLUMNS - 1))]
    assert len(scan(write_csv(tmp_path / "ok.csv", ",".join(names) + "\n")).columns) == csvio.MAX_COLUMNS
    repeated = ",".join([*names[:-1], "C5"])  # custom names keep their case: C5 is not c5
    assert len(scan(write_csv(tmp_path / "case.csv", repeated + "\n")).columns) == csvio.MAX_COLUMNS
    assert "header names column 'c5' twice" in file_error(write_csv(tmp_path / "dup.csv", ",".join([*names[:-1], "c5"]) + "\n"))
