"""Fetch and parse RSS 2.0 and Atom feeds: bounded in time and size, hardened against hostile XML.

`fetch_feed` raises `FeedError` with a reader-friendly reason for every expected failure (HTTP
error, timeout, DNS or connection failure, oversized or malformed body); `try_fetch_feed` logs
that reason as a warning naming the feed and returns None, so a caller keeps what it had.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Callable
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

import requests
import urllib3

from . import __version__, outbound
from .outbound import Destinations

log = logging.getLogger(__name__)

#: Bodies larger than this are refused (a feed of 50 long posts is well under 1 MB).
MAX_FEED_BYTES = 5 * 1024 * 1024
#: Entries taken from one feed, newest first; older ones are never going to make a digest.
MAX_FEED_ITEMS = 50
CONNECT_TIMEOUT = 5.0
SUMMARY_CHARS = 300
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"

# Column sizes of content_items: longer values are cut (titles) or the item is dropped (URLs).
_KEY_MAX, _TITLE_MAX, _URL_MAX = 500, 500, 2000

ATOM = "http://www.w3.org/2005/Atom"
_MEDIA = "http://search.yahoo.com/mrss/"
_CONTENT = "http://purl.org/rss/1.0/modules/content/"
_DC = "http://purl.org/dc/elements/1.1/"
# Encodings expat decodes itself; any other declared encoding is decoded by Python first.
_EXPAT_ENCODINGS = {"utf-8", "utf8", "utf-16", "utf16", "iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii"}
_HTML_PAGE = re.compile(rb"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


class FeedError(Exception):
    """A feed could not be fetched or read; the message says why."""


@dataclass(frozen=True)
class FeedItem:
    """One entry of a feed, reduced to what a digest shows."""

    key: str  # the guid / id, else the link
    title: str
    url: str
    summary: str = ""
    image_url: str = ""
    published_at: datetime | None = None  # aware UTC


def default_user_agent(base_url: str = "") -> str:
    """The User-Agent sent with feed requests, naming the product and where it runs."""
    return f"Valuemail/{__version__} (+{base_url})" if base_url else f"Valuemail/{__version__}"


# -- fetching ----------------------------------------------------------------------------------

def fetch_feed(url: str, *, timeout: float = 10.0, max_bytes: int = MAX_FEED_BYTES, user_agent: str | None = None,
               destinations: Destinations | None = None,
               monotonic: Callable[[], float] = time.monotonic) -> list[FeedItem]:
    """Download and parse the feed at `url` within `timeout` seconds overall; raises FeedError.

    Only public addresses are fetched, at every redirect, unless `destinations` allows more
    (`[feeds] allow_hosts`).
    """
    headers = {"User-Agent": user_agent or default_user_agent(), "Accept": ACCEPT}
    deadline = monotonic() + timeout
    try:
        response, final_url = outbound.get(url, destinations=destinations or Destinations(), headers=headers,
                                           timeout=(min(CONNECT_TIMEOUT, timeout), timeout))
        with response:
            if response.status_code >= 400:
                raise FeedError(f"HTTP {response.status_code} {response.reason or ''}".strip())
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FeedError(f"response of {int(length):,} bytes is larger than the {max_bytes:,}-byte limit")
            body = _read_bounded(response, max_bytes=max_bytes, deadline=deadline, timeout=timeout,
                                 monotonic=monotonic)
    except outbound.RefusedDestination as exc:
        raise FeedError(f"refused: {exc}") from None
    except outbound.UnknownHost as exc:
        raise FeedError(f"could not connect: DNS lookup failed ({exc})") from None
    except requests.Timeout:
        raise FeedError(f"timed out after {timeout:g} s") from None
    except requests.ConnectionError as exc:
        raise FeedError(f"could not connect: {_connection_reason(exc)}") from None
    except requests.RequestException as exc:
        raise FeedError(f"request failed: {exc}") from None
    return parse_feed(body, base_url=final_url)


def try_fetch_feed(url: str, **options) -> list[FeedItem] | None:
    """`fetch_feed`, but a failure is logged as a warning naming the feed and None is returned."""
    try:
        return fetch_feed(url, **options)
    except FeedError as exc:
        log.warning("feed %s failed: %s", url, exc)
        return None


def _read_bounded(response: requests.Response, *, max_bytes: int, deadline: float, timeout: float,
                  monotonic: Callable[[], float]) -> bytes:
    # The read timeout bounds each wait for data, so a server trickling bytes could go on for
    # ever; read1 returns whatever has arrived, so the overall deadline and the size cap (on the
    # decompressed size: that is what sits in memory) are checked as the body comes in.
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > max_bytes:
                raise FeedError(f"response is larger than the {max_bytes:,}-byte limit")
            if monotonic() > deadline:
                raise FeedError(f"timed out after {timeout:g} s (the body was still arriving)")
            chunks.append(chunk)
    except urllib3.exceptions.ReadTimeoutError:
        raise FeedError(f"timed out after {timeout:g} s") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise FeedError(f"the connection broke while reading the body: {exc}") from None
    return b"".join(chunks)


def _connection_reason(exc: requests.ConnectionError) -> str:
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the real cause
    text = str(reason)
    if "NameResolution" in type(reason).__name__ or "Failed to resolve" in text or "Name or service not known" in text:
        return f"DNS lookup failed ({_strip_object_repr(text)})"
    return _strip_object_repr(text)


def _strip_object_repr(text: str) -> str:
    return re.sub(r"^<[^>]+ object at 0x[0-9a-f]+>:\s*", "", text)


# -- parsing -----------------------------------------------------------------------------------

def parse_feed(data: bytes, *, base_url: str = "", limit: int = MAX_FEED_ITEMS) -> list[FeedItem]:
    """The entries of an RSS 2.0 or Atom document, newest first, at most `limit`; raises FeedError."""
    root = _parse_xml(data)
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise FeedError("RSS document without a <channel>")
        items = [_rss_item(node, base_url) for node in channel.iter("item")]
    elif root.tag == f"{{{ATOM}}}feed":
        items = [_atom_entry(node, base_url) for node in root.iter(f"{{{ATOM}}}entry")]
    elif root.tag in ("html", "{http://www.w3.org/1999/xhtml}html"):
        raise FeedError("the response is an HTML page, not a feed (is the feed URL right?)")
    else:
        raise FeedError(f"not an RSS 2.0 or Atom feed (root element <{_local(root.tag)}>)")
    kept = [item for item in items if item is not None]
    # Stable sort: undated entries keep their document order after the dated ones.
    kept.sort(key=lambda i: i.published_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return _unique(kept)[:limit]


def _unique(items: list[FeedItem]) -> list[FeedItem]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


def _parse_xml(data: bytes) -> Element:
    """Parse with expat into an ElementTree, refusing entity declarations (billion laughs, XXE)."""
    if not data.strip():
        raise FeedError("empty response body")
    encoding = None
    declared = _DECLARED_ENCODING.match(data)
    if declared and declared.group(1).decode("ascii").lower() not in _EXPAT_ENCODINGS:
        name = declared.group(1).decode("ascii")
        try:
            data = data.decode(codecs.lookup(name).name).encode("utf-8")
        except (LookupError, UnicodeDecodeError) as exc:
            raise FeedError(f"cannot decode the declared encoding {name!r}: {exc}") from None
        encoding = "utf-8"
    builder = TreeBuilder()
    parser = expat.ParserCreate(encoding, namespace_separator="}")
    parser.buffer_text = True

    def name(raw: str) -> str:
        return "{" + raw if "}" in raw else raw

    def refuse_entities(*_args) -> None:
        raise FeedError("the document declares XML entities, which feeds never need (refused for safety)")

    parser.StartElementHandler = lambda tag, attrs: builder.start(name(tag), {name(k): v for k, v in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(name(tag))
    parser.CharacterDataHandler = builder.data
    parser.EntityDeclHandler = refuse_entities
    parser.UnparsedEntityDeclHandler = refuse_entities
    parser.ExternalEntityRefHandler = lambda *_args: 0  # never load anything from outside the body
    try:
        parser.Parse(data, True)
        return builder.close()
    except expat.ExpatError as exc:
        if _HTML_PAGE.match(data):
            raise FeedError("the response is an HTML page, not a feed (is the feed URL right?)") from None
        if exc.lineno == 1 and exc.offset == 0 and not data.lstrip().startswith(b"<"):
            raise FeedError("the response is not XML (is the feed URL right?)") from None
        raise FeedError(f"malformed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}, "
                        f"column {exc.offset + 1}") from None
    except AssertionError:  # TreeBuilder: unbalanced document
        raise FeedError("malformed XML: unbalanced elements") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(node: Element | None) -> str:
    return "".join(node.itertext()).strip() if node is not None else ""


def _rss_item(node: Element, base_url: str) -> FeedItem | None:
    link = _url(_text(node.find("link")), base_url)
    guid_node = node.find("guid")
    guid = _text(guid_node)
    if not link and guid and (guid_node.get("isPermaLink", "true").lower() != "false"):
        link = _url(guid, base_url)
    summary = _text(node.find("description")) or _text(node.find(f"{{{_CONTENT}}}encoded"))
    published = _rfc822(_text(node.find("pubDate"))) or _iso(_text(node.find(f"{{{_DC}}}date")))
    image = ""
    for enclosure in node.findall("enclosure"):
        if enclosure.get("type", "").startswith("image/"):
            image = enclosure.get("url", "")
            break
    return _item(guid or link, _text(node.find("title")), link, summary, image or _media_image(node), published,
                 base_url)


def _atom_entry(node: Element, base_url: str) -> FeedItem | None:
    link, image = "", ""
    for element in node.findall(f"{{{ATOM}}}link"):
        rel, href = element.get("rel", "alternate"), element.get("href", "")
        if rel == "alternate" and not link:
            link = _url(href, base_url)
        elif rel == "enclosure" and element.get("type", "").startswith("image/") and not image:
            image = href
    summary = _text(node.find(f"{{{ATOM}}}summary")) or _text(node.find(f"{{{ATOM}}}content"))
    published = _iso(_text(node.find(f"{{{ATOM}}}published"))) or _iso(_text(node.find(f"{{{ATOM}}}updated")))
    return _item(_text(node.find(f"{{{ATOM}}}id")) or link, _text(node.find(f"{{{ATOM}}}title")), link, summary,
                 image or _media_image(node), published, base_url)


def _media_image(node: Element) -> str:
    thumbnail = node.find(f"{{{_MEDIA}}}thumbnail")
    if thumbnail is not None and thumbnail.get("url"):
        return thumbnail.get("url", "")
    for content in node.iter(f"{{{_MEDIA}}}content"):
        if content.get("medium") == "image" or content.get("type", "").startswith("image/"):
            return content.get("url", "")
    return ""


def _item(key: str, title: str, url: str, summary: str, image: str, published: datetime | None,
          base_url: str) -> FeedItem | None:
    if not url:
        return None  # nothing to link to: a digest entry without a link is useless
    summary = shorten(plain_text(summary), SUMMARY_CHARS)
    title = plain_text(title) or shorten(summary, 80) or url
    if len(key) > _KEY_MAX:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    image = _url(image, base_url)
    return FeedItem(key=key, title=shorten(title, _TITLE_MAX), url=url, summary=summary,
                    image_url=image if len(image) <= _URL_MAX else "", published_at=published)


def _url(value: str, base_url: str) -> str:
    """An absolute http(s) URL of at most 2000 characters, or "" (javascript: and the like are dropped)."""
    value = value.strip()
    if not value:
        return ""
    absolute = urljoin(base_url, value) if base_url else value
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(absolute) > _URL_MAX:
        return ""
    return absolute


def _rfc822(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return _iso(value)  # some feeds put ISO 8601 in pubDate
    return _utc(parsed)


def _iso(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None


def _utc(value: datetime) -> datetime:
    # A date without a zone is read as UTC: better a few hours off than no order at all.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# -- text --------------------------------------------------------------------------------------

class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in ("p", "br", "div", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def plain_text(value: str) -> str:
    """HTML (as feeds put in descriptions) reduced to one line of plain text."""
    if "<" not in value and "&" not in value:
        return " ".join(value.split())
    parser = _TextOnly()
    parser.feed(value)
    parser.close()
    return " ".join(html.unescape("".join(parser.parts)).split())


def shorten(value: str, limit: int) -> str:
    """`value` cut at a word boundary to at most `limit` characters, with an ellipsis when cut."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "…"

