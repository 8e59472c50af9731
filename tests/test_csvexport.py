"""CSV exports neutralise formula-like cells and keep numbers and text as they are."""

from __future__ import annotations

import csv
import io

import pytest

from engine.csvexport import rows_as_csv, safe_cell


@pytest.mark.parametrize("value, shown", [
    ('=HYPERLINK("http://evil.example","click")', '\'=HYPERLINK("http://evil.example","click")'),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\uff1d1+1", "'\uff1d1+1"),
    ("-12.50", "-12.50"), ("+31", "+31"), (-3, "-3"), (None, ""), ("anna@example.com", "anna@example.com"),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
])
def test_cells(value, shown):
    assert safe_cell(value) == shown


def test_rows_round_trip_through_a_csv_reader():
    text = "".join(rows_as_csv(["email", "note"], [["a@example.com", "=1+1"], ["b@example.com", 'say "hi", ok']]))
    assert text.startswith("\ufeff")
    assert list(csv.reader(io.StringIO(text.lstrip("\ufeff")))) == [
        ["email", "note"], ["a@example.com", "'=1+1"], ["b@example.com", 'say "hi", ok']]
