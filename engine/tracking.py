"""Click and open tracking: a run's links, each message's tracked URLs, and what a click or an open records.

Sending side. A run's compiled templates pass every link target through the `vm_track` filter
(see `engine.rendering.links`). For each message a `MessageTracking` turns a URL into
`{base_url}/r/<token>`, the token being [delivery id, link id] signed for "click", where the link
id names the `links` row holding that URL for the run. A URL the run has not met before gets its
row when the message is finished: one insert-or-ignore for all of that message's new URLs, then
the ids are kept in memory for the rest of the run (`LinkRegistry`). So a redirect can only ever
lead to a URL one of the run's mails contained, whatever a token says.

Not tracked: every page of our own behind the base URL (unsubscribe, preferences, view in browser,
survey answers, contest and coupon pages): unsubscribing stays one direct click (RFC 8058), and
those links already carry a token of their delivery, so a `links` row per recipient would only
cost space and copy what the tokens say (a contest confirmation link even names an address,
which must not outlive an erasure). Nor mailto: and other non-http links, nor URLs longer than
the `links.url` column or with control characters in them.

Recording side: `record_click` and `record_open`, called by the public /r/ and /o/ routes.
Counters live on the delivery (`clicked_at` first click, `click_count`, `opened_at` first open,
`open_count`) and per link in `link_clicks`. To keep the timeline short, a delivery gets one
'opened' event (its first open) and one 'clicked' event per link (its first click); repeats only
move the counters. A click implies an open: it sets `opened_at` when no pixel was loaded (most
mail clients block images), without counting a pixel load. Deliveries of test runs are never
counted: their links still redirect.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from markupsafe import Markup, escape
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from .db import upsert_insert
from .errors import NotFound
from .models import Delivery, DeliveryEvent, DeliveryEventType, Link, LinkClick, Run
from .rendering import RenderedEmail
from .tokens import BadToken, TokenSigner

#: The longest URL a `links` row holds (in UTF-8 bytes, so PostgreSQL's index can take it too).
MAX_URL = 2048
# An http(s) URL without control characters (a space is fine: the redirect percent-encodes it, as a
# browser would) and without white space around it: anything else is left untracked.
_TRACKABLE = re.compile(r"https?://[^\x00-\x1f\x7f]*[^\x00-\x20\x7f]\Z", re.I)
_PLACEHOLDER = re.compile(r"\x00vm(\d+)\x00")


class LinkRegistry:
    """The `links` rows of one run by URL: kept in memory once seen, else inserted (or found) in one transaction."""

    def __init__(self, engine: Engine, run_id: int, *, cache_size: int = 100_000):
        self.engine = engine
        self.run_id = run_id
        self._ids: dict[str, int] = {}
        # Per-recipient URLs (survey answers, share links) would grow the cache with every
        # message; past this size it starts over, which costs one lookup per URL, nothing more.
        self._cache_size = cache_size
        self._lock = threading.Lock()
        table = Link.__table__
        insert = upsert_insert(engine, table)
        # Insert, or (another worker got there first, or the cache started over) touch the existing
        # row, so that RETURNING gives the id either way: one statement per message, not two.
        self._upsert = (insert.on_conflict_do_update(index_elements=["run_id", "url"],
                                                     set_={"url": insert.excluded.url})
                        .returning(table.c.url, table.c.id))

    def get(self, url: str) -> int | None:
        """The link id of `url` if this process has seen it in the run, else None."""
        return self._ids.get(url)

    def register(self, urls: Iterable[str], *, now: datetime) -> dict[str, int]:
        """The link id of each URL, inserting the rows that do not exist yet (idempotent, safe across workers)."""
        urls = list(dict.fromkeys(urls))
        with self._lock:
            found = {u: self._ids[u] for u in urls if u in self._ids}
            missing = [u for u in urls if u not in found]
            if missing:
                with self.engine.begin() as conn:
                    # One statement for any number of rows (executemany), so SQLAlchemy compiles it once.
                    rows = conn.execute(self._upsert, [{"run_id": self.run_id, "url": u, "created_at": now}
                                                       for u in missing]).all()
                fresh = {url: link_id for url, link_id in rows}
                if len(self._ids) + len(fresh) > self._cache_size:
                    self._ids.clear()
                self._ids.update(fresh)
                found.update(fresh)
        return found


class RunTracking:
    """What one run's messages need for tracking: the switches, the signer, the base URL and the run's links."""

    def __init__(self, *, registry: LinkRegistry, signer: TokenSigner, base_url: str, clicks: bool, opens: bool):
        self.registry = registry
        self.signer = signer
        self.clicks = clicks
        self.opens = opens
        self.redirect_prefix = f"{base_url}/r/"
        self.own_pages = f"{base_url}/"
        # Tokens are URL-safe, so only the base URL could need escaping in HTML; check that once.
        self.html_prefix = str(escape(self.redirect_prefix))
        self.pixel_prefix = f'<img src="{escape(base_url)}/o/'

    def for_delivery(self, delivery_id: int) -> "MessageTracking":
        """The tracker one message's templates use (put in the context under `engine.rendering.links.TRACKING`)."""
        return MessageTracking(self, delivery_id)

    def trackable(self, url: str) -> bool:
        """True for a URL that goes through the redirect (see the module docstring for what does not)."""
        return (len(url) <= MAX_URL and _TRACKABLE.match(url) is not None
                and (url.isascii() or len(url.encode("utf-8")) <= MAX_URL)
                and not url.startswith(self.own_pages))


