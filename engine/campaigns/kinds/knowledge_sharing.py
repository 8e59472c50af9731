"""knowledge_sharing: a digest of courses, forum threads, blog posts and tips, never repeating an item.

Items come from the campaign file (`[[newsletter.items]]`) and from RSS/Atom feeds
(`feeds = [...]`), stored in `content_items`. Each recipient gets up to `max_items` items of the
campaign they were never sent, recorded in `item_sends`, whose unique (contact, item) key is
what keeps an item from ever repeating; a recipient with nothing new is skipped, never sent an
empty digest.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from sqlalchemy import and_, case, delete, exists, func, literal, or_, select, true

from ... import feeds
from ...db import upsert_insert
from ...models import Contact, ContentItem, Delivery, DeliveryStatus, ItemSend, Run
from ...outbound import Destinations
from .base import BaseKind, KindContext, Recipient, SectionModel

log = logging.getLogger(__name__)

ItemType = Literal["course", "forum", "blog", "tip"]
ITEM_TYPES: tuple[str, ...] = ("course", "forum", "blog", "tip")
SKIP_NO_NEW_ITEMS = "no new items"

_ITEMS = ContentItem.__table__
_SENDS = ItemSend.__table__
# Deliveries that never reached the recipient: their items may go out in a later digest.
_NOT_DELIVERED = (DeliveryStatus.failed.value, DeliveryStatus.skipped.value)


def _http_url(value: str, *, optional: bool = False) -> str:
    if optional and value == "":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError(f"must be an absolute http(s) URL such as https://example.com/page (got {value!r})")
    if len(value) > 2000:
        raise ValueError("must be at most 2000 characters")
    return value


class Item(SectionModel):
    """One `[[newsletter.items]]` entry: a course, forum invitation, blog post or tip."""

    type: ItemType
    title: str = Field(min_length=1, max_length=500)
    url: str
    summary: str = Field(default="", max_length=4000)
    image_url: str = ""
    key: str = Field(default="", max_length=500, description="what identifies the item; default its url")

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("image_url")
    @classmethod
    def _image_url(cls, value: str) -> str:
        return _http_url(value, optional=True)

    @property
    def item_key(self) -> str:
        """The item's identity in `content_items`."""
        return self.key or self.url


class Feed(SectionModel):
    """One entry of `feeds = [...]`: an RSS 2.0 or Atom feed whose entries become items of `type`."""

    url: str
    type: ItemType = "blog"
    timeout: float = Field(default=10.0, gt=0, le=60, description="seconds for the whole download")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class Newsletter(SectionModel):
    """The `[newsletter]` section of a knowledge_sharing campaign."""

    headline: str = ""
    intro: str = ""
    url: str = ""  # the blog or knowledge centre: the header logo and the closing button point here
    max_items: int = Field(default=5, ge=1, le=20)
    items: list[Item] = []
    feeds: list[Feed] = []

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, optional=True)

    @model_validator(mode="after")
    def _has_content(self):
        if not self.items and not self.feeds:
            raise ValueError("give [[newsletter.items]] or feeds = [...] (or both): a digest needs content")
        return self


