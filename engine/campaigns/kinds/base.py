"""What every campaign kind provides: its own settings section and its part of the template context."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict


class SectionModel(BaseModel):
    """Base for a kind's section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass
class Recipient:
    """What a kind may know about one recipient when it builds its context."""

    contact_id: int
    email: str
    segment: str
    ltv: float = 0.0
    orders_count: int = 0
    spend: Decimal = Decimal(0)  # over the kind's spend period, when it asked for one
    coupon: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Kind(Protocol):
    """A campaign kind: name, the TOML section it owns, and how it fills the template context."""

    name: ClassVar[str]
    section_key: ClassVar[str]
    section_model: ClassVar[type[SectionModel]]

    def check(self, section: SectionModel, *, today: date) -> list[tuple[tuple, str]]:
        """Semantic problems beyond types, as (key path within the section, message)."""
        ...

    def spend_period_days(self, section: SectionModel) -> int | None:
        """Days of order history whose spend the kind needs per recipient, or None."""
        ...

    def needs_unique_coupon(self, section: SectionModel) -> bool:
        """True when every recipient gets a code of their own."""
        ...

    def context(self, section: SectionModel, recipient: Recipient) -> dict[str, Any]:
        """The kind's entries in the template context for one recipient."""
        ...

    def sample_recipient_extra(self, section: SectionModel) -> dict[str, Any]:
        """Values a preview or validate run uses in place of real recipient data."""
        ...
