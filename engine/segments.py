"""Named segments from `campaigns/segments.toml`, compiled to SQL conditions.

One table per segment; every rule in a table must hold; a table without rules matches every
subscribed contact. Rules:

    country = "NL" | ["NL", "BE"]          ISO 3166-1 alpha-2, any case
    language = "nl" | ["nl", "fr"]         ISO 639-1, any case
    tags_any / tags = [...]                has at least one of the tags (any case)
    tags_all = [...]                       has every tag
    tags_none = [...]                      has none of the tags
    ltv_min / ltv_max                      lifetime value in the default currency (inclusive)
    orders_min / orders_max                countable orders (returned/cancelled excluded)
    spend_min / spend_max                  revenue from countable orders, all time
    last_order_days_min / _max             days since the last countable order (none: no match)
    created_days_min / _max                days since the contact was created
    attributes = { plan = "pro", category = ["tea", "coffee"] }
                                           custom attribute equal to / one of the values,
                                           compared as text ("10" matches 10)
    description = "..."                    free text for people; not a rule
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Float, String, and_, case, exists, false, func, literal, or_, select, true
from sqlalchemy.sql import ColumnElement, Select, Subquery
from sqlmodel import Session

from .config import Settings
from .errors import CampaignError, Problem
from .ltv import contact_stats, money
from .models import Contact, ContactStatus, ContactTag, KindOptOut, Suppression
from .tomlpos import TomlDocument
from .validation import parse_model

SEGMENT_NAME = re.compile(r"^[a-z0-9_-]+$")
MAX_NAME_LENGTH = 100  # deliveries.segment is VARCHAR(100)
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class UnknownSegment(KeyError):
    """A segment name that segments.toml does not define."""

    def __init__(self, name: str, known: Iterable[str] = ()):
        self.name = name
        self.known = tuple(known)
        super().__init__(name)

    def __str__(self) -> str:
        defined = ", ".join(self.known) if self.known else "none"
        return f"unknown segment '{self.name}' (segments.toml defines: {defined})"


def _string_list(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"must be a {what} or a list of them (got {type(value).__name__} {value!r})")
    if not items:
        raise ValueError(f"list at least one {what}")
    cleaned = [item.strip() for item in items]
    if any(not item for item in cleaned):
        raise ValueError(f"an empty {what} is not allowed")
    return cleaned


def _country_codes(value: Any) -> list[str]:
    import pycountry  # loads its data on first use, not at import time

    codes = [code.upper() for code in _string_list(value, "country code")]
    for code in codes:
        if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
            raise ValueError(f"unknown country code {code!r} (use ISO 3166-1 alpha-2, such as 'NL')")
    return codes


def _language_codes(value: Any) -> list[str]:
    import pycountry

    codes = [code.lower() for code in _string_list(value, "language code")]
    for code in codes:
        if len(code) != 2 or pycountry.languages.get(alpha_2=code) is None:
            raise ValueError(f"unknown language code {code!r} (use ISO 639-1, such as 'nl')")
    return codes


class SegmentRules(BaseModel):
    """The rules of one segment table, validated strictly."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    description: str = ""
    country: Any = None
    language: Any = None
    tags: Any = None
    tags_any: Any = None
    tags_all: Any = None
    tags_none: Any = None
    ltv_min: float | None = None
    ltv_max: float | None = None
    orders_min: int | None = Field(None, ge=0)
    orders_max: int | None = Field(None, ge=0)
    spend_min: float | None = Field(None, ge=0)
    spend_max: float | None = Field(None, ge=0)
    last_order_days_min: float | None = Field(None, ge=0)
    last_order_days_max: float | None = Field(None, ge=0)
    created_days_min: float | None = Field(None, ge=0)
    created_days_max: float | None = Field(None, ge=0)
    attributes: Any = None

    @field_validator("country")
    @classmethod
    def _country(cls, value: Any) -> list[str] | None:
        return None if value is None else _country_codes(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: Any) -> list[str] | None:
        return None if value is None else _language_codes(value)

    @field_validator("tags", "tags_any", "tags_all", "tags_none")
    @classmethod
    def _tags(cls, value: Any) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise ValueError(f"must be a list of tags, such as [\"vip\"] (got {type(value).__name__} {value!r})")
        return [tag.lower() for tag in _string_list(value, "tag")]

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: Any) -> dict[str, list[str]] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"must be a table, such as {{ plan = \"pro\" }} (got {type(value).__name__} {value!r})")
        if not value:
            raise ValueError("name at least one attribute")
        result: dict[str, list[str]] = {}
        for name, wanted in value.items():
            if not ATTRIBUTE_NAME.match(name):
                raise ValueError(f"attribute name {name!r} may only contain letters, digits, _ and -")
            items = wanted if isinstance(wanted, list) else [wanted]
            # bool is an int subclass, and JSON true/false read back differently on each database.
            if not items or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items):
                raise ValueError(
                    f"attribute '{name}' must be a string, an integer or a non-empty list of them "
                    f"(got {type(wanted).__name__} {wanted!r})"
                )
            result[name] = [str(i) for i in items]
        return result

    def rule_names(self) -> list[str]:
        """The rules this table sets (description is not a rule)."""
        return [key for key, value in self if value is not None and key != "description"]