class MessageTracking:
    """One message's tracked URLs; `finish` registers the URLs the run had not seen and fills them in."""

    __slots__ = ("_run", "_delivery_id", "_tokens", "_pending", "_html", "_text")

    def __init__(self, run: RunTracking, delivery_id: int):
        self._run = run
        self._delivery_id = delivery_id
        self._tokens: dict[str, str | None] = {}  # URL -> token (or placeholder); None: not tracked
        self._pending: dict[str, str] = {}  # placeholder -> URL, for URLs without a link id yet
        # What html()/text() answered for a plain-str value: most links appear more than once.
        self._html: dict[str, Markup | str] = {}
        self._text: dict[str, str] = {}

    def token(self, url: str) -> str | None:
        """The click token for `url` in this message (a placeholder until `finish`), or None when not tracked."""
        try:
            return self._tokens[url]
        except KeyError:
            pass
        run = self._run
        token = None
        if run.clicks and run.trackable(url):
            link_id = run.registry.get(url)
            if link_id is None:
                token = f"\x00vm{len(self._pending)}\x00"
                self._pending[token] = url
            else:
                token = run.signer.sign_ids("click", self._delivery_id, link_id)
        self._tokens[url] = token
        return token

    def html(self, value) -> Markup:
        """The tracked URL as HTML for an href value (markup is unescaped first), or the value unchanged."""
        plain = type(value) is str
        if plain:
            done = self._html.get(value)
            if done is not None:
                return done
        token = self.token(value.unescape() if isinstance(value, Markup) else str(value))
        result = value if token is None else Markup(self._run.html_prefix + token)
        if plain:
            self._html[value] = result
        return result

    def text(self, value) -> str:
        """The tracked URL for the plain-text part, or the value unchanged."""
        key = value if type(value) is str else str(value)
        done = self._text.get(key)
        if done is None:
            token = self.token(key)
            done = self._text[key] = value if token is None else self._run.redirect_prefix + token
        return done

    def pixel(self) -> Markup | str:
        """The 1x1 open-tracking image, when open tracking is on."""
        run = self._run
        if not run.opens:
            return ""
        token = run.signer.sign("open", self._delivery_id)
        return Markup(f'{run.pixel_prefix}{token}.gif" width="1" height="1" alt="">')

    def finish(self, rendered: RenderedEmail, *, now: datetime) -> RenderedEmail:
        """`rendered` with the links first seen in this message registered and their tokens filled in."""
        if not self._pending:
            return rendered
        run = self._run
        ids = run.registry.register(self._pending.values(), now=now)
        tokens = {placeholder: run.signer.sign_ids("click", self._delivery_id, ids[url])
                  for placeholder, url in self._pending.items()}
        self._pending = {}
        html_parts = _fill(rendered.html_parts or (rendered.html,), tokens)
        text_parts = _fill(rendered.text_parts or (rendered.text,), tokens)
        return replace(rendered, html="".join(html_parts), text="".join(text_parts), html_parts=html_parts,
                       text_parts=text_parts)


