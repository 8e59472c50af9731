"""Contact upserts, keyed by the lower-cased e-mail address.

Partial-update rules (the same for CSV files and API rows, where a missing dict key is an
absent column):

- A column absent from the header (a key absent from the row) leaves the stored value alone.
- An empty cell also leaves the stored value alone; an import never blanks a stored field.
  New contacts get '' names, no country/language/timezone, created_at = now.
- `status` empty keeps the stored status (new contacts: subscribed). `unsubscribed`
  unsubscribes. `subscribed` never re-subscribes a contact who unsubscribed (they opted out;
  only they may opt back in): the rest of the row is applied and the summary counts them.
- `tags` present is the contact's whole tag set: it replaces the stored set, and an empty
  cell removes every tag. Tags are `;`-separated, trimmed and lower-cased.
- Any other column is a custom attribute, stored as a string in `Contact.attributes`; a
  non-empty cell sets that attribute, other stored attributes are kept.
- `updated_at` changes only when something stored actually changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, case, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..clock import Clock
from ..config import Settings
from ..models import Contact, ContactStatus, ContactTag
from ..privacy import erased_among
from . import fields
from .errors import FieldProblem
from .result import ImportResult, SourceRow
from .runner import DEFAULT_BATCH_SIZE, insert_ignore, numbered, run_import, upsert

COLUMNS = ("email", "first_name", "last_name", "country", "language", "timezone", "tags", "status", "created_at")
REQUIRED = ("email",)
STATUSES = tuple(s.value for s in ContactStatus)
MAX_TAG_LENGTH = 100
ERASED_REASON = "email: this address was erased at its owner's request and cannot be imported again"

_contacts = Contact.__table__
_tags = ContactTag.__table__
# Columns compared to decide "unchanged" and written on insert or update.
#: Characters of one custom attribute's value (a note, a plan name; well under the API's 64 KiB per contact).
MAX_ATTRIBUTE_LENGTH = 20_000
_STORED = ("email", "first_name", "last_name", "country", "language", "timezone", "status", "attributes", "created_at")


@dataclass
class ContactRecord:
    """A validated contact row: only the values it actually sets."""

    row: SourceRow
    key: str
    email: str
    values: dict[str, Any]  # non-empty scalar columns present in the row
    status: str | None
    tags: frozenset[str] | None  # None: the row has no tags column
    attributes: dict[str, str]


class ContactHandler:
    """Validates contact rows and upserts them in batches."""

    def __init__(self, *, settings: Settings, clock: Clock, allow_resubscribe: bool = False):
        self.tz = settings.tz
        self.clock = clock
        self.allow_resubscribe = allow_resubscribe
        self._parsers = {
            "first_name": lambda v: fields.single_line(v, column="first_name", max_length=200),
            "last_name": lambda v: fields.single_line(v, column="last_name", max_length=200),
            "country": fields.country,
            "language": fields.language,
            "timezone": fields.timezone_name,
            "created_at": lambda v: fields.timestamp(v, column="created_at", tz=self.tz),
        }

    def validate(self, row: SourceRow) -> tuple[ContactRecord | None, list[str]]:
        """Check one row; returns the record or the problems found."""
        src = row.values
        problems: list[str] = []
        email = key = ""
        try:
            email, key = fields.email(src.get("email"))
        except FieldProblem as problem:
            problems.append(str(problem))
        values: dict[str, Any] = {}
        for column, parse in self._parsers.items():
            cell = fields.text(src.get(column))
            if cell:
                try:
                    values[column] = parse(src[column])
                except FieldProblem as problem:
                    problems.append(str(problem))
        status = None
        cell = fields.text(src.get("status"))
        if cell:
            try:
                status = fields.choice(cell, column="status", allowed=STATUSES)
            except FieldProblem as problem:
                problems.append(str(problem))
        tags = None
        if "tags" in src:
            try:
                tags = parse_tags(src["tags"])
            except FieldProblem as problem:
                problems.append(str(problem))
        try:
            attributes = _attributes(src)
        except FieldProblem as problem:
            problems.append(str(problem))
        if problems:
            return None, problems
        return ContactRecord(row, key, email, values, status, tags, attributes), []

    def apply(self, conn: Connection, records: Sequence[ContactRecord], result: ImportResult) -> list:
        """Upsert a batch of contacts and, where given, replace their tag sets."""
        now = self.clock.now()
        existing = {
            row.email_key: row
            for row in conn.execute(
                select(_contacts.c.id, _contacts.c.email_key, *(_contacts.c[c] for c in _STORED))
                .where(_contacts.c.email_key.in_([r.key for r in records]))
            )
        }
        old_tags: dict[int, set[str]] = {}
        if existing and any(r.tags is not None for r in records):
            ids = [row.id for row in existing.values()]
            for cid, tag in conn.execute(select(_tags.c.contact_id, _tags.c.tag).where(_tags.c.contact_id.in_(ids))):
                old_tags.setdefault(cid, set()).add(tag)

        # An address whose owner asked to be erased is never created again.
        erased = erased_among(conn, [r.key for r in records if r.key not in existing])
        refused = [(r, ERASED_REASON) for r in records if r.key in erased]
        writes: list[dict[str, Any]] = []
        new_tags: dict[str, frozenset[str]] = {}
        for rec in records:
            old = existing.get(rec.key)
            if old is None and rec.key in erased:
                continue
            if old is None:
                stored = {
                    "email": rec.email, "first_name": "", "last_name": "", "country": None, "language": None,
                    "timezone": None, "status": rec.status or ContactStatus.subscribed.value,
                    "attributes": dict(rec.attributes), "created_at": now,
                }
                stored.update(rec.values)
                result.inserted += 1
                writes.append({"email_key": rec.key, **stored, "updated_at": now})
                if rec.tags:
                    new_tags[rec.key] = rec.tags
                continue
            before = dict(zip(_STORED, old[2:]))
            after = {**before, **rec.values, "email": rec.email, "attributes": {**before["attributes"], **rec.attributes}}
            if rec.status:
                if (rec.status == ContactStatus.subscribed.value and before["status"] == ContactStatus.unsubscribed.value
                        and not self.allow_resubscribe):
                    result.kept_unsubscribed += 1
                else:
                    after["status"] = rec.status
            tags_changed = rec.tags is not None and rec.tags != old_tags.get(old.id, set())
            if after == before and not tags_changed:
                result.unchanged += 1
                continue
            result.updated += 1
            # A change of tags alone also counts as an update and bumps updated_at.
            writes.append({"email_key": rec.key, **after, "updated_at": now})
            if tags_changed:
                new_tags[rec.key] = rec.tags

        # Plain executemany (no RETURNING) is several times faster; ids are looked up only for new tags.
        upsert(conn, _contacts, writes, key=("email_key",), guard=None if self.allow_resubscribe else _keep_unsubscribed)
        if new_tags:
            ids = {key: row.id for key, row in existing.items()}
            unknown = [key for key in new_tags if key not in ids]
            if unknown:
                found = conn.execute(select(_contacts.c.email_key, _contacts.c.id).where(_contacts.c.email_key.in_(unknown)))
                ids.update((key, cid) for key, cid in found)
            tagged = [ids[key] for key in new_tags]
            conn.execute(delete(_tags).where(_tags.c.contact_id.in_(tagged)))
            insert_ignore(conn, _tags, [{"contact_id": ids[key], "tag": tag} for key, tags in new_tags.items() for tag in sorted(tags)])
        return refused


def _keep_unsubscribed(excluded) -> dict[str, Any]:
    """ON CONFLICT guard: someone who unsubscribed while the batch was applied stays unsubscribed.

    The batch compared against rows read a moment earlier; on PostgreSQL an unsubscribe click
    can commit in between, and writing the older status back would undo it.
    """
    unsubscribed = ContactStatus.unsubscribed.value
    return {"status": case((and_(_contacts.c.status == unsubscribed, excluded.status != unsubscribed), _contacts.c.status),
                           else_=excluded.status)}


def parse_tags(value: Any) -> frozenset[str]:
    """Tags from a `;`-separated string (or a list), trimmed and lower-cased; empty ones dropped."""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [fields.text(item) for item in value]
    else:
        items = fields.text(value).split(";") if value else []
    tags = frozenset(t for t in (i.strip().lower() for i in items) if t)
    too_long = sorted(t for t in tags if len(t) > MAX_TAG_LENGTH)
    if too_long:
        raise FieldProblem(f"tag {too_long[0][:40]!r}… is longer than {MAX_TAG_LENGTH} characters")
    return tags


def _attributes(src: Mapping[str, Any]) -> dict[str, str]:
    """Custom attributes: every non-empty cell outside the known columns, as normalised free text."""
    attributes: dict[str, str] = {}
    cells = []
    for name, value in src.items():
        if name in COLUMNS:
            continue
        if name == "attributes" and isinstance(value, Mapping):  # the API's attributes object
            cells.extend(value.items())
        else:
            cells.append((name, value))
    for name, value in cells:
        cell = fields.free_text(value, column=str(name), max_length=MAX_ATTRIBUTE_LENGTH)
        if cell:
            attributes[str(name)] = cell
    return attributes


def upsert_contacts(session: Session, rows: Iterable[Mapping[str, Any]], *, settings: Settings, clock: Clock,
                    strict: bool = False, allow_resubscribe: bool = False,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> ImportResult:
    """Upsert contact dicts (CSV column names as keys) in the caller's transaction; rejects are in the result."""
    handler = ContactHandler(settings=settings, clock=clock, allow_resubscribe=allow_resubscribe)
    return run_import(session, handler, numbered(rows), batch_size=batch_size, strict=strict)