_STATS_RULES = frozenset({
    "ltv_min", "ltv_max", "orders_min", "orders_max", "spend_min", "spend_max",
    "last_order_days_min", "last_order_days_max", "created_days_min", "created_days_max",
})
_RANGES = ("ltv", "orders", "spend", "last_order_days", "created_days")


@dataclass(frozen=True)
class Segment:
    """A named segment and its rules."""

    name: str
    rules: SegmentRules
    line: int | None = None

    @property
    def uses_stats(self) -> bool:
        """True when a rule needs the contact_stats subquery joined in."""
        return any(rule in _STATS_RULES for rule in self.rules.rule_names())

    def condition(self, stats: Subquery | None) -> ColumnElement[bool]:
        """SQL that holds for contacts in this segment; `stats` is ltv.contact_stats joined on contact id."""
        r = self.rules
        if self.uses_stats and stats is None:
            raise ValueError(f"segment '{self.name}' needs the contact_stats subquery")
        terms: list[ColumnElement[bool]] = []
        if r.country:
            terms.append(func.upper(Contact.country).in_(r.country))
        if r.language:
            terms.append(func.lower(Contact.language).in_(r.language))
        tags_any = r.tags_any or r.tags
        if tags_any:
            terms.append(_has_any_tag(tags_any))
        for tag in r.tags_all or ():
            terms.append(_has_any_tag([tag]))
        if r.tags_none:
            terms.append(~_has_any_tag(r.tags_none))
        if stats is not None:
            terms.extend(_range(stats.c.ltv, r.ltv_min, r.ltv_max))
            terms.extend(_range(stats.c.orders_count, r.orders_min, r.orders_max))
            terms.extend(_range(stats.c.revenue_cents, _cents(r.spend_min), _cents(r.spend_max)))
            terms.extend(_range(stats.c.days_since_last_order, r.last_order_days_min, r.last_order_days_max))
            terms.extend(_range(stats.c.days_since_created, r.created_days_min, r.created_days_max))
        for name, values in (r.attributes or {}).items():
            # as_string() is ->> on PostgreSQL and CAST(JSON_EXTRACT(...) AS VARCHAR) on SQLite:
            # text on both, so the comparison does not depend on how the value was stored.
            value = Contact.attributes[name].as_string()
            terms.append(value == values[0] if len(values) == 1 else value.in_(values))
        return and_(*terms) if terms else true()


def _has_any_tag(tags: list[str]) -> ColumnElement[bool]:
    return exists().where(ContactTag.contact_id == Contact.id, func.lower(ContactTag.tag).in_(tags))


def _range(column, low, high) -> list[ColumnElement[bool]]:
    # Bound as floats: a Decimal parameter makes SQLite warn, and numeric >= double is exact enough
    # for values that are already rounded to cents.
    terms = []
    if low is not None:
        terms.append(column >= literal(low, Float if isinstance(low, float) else None))
    if high is not None:
        terms.append(column <= literal(high, Float if isinstance(high, float) else None))
    return terms


def _cents(amount: float | None) -> int | None:
    return None if amount is None else int(Decimal(str(amount)).scaleb(2).to_integral_value())


class Segments(Mapping[str, Segment]):
    """The segments of one file, in the order they are written."""

    def __init__(self, segments: Iterable[Segment], *, path: Path | None = None):
        self._by_name = {segment.name: segment for segment in segments}
        self.path = path

    def __getitem__(self, name: str) -> Segment:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSegment(name, self._by_name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def require(self, name: str) -> Segment:
        """The segment called `name`, or UnknownSegment (a KeyError) naming the defined ones."""
        return self[name]


def load_segments(path: str | Path) -> Segments:
    """Read and validate a segments file; every problem is reported as `file:line: message`."""
    path = Path(path)
    doc = TomlDocument.load(path, error=CampaignError)
    problems: list[Problem] = []
    segments: list[Segment] = []
    for name, table in doc.data.items():
        line = doc.line_of((name,))
        if not isinstance(table, dict):
            problems.append(Problem(str(path), line, f"'{name}' must be a table: write [{name}] and its rules below it"))
            continue
        if not SEGMENT_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
            problems.append(Problem(str(path), line, f"segment name '{name}' may only contain a-z, 0-9, _ and - "
                                                     f"(at most {MAX_NAME_LENGTH} characters)"))
            continue
        try:
            rules = parse_model(SegmentRules, table, doc, error=CampaignError, prefix=(name,))
        except CampaignError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_consistency_problems(name, rules, doc))
        segments.append(Segment(name=name, rules=rules, line=line))
    if problems:
        raise CampaignError(problems)
    return Segments(segments, path=path)


