"""Feeds: RSS 2.0 and Atom fetched from a local HTTP server; every failure is a clear FeedError or warning."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine import feeds
from engine.feeds import FeedError, fetch_feed, parse_feed, try_fetch_feed
from engine.outbound import Destinations

#: The test server listens on loopback, which feeds may reach only when allowed.
LOOPBACK = Destinations.allowing(["127.0.0.1"])

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
  <channel>
    <title>Green living blog</title>
    <link>https://shop.example.com/blog</link>
    <item>
      <title>Beeswax wraps &amp; how to refresh them</title>
      <link>/blog/beeswax-wraps</link>
      <guid isPermaLink="false">post-101</guid>
      <description>&lt;p&gt;Wash in &lt;b&gt;cold&lt;/b&gt; water.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</description>
      <pubDate>Tue, 02 Mar 2027 10:00:00 +0100</pubDate>
      <media:thumbnail url="https://shop.example.com/img/wraps.jpg"/>
    </item>
    <item>
      <title>Recipe: pumpkin soup</title>
      <link>https://shop.example.com/blog/pumpkin-soup</link>
      <pubDate>Mon, 01 Feb 2027 08:00:00 GMT</pubDate>
      <enclosure url="https://shop.example.com/img/soup.jpg" type="image/jpeg" length="1000"/>
    </item>
    <item>
      <title>Newest: compost on a balcony</title>
      <link>https://shop.example.com/blog/balcony-compost</link>
      <content:encoded><![CDATA[<p>Small space, big difference.</p>]]></content:encoded>
      <pubDate>Fri, 05 Mar 2027 07:30:00 GMT</pubDate>
    </item>
    <item><title>No link, so not shown</title></item>
    <item><title>Script link</title><link>javascript:alert(1)</link></item>
  </channel>
</rss>
"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Community forum</title>
  <id>urn:uuid:forum</id>
  <updated>2027-03-04T12:00:00Z</updated>
  <entry>
    <id>urn:uuid:thread-7</id>
    <title type="html">Refill tips &lt;em&gt;thread&lt;/em&gt;</title>
    <link rel="alternate" href="https://community.example.com/t/7"/>
    <link rel="enclosure" type="image/png" href="/img/t7.png"/>
    <published>2027-03-03T09:00:00+01:00</published>
    <summary>Share what works for you.</summary>
  </entry>
  <entry>
    <id>urn:uuid:thread-8</id>
    <title>Repair caf\xc3\xa9 dates</title>
    <link href="https://community.example.com/t/8"/>
    <updated>2027-03-04T12:00:00Z</updated>
    <content type="html">&lt;p&gt;Every first Saturday.&lt;/p&gt;</content>
  </entry>
</feed>
"""


@dataclass
class Route:
    """What the test server answers for one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    delay: float = 0.0  # before the response starts
    trickle: float = 0.0  # between chunks of the body
    chunk: int = 0  # body chunk size when trickling
    length: bool = True  # send Content-Length
    location: str | None = None  # a Location header (with a 3xx status: a redirect)


@dataclass
class FeedServer:
    """An HTTP server on 127.0.0.1 in a thread, serving `routes` and recording request headers."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __enter__(self) -> "FeedServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                server.requests.append(dict(self.headers))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                time.sleep(route.delay)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.location:
                    self.send_header("Location", route.location)
                if route.length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    if route.trickle:
                        for start in range(0, len(route.body), route.chunk or 1):
                            self.wfile.write(route.body[start:start + (route.chunk or 1)])
                            self.wfile.flush()
                            time.sleep(route.trickle)
                    else:
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    with FeedServer() as running:
        yield running


def test_rss_items_are_parsed_newest_first_with_clean_text_and_absolute_links(server):
    server.routes["/rss.xml"] = Route(RSS)
    items = fetch_feed(server.url("/rss.xml"), destinations=LOOPBACK, timeout=5)
    assert [i.title for i in items] == ["Newest: compost on a balcony", "Beeswax wraps & how to refresh them",
                                        "Recipe: pumpkin soup"]
    wraps = items[1]
    assert wraps.key == "post-101"
    assert wraps.url == server.url("/blog/beeswax-wraps")  # relative link resolved against the feed
    assert wraps.summary == "Wash in cold water."  # HTML stripped, script dropped
    assert wraps.image_url == "https://shop.example.com/img/wraps.jpg"
    assert wraps.published_at == datetime(2027, 3, 2, 9, 0, tzinfo=timezone.utc)
    assert items[2].key == "https://shop.example.com/blog/pumpkin-soup"  # no guid: the link
    assert items[2].image_url == "https://shop.example.com/img/soup.jpg"
    assert items[0].summary == "Small space, big difference."