def _fill(parts: tuple[str, ...], tokens: dict[str, str]) -> tuple[str, ...]:
    # The filled pieces are per-recipient text: Markup (a str subclass) keeps the MIME builder
    # from caching them as if they were the template's constant text.
    return tuple(Markup(_PLACEHOLDER.sub(lambda m: tokens[m.group()], piece)) if "\x00" in piece else piece
                 for piece in parts)


# -- recording --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Click:
    """Where a click goes, and whether it was counted (never for test runs)."""

    url: str
    counted: bool


def record_click(session: Session, *, delivery_id: int, link_id: int, now: datetime, count: bool = True) -> Click:
    """Count a click of link `link_id` in delivery `delivery_id`; the URL to redirect to, or BadToken."""
    # The link must be one of the delivery's run: a token naming any other link is refused even
    # though it is signed, so the redirect never goes anywhere else.
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    link = session.get(Link, link_id)
    if link is None or link.run_id != delivery.run_id:
        raise BadToken("this link does not belong to this mail")
    run = session.get(Run, delivery.run_id)
    if not count or run is None or run.is_test:
        return Click(url=link.url, counted=False)
    first_of_link = session.execute(
        upsert_insert(session, LinkClick)
        .values(delivery_id=delivery_id, link_id=link_id, first_at=now, last_at=now, count=1)
        .on_conflict_do_nothing(index_elements=["delivery_id", "link_id"])
        .returning(LinkClick.__table__.c.link_id)
    ).first() is not None
    if not first_of_link:
        session.execute(update(LinkClick).where(LinkClick.delivery_id == delivery_id, LinkClick.link_id == link_id)
                        .values(last_at=now, count=LinkClick.count + 1))
    _set_first(session, Delivery.clicked_at, delivery_id, now)
    session.execute(update(Delivery).where(Delivery.id == delivery_id).values(click_count=Delivery.click_count + 1))
    if first_of_link:
        _event(session, delivery_id, DeliveryEventType.clicked, now, {"url": link.url, "link_id": link_id})
    if _set_first(session, Delivery.opened_at, delivery_id, now):
        _event(session, delivery_id, DeliveryEventType.opened, now, {"via": "click"})
    session.flush()
    return Click(url=link.url, counted=True)


def record_open(session: Session, *, delivery_id: int, now: datetime) -> bool:
    """Count an open (a pixel load) of delivery `delivery_id`; False when nothing was recorded."""
    row = session.execute(select(Delivery.id, Run.is_test).join(Run, Run.id == Delivery.run_id)
                          .where(Delivery.id == delivery_id)).first()
    if row is None or row.is_test:
        return False
    if _set_first(session, Delivery.opened_at, delivery_id, now):
        _event(session, delivery_id, DeliveryEventType.opened, now, {"via": "pixel"})
    session.execute(update(Delivery).where(Delivery.id == delivery_id).values(open_count=Delivery.open_count + 1))
    session.flush()
    return True


def _set_first(session: Session, column, delivery_id: int, now: datetime) -> bool:
    """Set a first-time column unless already set; True when this call set it (safe under concurrent requests)."""
    done = session.execute(update(Delivery).where(Delivery.id == delivery_id, column.is_(None))
                           .values({column.key: now}).returning(Delivery.id)).first()
    return done is not None


def _event(session: Session, delivery_id: int, kind: DeliveryEventType, now: datetime, data: dict) -> None:
    session.add(DeliveryEvent(delivery_id=delivery_id, type=kind.value, occurred_at=now, data=data))