class KnowledgeSharing(BaseKind):
    """Digests of file and feed items; each item reaches each contact at most once."""

    name: ClassVar[str] = "knowledge_sharing"
    section_key: ClassVar[str] = "newsletter"
    section_model: ClassVar[type[SectionModel]] = Newsletter

    def check(self, section: Newsletter, *, today) -> list[tuple[tuple, str]]:
        """Two file items with the same key would be one item: the second would never be sent."""
        problems = []
        seen: dict[str, int] = {}
        for index, item in enumerate(section.items):
            first = seen.setdefault(item.item_key, index)
            if first != index:
                field = "key" if item.key else "url"
                problems.append((("items", index, field),
                                 f"item {index + 1} has the same key as item {first + 1} ({item.item_key!r}); "
                                 "give one of them a distinct `key`"))
        return problems

    # -- once per occurrence ----------------------------------------------------------------------

    def before_occurrence(self, section: Newsletter, session, ctx: KindContext) -> None:
        """Store the file's items and fetch every feed; a failing feed is logged and skipped."""
        store_file_items(session, ctx.campaign_id, section.items, now=ctx.now, refresh=True)
        base_url = getattr(getattr(ctx.settings, "app", None), "base_url", "")
        allowed = Destinations.allowing(getattr(getattr(ctx.settings, "feeds", None), "allow_hosts", ()))
        for feed in section.feeds:
            try:
                entries = feeds.fetch_feed(feed.url, timeout=feed.timeout, destinations=allowed,
                                           user_agent=feeds.default_user_agent(base_url))
            except feeds.FeedError as exc:
                log.warning("campaign %s: feed %s failed: %s; the digest uses the items already stored and the "
                            "file's items", ctx.campaign_id, feed.url, exc)
                continue
            except Exception:  # third-party input: a bug in reading one feed must not stop the newsletter
                log.exception("campaign %s: feed %s could not be read; the digest goes out without it",
                              ctx.campaign_id, feed.url)
                continue
            store_feed_items(session, ctx.campaign_id, entries, item_type=feed.type, now=ctx.now)
            log.info("campaign %s: feed %s: %d entries", ctx.campaign_id, feed.url, len(entries))

    # -- once per claimed batch -------------------------------------------------------------------

    def prepare(self, section: Newsletter, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        """Choose each recipient's items (reusing a crashed attempt's choice) and record them."""
        if not recipients:
            return {}
        # Cheap and idempotent: covers a variant's own items, which before_occurrence never sees.
        store_file_items(session, ctx.campaign_id, section.items, now=ctx.now, refresh=False)
        deliveries = {r.delivery_id: r for r in recipients}
        contact_ids = [r.contact_id for r in recipients]
        if _is_test_run(session, ctx.run_id):
            # A test shows what the campaign holds now and records nothing.
            picks = _pick(session, ctx.campaign_id, section, contact_ids, unsent_only=False)
            found = _items_by_id(session, {i for ids in picks.values() for i in ids}, section)
            chosen = {r.delivery_id: [found[i] for i in picks.get(r.contact_id, []) if i in found] for r in recipients}
        else:
            _release_undelivered(session, contact_ids)
            recorded = _recorded_deliveries(session, list(deliveries))
            fresh = [r for r in recipients if r.delivery_id not in recorded]
            if fresh:
                picks = _pick(session, ctx.campaign_id, section, [r.contact_id for r in fresh], unsent_only=True)
                _record(session, fresh, picks, now=ctx.now)
            chosen = _chosen(session, list(deliveries), section)
        skips = {}
        for delivery_id, recipient in deliveries.items():
            items = chosen.get(delivery_id, [])
            if items:
                recipient.extra["newsletter"] = items
            else:
                skips[delivery_id] = SKIP_NO_NEW_ITEMS
        return skips

    # -- once per recipient -----------------------------------------------------------------------

    def context(self, section: Newsletter, recipient: Recipient) -> dict[str, Any]:
        """`newsletter`: headline, intro (and its paragraphs), url, the chosen items, and them grouped by type."""
        items = recipient.extra.get("newsletter")
        if items is None:  # validate and preview render without a database
            items = self.sample_recipient_extra(section)["newsletter"]
        return {"newsletter": {
            "headline": section.headline,
            "intro": section.intro,
            "intro_paragraphs": [" ".join(p.split()) for p in section.intro.split("\n\n") if p.strip()],
            "url": section.url,
            "items": [dict(item) for item in items],
            "groups": _groups(items),
        }}

    def sample_recipient_extra(self, section: Newsletter) -> dict[str, Any]:
        """The file's items as a first digest would mix them, plus a stand-in entry per feed."""
        candidates = [_item_dict(i.type, i.title, i.url, i.summary, i.image_url) for i in section.items]
        for feed in section.feeds:
            host = urlsplit(feed.url).netloc
            candidates.append(_item_dict(feed.type, f"The latest from {host}", f"https://{host}/",
                                         "The newest entry of this feed appears here when the campaign is sent.", ""))
        return {"newsletter": _mix(candidates, section.max_items)}


# -- content_items ------------------------------------------------------------------------------

def store_file_items(session, campaign_id: str, items: list[Item], *, now: datetime, refresh: bool) -> None:
    """Upsert the campaign file's items; `refresh` also rewrites stored ones (the file is the truth)."""
    if not items:
        return
    rows = [{"campaign_id": campaign_id, "item_key": i.item_key, "type": i.type, "title": i.title, "url": i.url,
             "summary": i.summary, "image_url": i.image_url, "source": "file", "published_at": None,
             "fetched_at": now} for i in items]
    stmt = upsert_insert(session, _ITEMS)
    if refresh:
        stmt = stmt.on_conflict_do_update(
            index_elements=["campaign_id", "item_key"],
            set_={c: stmt.excluded[c]
                  for c in ("type", "title", "url", "summary", "image_url", "source", "fetched_at")})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["campaign_id", "item_key"])
    session.execute(stmt, rows)


