"""What an import reports: counts per outcome and the rejected rows with their reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence


class SourceRow(NamedTuple):
    """One input row: its line (physical CSV line, or 1-based record number), values and raw fields."""

    # A NamedTuple, not a dataclass: one is made per input row, and this is the cheapest to build.
    line: int
    values: Mapping[str, Any]
    raw: Sequence[str] | None = None  # the CSV fields as read, for the rejects file
    problem: str | None = None  # a structural problem found while reading (e.g. wrong field count)


@dataclass(frozen=True)
class Reject:
    """A row that was not applied, and why."""

    line: int
    reason: str
    row: SourceRow


@dataclass
class ImportResult:
    """Counts of one import; `rejects` is filled only when no `on_reject` callback was given."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    kept_unsubscribed: int = 0  # rows that asked to re-subscribe an unsubscribed contact
    rejects: list[Reject] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows that passed validation (whether or not they changed anything)."""
        return self.inserted + self.updated + self.unchanged

    def summary(self) -> str:
        """A one-line human summary, e.g. `0 inserted, 0 updated, 5000 unchanged, 0 rejected`."""
        text = f"{self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged, {self.rejected} rejected"
        if self.kept_unsubscribed:
            text += f"; {self.kept_unsubscribed} unsubscribed contact(s) kept unsubscribed"
        return text