def test_atom_entries_are_parsed(server):
    server.routes["/atom"] = Route(ATOM, content_type="application/atom+xml")
    items = fetch_feed(server.url("/atom"), destinations=LOOPBACK, timeout=5)
    assert [(i.key, i.title) for i in items] == [("urn:uuid:thread-8", "Repair café dates"),
                                                 ("urn:uuid:thread-7", "Refill tips thread")]
    assert items[1].url == "https://community.example.com/t/7"
    assert items[1].image_url == server.url("/img/t7.png")
    assert items[1].published_at == datetime(2027, 3, 3, 8, 0, tzinfo=timezone.utc)
    assert items[0].published_at == datetime(2027, 3, 4, 12, 0, tzinfo=timezone.utc)  # updated, lacking published
    assert items[0].summary == "Every first Saturday."


def test_requests_carry_a_user_agent_and_accept_feeds(server):
    server.routes["/rss.xml"] = Route(RSS)
    fetch_feed(server.url("/rss.xml"), destinations=LOOPBACK, timeout=5,
               user_agent=feeds.default_user_agent("https://news.example.com"))
    headers = server.requests[-1]
    assert headers["User-Agent"].startswith("Valuemail/") and "https://news.example.com" in headers["User-Agent"]
    assert "application/rss+xml" in headers["Accept"]


def _failure(server, route: Route, **options) -> str:
    server.routes["/feed"] = route
    with pytest.raises(FeedError) as info:
        fetch_feed(server.url("/feed"), destinations=LOOPBACK, **options)
    return str(info.value)


def test_an_http_error_is_a_clear_failure(server):
    assert _failure(server, Route(b"oops", status=500, content_type="text/plain"), timeout=5) == \
        "HTTP 500 Internal Server Error"
    assert _failure(server, Route(b"", status=404), timeout=5).startswith("HTTP 404")


def test_a_slow_server_times_out_quickly(server):
    # Without the timeout the feed would arrive after 3 s and parse: the error itself is the proof.
    message = _failure(server, Route(RSS, delay=3), timeout=0.5)
    assert "timed out after 0.5 s" in message


def test_a_body_that_trickles_in_is_cut_off_at_the_overall_deadline(server):
    # Each chunk arrives within the read timeout, but the whole body would take 4 s.
    message = _failure(server, Route(RSS, trickle=0.1, chunk=60), timeout=0.8)
    assert "timed out after 0.8 s (the body was still arriving)" in message


def test_malformed_xml_names_the_line(server):
    broken = RSS.replace(b"</item>\n    <item>\n      <title>Recipe", b"\n    <item>\n      <title>Recipe", 1)
    message = _failure(server, Route(broken), timeout=5)
    assert message.startswith("malformed XML: mismatched tag at line")


def test_a_non_xml_body_is_named_as_such(server):
    text = Route(b"Service temporarily unavailable", content_type="text/plain")
    assert "not XML" in _failure(server, text, timeout=5)
    page = b"<!DOCTYPE html><html><head><title>Blog</title></head><body><p>Hi<br></body></html>"
    assert "an HTML page, not a feed" in _failure(server, Route(page, content_type="text/html"), timeout=5)
    assert "not an RSS 2.0 or Atom feed (root element <opml>)" in _failure(server, Route(b"<opml/>"), timeout=5)


def test_an_oversized_body_is_refused_with_or_without_content_length(server):
    big = RSS + b"<!--" + b"x" * 50_000 + b"-->"
    assert "larger than the 10,000-byte limit" in _failure(server, Route(big), timeout=5, max_bytes=10_000)
    assert "larger than the 10,000-byte limit" in _failure(server, Route(big, length=False), timeout=5,
                                                           max_bytes=10_000)


def test_connection_refused_and_dns_failures_are_clear(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(FeedError, match="could not connect"):
        fetch_feed(f"http://127.0.0.1:{port}/feed", destinations=LOOPBACK, timeout=2)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(FeedError, match="DNS lookup failed"):
        fetch_feed("http://feeds.shop.invalid/rss.xml", timeout=2)


def test_try_fetch_feed_logs_a_warning_naming_the_feed_and_returns_none(server, caplog):
    server.routes["/down"] = Route(b"", status=503)
    with caplog.at_level(logging.WARNING, logger="engine.feeds"):
        assert try_fetch_feed(server.url("/down"), destinations=LOOPBACK, timeout=5) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert server.url("/down") in caplog.text and "HTTP 503" in caplog.text
    server.routes["/rss.xml"] = Route(RSS)
    assert len(try_fetch_feed(server.url("/rss.xml"), destinations=LOOPBACK, timeout=5)) == 3


@pytest.mark.parametrize("document", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><rss><channel>'
    b'<item><title>&b;</title><link>https://x.example/</link></item></channel></rss>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss><channel>'
    b'<item><title>&x;</title><link>https://x.example/</link></item></channel></rss>',
])
def test_entity_declarations_are_refused(document):
    with pytest.raises(FeedError, match="entities"):
        parse_feed(document)