def store_feed_items(session, campaign_id: str, entries: list[feeds.FeedItem], *, item_type: str,
                     now: datetime) -> None:
    """Upsert a feed's entries by guid/link; an item the file also lists stays the file's."""
    if not entries:
        return
    rows = [{"campaign_id": campaign_id, "item_key": e.key, "type": item_type, "title": e.title, "url": e.url,
             "summary": e.summary, "image_url": e.image_url, "source": "feed", "published_at": e.published_at,
             "fetched_at": now} for e in entries]
    stmt = upsert_insert(session, _ITEMS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["campaign_id", "item_key"],
        set_={c: stmt.excluded[c] for c in ("type", "title", "url", "summary", "image_url", "published_at",
                                             "fetched_at")},
        where=_ITEMS.c.source == "feed")
    session.execute(stmt, rows)


# -- choosing items -----------------------------------------------------------------------------

def _is_test_run(session, run_id: int | None) -> bool:
    if run_id is None:
        return False
    return bool(session.execute(select(Run.is_test).where(Run.id == run_id)).scalar())


def _release_undelivered(session, contact_ids: list[int]) -> None:
    """Forget choices of deliveries that failed or were skipped: those items never reached anyone."""
    undelivered = select(Delivery.id).where(Delivery.contact_id.in_(contact_ids), Delivery.status.in_(_NOT_DELIVERED))
    session.execute(delete(_SENDS).where(_SENDS.c.contact_id.in_(contact_ids), _SENDS.c.delivery_id.in_(undelivered)))


def _recorded_deliveries(session, delivery_ids: list[int]) -> set[int]:
    """Deliveries that already have their items (an earlier attempt chose them before a crash)."""
    return set(session.execute(select(_SENDS.c.delivery_id).where(_SENDS.c.delivery_id.in_(delivery_ids))
                               .distinct()).scalars())


def _pick(session, campaign_id: str, section: Newsletter, contact_ids: list[int], *,
          unsent_only: bool) -> dict[int, list[int]]:
    """Up to max_items item ids per contact, in one query: types taken in turns, best first within a type.

    Within a type the file's items come first, in file order, then feed entries newest first.
    """
    file_keys = [item.item_key for item in section.items]
    feed_types = sorted({feed.type for feed in section.feeds})
    items, contacts = _ITEMS, Contact.__table__
    position = case({key: n for n, key in enumerate(file_keys)}, value=items.c.item_key, else_=0) if file_keys \
        else literal(0)
    from_file = case((items.c.source == "file", 0), else_=1)
    recency = func.coalesce(items.c.published_at, items.c.fetched_at)
    # Items the file no longer lists, and entries of feeds it no longer has, are not sent.
    eligible = or_(and_(items.c.source == "file", items.c.item_key.in_(file_keys)),
                   and_(items.c.source == "feed", items.c.type.in_(feed_types)))
    order = (from_file, position, recency.desc(), items.c.id.desc())
    candidates = (
        select(contacts.c.id.label("contact_id"), items.c.id.label("item_id"), from_file.label("from_file"),
               position.label("position"), recency.label("recency"),
               func.row_number().over(partition_by=(contacts.c.id, items.c.type), order_by=order).label("turn"))
        .select_from(contacts).join(items, true())
        .where(contacts.c.id.in_(contact_ids), items.c.campaign_id == campaign_id, eligible)
    )
    if unsent_only:
        candidates = candidates.where(~exists().where(_SENDS.c.contact_id == contacts.c.id,
                                                      _SENDS.c.item_id == items.c.id))
    c = candidates.subquery()
    ranked = select(c.c.contact_id, c.c.item_id, func.row_number().over(
        partition_by=c.c.contact_id,
        order_by=(c.c.turn, c.c.from_file, c.c.position, c.c.recency.desc(), c.c.item_id.desc())).label("n")).subquery()
    rows = session.execute(select(ranked.c.contact_id, ranked.c.item_id).where(ranked.c.n <= section.max_items)
                           .order_by(ranked.c.contact_id, ranked.c.n)).all()
    picks: dict[int, list[int]] = {}
    for contact_id, item_id in rows:
        picks.setdefault(contact_id, []).append(item_id)
    return picks


