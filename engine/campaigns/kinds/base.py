"""What every campaign kind provides: its own settings section and its part of the template context.

A kind is called at four points, all with the session and clock passed in:
- `check` when the campaign file is validated;
- `before_occurrence` when a run starts (fetch a feed, credit points, open a contest);
- `due` on every scheduler tick, for trigger schedules: the per-contact occurrences now due;
- `on_tick` on every scheduler tick, for other timed work (a contest's draw at `draw_at`);
- `prepare` once per claimed batch (load per-recipient data in a few queries, skip recipients
  with nothing to send), then `context` once per recipient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Iterable, Protocol

from pydantic import BaseModel, ConfigDict


class SectionModel(BaseModel):
    """Base for a kind's section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def currency_code(value: str) -> str:
    """An ISO 4217 currency code, upper-cased; ValueError (a located validate error) otherwise."""
    import pycountry

    if pycountry.currencies.get(alpha_3=value.upper()) is None:
        raise ValueError(f"unknown ISO 4217 currency {value!r}")
    return value.upper()


def date_value(value: Any) -> Any:
    """A TOML date, or an ISO date string such as "2027-04-03", as a date (other types pass to pydantic)."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date such as 2027-04-03") from None
    return value


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
    delivery_id: int = 0
    language: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the trigger's data (e.g. the order, the drip step)
    extra: dict[str, Any] = field(default_factory=dict)  # what `prepare` loaded for this recipient


@dataclass(frozen=True)
class Due:
    """One triggered occurrence for one contact: sent once per (campaign, key), ever."""

    contact_id: int
    key: str  # e.g. "order:A-1001" or "trial:42:step:2"
    due_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KindContext:
    """Where a kind hook is running: the campaign, its run (if any), the instant and settings."""

    campaign_id: str
    now: datetime
    settings: Any
    run_id: int | None = None
    schedule: Any = None  # the campaign's Schedule (e.g. a trigger's delay), where a hook needs it
    test: bool = False  # a test send: show real contacts' data, but issue, enter or store nothing for them


class Kind(Protocol):
    """A campaign kind: name, the TOML section it owns, and its hooks."""

    name: ClassVar[str]
    section_key: ClassVar[str]
    section_model: ClassVar[type[SectionModel]]
    transactional: ClassVar[bool]

    def check(self, section: SectionModel, *, today: date) -> list[tuple[tuple, str]]:
        """Semantic problems beyond types, as (key path within the section, message)."""
        ...

    def check_schedule(self, section: SectionModel, schedule) -> str | None:
        """A message when the kind cannot run on this schedule (e.g. a drip needs a trigger)."""
        ...

    def inactive_reason(self, section: SectionModel, *, day: date) -> str | None:
        """Why an occurrence on `day` (in the app timezone) must not run (e.g. out of season), or None."""
        ...

    def before_occurrence(self, section: SectionModel, session, ctx: KindContext) -> None:
        """Work to do once when an occurrence starts, before its ledger is filled."""
        ...

    def due(self, section: SectionModel, session, ctx: KindContext, *, since: datetime) -> Iterable[Due]:
        """Trigger schedules: the occurrences due in (since, ctx.now] that were not sent yet."""
        ...

    def on_tick(self, section: SectionModel, session, ctx: KindContext) -> str | None:
        """Work due at this instant besides sending (e.g. a contest draw); what was done, for the log."""
        ...

    def prepare(self, section: SectionModel, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        """Load per-recipient data into `recipient.extra`; returns {delivery_id: reason} to skip."""
        ...

    def context(self, section: SectionModel, recipient: Recipient) -> dict[str, Any]:
        """The kind's entries in the template context for one recipient."""
        ...

    def sample_recipient_extra(self, section: SectionModel) -> dict[str, Any]:
        """Values a preview or validate run uses in place of real recipient data."""
        ...


class BaseKind:
    """Defaults for the optional hooks, so a kind only writes what it needs."""

    transactional: ClassVar[bool] = False

    def check(self, section, *, today: date) -> list[tuple[tuple, str]]:
        return []

    def check_schedule(self, section, schedule) -> str | None:
        if schedule is not None and schedule.kind == "trigger":
            return f"'{self.name}' campaigns run on at or cron schedules, not on triggers"
        return None

    def inactive_reason(self, section, *, day: date) -> str | None:
        return None

    def before_occurrence(self, section, session, ctx: KindContext) -> None:
        return None

    def due(self, section, session, ctx: KindContext, *, since: datetime) -> Iterable[Due]:
        return ()

    def on_tick(self, section, session, ctx: KindContext) -> str | None:
        return None

    def prepare(self, section, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        return {}

    def sample_recipient_extra(self, section) -> dict[str, Any]:
        return {}