def test_a_legacy_encoding_is_decoded():
    doc = ('<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel><item>'
           '<title>Caf\xe9 \u20ac5 tips</title><link>https://x.example/a</link></item></channel></rss>'
           ).encode("cp1252")
    assert parse_feed(doc)[0].title == "Café €5 tips"


def test_long_text_is_shortened_and_long_keys_are_hashed():
    guid = "g" * 600
    doc = (f'<rss version="2.0"><channel><item><title>T</title><link>https://x.example/a</link>'
           f'<guid isPermaLink="false">{guid}</guid><description>{"word " * 200}</description>'
           f'</item></channel></rss>').encode()
    item = parse_feed(doc)[0]
    assert item.key.startswith("sha256:") and len(item.key) < 100
    assert len(item.summary) <= feeds.SUMMARY_CHARS and item.summary.endswith("…")


def test_an_empty_feed_is_not_an_error():
    assert parse_feed(b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>') == []


# -- where a feed may be fetched from ------------------------------------------------------------

def test_a_loopback_feed_is_refused_unless_allowed(server):
    server.routes["/rss.xml"] = Route(RSS)
    with pytest.raises(FeedError) as refused:
        fetch_feed(server.url("/rss.xml"), timeout=5)
    assert str(refused.value) == ("refused: 127.0.0.1 is a loopback address; add it to [feeds] allow_hosts "
                                  "to fetch from it")
    assert server.requests == []
    assert len(fetch_feed(server.url("/rss.xml"), destinations=LOOPBACK, timeout=5)) == 3
    assert len(fetch_feed(server.url("/rss.xml"), destinations=Destinations.allowing(["127.0.0.0/8"]), timeout=5)) == 3


def test_a_host_name_that_resolves_to_loopback_is_refused(server):
    server.routes["/rss.xml"] = Route(RSS)
    url = server.url("/rss.xml").replace("127.0.0.1", "localhost")
    with pytest.raises(FeedError, match=r"refused: localhost \(127\.0\.0\.1\) is a loopback address"):
        fetch_feed(url, timeout=5)
    assert server.requests == []
    assert len(fetch_feed(url, destinations=Destinations.allowing(["localhost"]), timeout=5)) == 3


def test_every_redirect_hop_is_checked(server):
    """An allowed host that redirects to one that is not: the second hop is never requested."""
    port = server.httpd.server_address[1]
    server.routes["/feed"] = Route(status=302, location=f"http://127.0.0.1:{port}/admin/runs")
    server.routes["/admin/runs"] = Route(RSS)
    only_the_name = Destinations.allowing(["localhost"])
    with pytest.raises(FeedError, match=r"refused: 127\.0\.0\.1 is a loopback address"):
        fetch_feed(f"http://localhost:{port}/feed", destinations=only_the_name, timeout=5)
    assert len(server.requests) == 1  # the redirect itself, not its target
    server.routes["/loop"] = Route(status=301, location="/loop")
    with pytest.raises(FeedError, match="request failed: more than 5 redirects"):
        fetch_feed(server.url("/loop"), destinations=LOOPBACK, timeout=5)


def test_the_connection_goes_to_the_checked_address_with_the_host_name_kept(server):
    """No second DNS lookup (rebinding): the name is resolved once, checked, and that address is used."""
    server.routes["/rss.xml"] = Route(RSS)
    port = server.httpd.server_address[1]
    lookups = []

    def resolve(host, port_):
        lookups.append(host)
        return ["127.0.0.1"]  # feeds.example.com has no real address; only the pinned one can work

    pinned = Destinations.allowing(["127.0.0.1/32"], resolve=resolve)
    items = fetch_feed(f"http://feeds.example.com:{port}/rss.xml", destinations=pinned, timeout=5)
    assert len(items) == 3 and lookups == ["feeds.example.com"]
    assert server.requests[-1]["Host"] == f"feeds.example.com:{port}"
    assert items[0].url.startswith("https://shop.example.com/")  # links resolved against the feed's own URL