def _record(session, recipients: list[Recipient], picks: dict[int, list[int]], *, now: datetime) -> None:
    """Insert the choices; a (contact, item) pair another worker recorded meanwhile is left alone."""
    rows = [{"contact_id": r.contact_id, "item_id": item_id, "delivery_id": r.delivery_id, "created_at": now}
            for r in recipients for item_id in picks.get(r.contact_id, [])]
    if rows:
        stmt = upsert_insert(session, _SENDS).on_conflict_do_nothing(index_elements=["contact_id", "item_id"])
        session.execute(stmt, rows)


_SHOWN = (_ITEMS.c.item_key, _ITEMS.c.type, _ITEMS.c.title, _ITEMS.c.url, _ITEMS.c.summary, _ITEMS.c.image_url)


def _chosen(session, delivery_ids: list[int], section: Newsletter) -> dict[int, list[dict[str, str]]]:
    """What item_sends holds for these deliveries, in the order chosen."""
    rows = session.execute(
        select(_SENDS.c.delivery_id, *_SHOWN).join(_ITEMS, _ITEMS.c.id == _SENDS.c.item_id)
        .where(_SENDS.c.delivery_id.in_(delivery_ids)).order_by(_SENDS.c.delivery_id, _SENDS.c.id)
    ).all()
    own = _file_items(section)
    chosen: dict[int, list[dict[str, str]]] = {}
    for delivery_id, key, *fields in rows:
        chosen.setdefault(delivery_id, []).append(own.get(key) or _item_dict(*fields))
    return chosen


def _items_by_id(session, item_ids: set[int], section: Newsletter) -> dict[int, dict[str, str]]:
    if not item_ids:
        return {}
    own = _file_items(section)
    rows = session.execute(select(_ITEMS.c.id, *_SHOWN).where(_ITEMS.c.id.in_(item_ids))).all()
    return {item_id: own.get(key) or _item_dict(*fields) for item_id, key, *fields in rows}


def _file_items(section: Newsletter) -> dict[str, dict[str, str]]:
    # A variant may list an item under the same key in its own words (a translated title): the
    # row is shared, so the item is still sent once, but each variant shows its own text.
    return {i.item_key: _item_dict(i.type, i.title, i.url, i.summary, i.image_url) for i in section.items}


# -- presenting ---------------------------------------------------------------------------------

def _item_dict(type_: str, title: str, url: str, summary: str, image_url: str) -> dict[str, str]:
    return {"type": type_, "title": title, "url": url, "summary": summary or "", "image_url": image_url or ""}


def _mix(items: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """Take types in turns (first of each type, then second, ...), keeping each type's order."""
    turns: dict[str, int] = {}
    ranked = []
    for index, item in enumerate(items):
        turn = turns[item["type"]] = turns.get(item["type"], 0) + 1
        ranked.append((turn, index, item))
    return [item for _, _, item in sorted(ranked, key=lambda r: r[:2])[:limit]]


def _groups(items: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The items grouped by type, groups in the order their first item was chosen."""
    groups: dict[str, list[dict[str, str]]] = {}
    for item in items:
        groups.setdefault(item["type"], []).append(dict(item))
    return [{"type": type_, "entries": members} for type_, members in groups.items()]
