"""A loaded, validated campaign: its common keys and one resolved variant per segment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kinds import Kind, SectionModel
from .schedule import Schedule

VALUE_DIMENSIONS = ("functional", "economic", "emotional", "social")


@dataclass(frozen=True)
class Variant:
    """What recipients of one segment get: the campaign with that segment's overrides applied."""

    segment: str
    template: str
    subject: str
    preheader: str
    section: SectionModel

    @property
    def key(self) -> str:
        """Identifies the variant in render caches and previews."""
        return self.segment


@dataclass(frozen=True)
class CampaignDefinition:
    """A campaign file, validated; `variants` has one entry per listed segment, in order."""

    id: str
    path: Path
    name: str
    kind_name: str
    kind: Kind = field(repr=False)
    values: tuple[str, ...]
    segments: tuple[str, ...]
    schedule: Schedule | None
    local_time: bool
    variants: dict[str, Variant]
    section: Any  # the kind's section without per-segment overrides (what campaign-wide hooks use)
    raw: dict[str, Any] = field(repr=False)
    source: str = field(default="", repr=False)  # the file's text, stored with each run
    provider: str | None = None  # the campaign's own provider; None: the configured one

    def variant(self, segment: str) -> Variant:
        """The variant for `segment` (every listed segment has one)."""
        return self.variants[segment]

    @property
    def source_hash(self) -> str:
        """A fingerprint of the campaign file, to notice edits."""
        return hashlib.sha256(self.source.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        """What a run stores, so that resuming or viewing it uses the file as it was sent."""
        return {"file": self.path.name, "source": self.source}