def _consistency_problems(name: str, rules: SegmentRules, doc: TomlDocument) -> list[Problem]:
    problems = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(str(doc.path), doc.line_of((name, key)), f"'{name}.{key}': {message}"))

    for stem in _RANGES:
        low, high = getattr(rules, f"{stem}_min"), getattr(rules, f"{stem}_max")
        if low is not None and high is not None and low > high:
            problem(f"{stem}_min", f"is greater than {stem}_max ({low:g} > {high:g}); no contact can match")
    if rules.tags is not None and rules.tags_any is not None:
        problem("tags", "'tags' means tags_any; use one of them, not both")
    wanted = set(rules.tags_all or ()) | set(rules.tags_any or rules.tags or ())
    clash = sorted(wanted & set(rules.tags_none or ()))
    if clash:
        problem("tags_none", f"excludes tags the segment also requires ({', '.join(clash)}); no contact can match")
    return problems


# --- queries ---------------------------------------------------------------------------------


def audience_condition(kind: str | None = None) -> ColumnElement[bool]:
    """Contacts that may be mailed: subscribed, not suppressed and, given a campaign kind, not opted out of it."""
    suppressed = exists().where(Suppression.email_key == Contact.email_key)
    condition = and_(Contact.status == ContactStatus.subscribed.value, Contact.erased_at.is_(None), ~suppressed)
    if kind is not None:
        opted_out = exists().where(KindOptOut.contact_id == Contact.id, KindOptOut.kind == kind)
        condition = and_(condition, ~opted_out)
    return condition


def membership_query(segments: Segments, names: list[str], *, now: datetime, settings: Settings,
                     after_id: int = 0, limit: int | None = None, kind: str | None = None) -> Select:
    """(contact_id, email, segment) per mailable contact, segment = the first of `names` it matches, by id.

    With `kind`, contacts who opted out of that campaign kind in the preference centre are left out.
    """
    chosen = [segments.require(name) for name in names]
    stats = None
    if any(segment.uses_stats for segment in chosen):
        # A batch reads only the contacts up to its LIMIT, so totals per contact beat one GROUP BY.
        stats = contact_stats(now=now, settings=settings, after_id=after_id, per_contact=limit is not None)
    conditions = [(segment.condition(stats), segment.name) for segment in chosen]
    if conditions:
        label = case(*[(cond, literal(name, String)) for cond, name in conditions])
        matches = or_(*[cond for cond, _ in conditions])
    else:
        label, matches = literal(None, String), false()
    query = (
        select(Contact.id.label("contact_id"), Contact.email.label("email"), label.label("segment"))
        .select_from(Contact)
        .where(audience_condition(kind), matches)
        .order_by(Contact.id)
    )
    if stats is not None:
        query = query.join(stats, stats.c.contact_id == Contact.id)
    if after_id:
        query = query.where(Contact.id > after_id)
    if limit is not None:
        query = query.limit(limit)
    return query


@dataclass(frozen=True)
class SegmentRow:
    """One line of the segment report (amounts in the default currency; avg None when empty)."""

    name: str
    contacts: int
    avg_ltv: Decimal | None
    total_ltv: Decimal


def segment_report(session: Session, segments: Segments, *, now: datetime, settings: Settings) -> list[SegmentRow]:
    """Mailable contacts, average and total LTV per segment, each segment counted on its own; one query."""
    return _report(session, list(segments.values()), now=now, settings=settings)[0]


def audience_summary(session: Session, *, now: datetime, settings: Settings) -> SegmentRow:
    """The same figures for every mailable contact (subscribed, not suppressed)."""
    return _report(session, [], now=now, settings=settings)[1]


def _report(session: Session, chosen: list[Segment], *, now: datetime,
            settings: Settings) -> tuple[list[SegmentRow], SegmentRow]:
    stats = contact_stats(now=now, settings=settings)
    flags = [case((segment.condition(stats), 1), else_=0).label(f"in_{i}") for i, segment in enumerate(chosen)]
    per_contact = (
        select(stats.c.ltv.label("ltv"), *flags)
        .select_from(Contact)
        .join(stats, stats.c.contact_id == Contact.id)
        .where(audience_condition())
        # OFFSET 0 keeps both databases from merging this into the aggregate below, which would
        # evaluate every condition twice per contact (once for the count, once for the sum).
        .offset(0)
        .subquery("per_contact")
    )
    columns = [func.count(), func.sum(per_contact.c.ltv)]
    for i in range(len(chosen)):
        flag = per_contact.c[f"in_{i}"]
        columns += [func.sum(flag), func.sum(flag * per_contact.c.ltv)]
    values = session.execute(select(*columns)).one()
    total = _row("subscribed", values[0], values[1])
    rows = [_row(segment.name, values[2 + 2 * i], values[3 + 2 * i]) for i, segment in enumerate(chosen)]
    return rows, total


def _row(name: str, contacts, total) -> SegmentRow:
    count = int(contacts or 0)
    total_ltv = money(total)
    avg = money(total_ltv / count) if count else None
    return SegmentRow(name=name, contacts=count, avg_ltv=avg, total_ltv=total_ltv)
