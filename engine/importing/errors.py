"""Errors raised by the importers, on top of the engine's own error types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ImportAborted, InvalidFile

if TYPE_CHECKING:
    from .result import ImportResult


class CsvFileError(InvalidFile):
    """The CSV file as a whole cannot be read: missing, empty, not UTF-8, malformed or a bad header."""


class StrictImportFailed(ImportAborted):
    """A strict import found bad rows; the caller must roll back (nothing may be applied)."""

    def __init__(self, result: "ImportResult"):
        self.result = result
        super().__init__(f"{result.rejected} rejected row(s); nothing was applied")


class FieldProblem(ValueError):
    """One field of one row is invalid; the message becomes (part of) the reject reason."""
