"""Link tracking at compile time: which links are rewritten, what URL the tracker gets, and the open pixel."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html import unescape

import pytest

from engine.rendering import Renderer
from engine.rendering.links import TRACKING
from engine.tokens import TokenSigner
from engine.tracking import MAX_URL, RunTracking

from .conftest import TEMPLATES, doc, section

BASE = "https://mail.example.com"
NOW = datetime(2027, 3, 20, 9, 0, tzinfo=timezone.utc)
TEMPLATE = doc(section("""
<mj-image src="https://example.com/logo.png" href="{{ links.shop }}" alt="Example Shop" />
<mj-text>
  <p>Dear {{ contact.first_name }},</p>
  <p><a href="https://example.com/a?x=1&amp;y=2">Article A</a> and
     <a href="https://example.com/p/{{ product.slug }}?ref=mail&amp;id={{ product.id }}">{{ product.name }}</a>.</p>
  <p>Also on https://example.com/recipes. And <a href="{{ item.url }}">{{ item.url }}</a></p>
  <p><a href="mailto:help@example.com">help@example.com</a> <a href="#top">top</a> <a href="/relative">rel</a>
     <a href="{% if vip %}https://example.com/vip{% else %}https://example.com/all{% endif %}">offer</a>
     <a href="HTTPS://EXAMPLE.COM/LOUD">loud</a></p>
  <p><a href="{{ links.preferences }}">Preferences</a> <a href="{{ links.unsubscribe }}">Unsubscribe</a>
     <a href="{{ links.view_in_browser }}">View</a> <a href="{{ links.unsubscribe }}&amp;x=1">Unsubscribe too</a></p>
</mj-text>
<mj-button href="{{ links.shop }}">Shop now</mj-button>
"""))
LINKS = {"unsubscribe": f"{BASE}/u/tok-u", "preferences": f"{BASE}/p/tok-p", "view_in_browser": f"{BASE}/v/tok-v",
         "shop": "https://example.com/shop?a=1&b=2"}


class MemoryRegistry:
    """A `LinkRegistry` stand-in: ids in a dict, counting how often it is asked to store."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def get(self, url):
        return self.ids.get(url)

    def register(self, urls, *, now):
        urls = list(urls)
        self.calls.append(urls)
        for url in urls:
            self.ids.setdefault(url, len(self.ids) + 1)
        return {u: self.ids[u] for u in urls}


@pytest.fixture
def renderer(templates):
    templates.write("mail.mjml", TEMPLATE)
    return Renderer(templates.root)


def context(**extra):
    return {"contact": {"first_name": "Anneke"}, "links": dict(LINKS), "vip": True,
            "product": {"slug": "tea towels", "id": 7, "name": "Tea towels"},
            "item": {"url": "https://blog.example.com/post?q=a&b=<c>"}, **extra}


def tracked(renderer, *, clicks=True, opens=True, delivery_id=42, registry=None, base=BASE):
    run = RunTracking(registry=registry or MemoryRegistry(), signer=TokenSigner("k"), base_url=base, clicks=clicks,
                      opens=opens)
    ctx = context()
    ctx[TRACKING] = tracker = run.for_delivery(delivery_id)
    out = renderer.compile("mail.mjml", subject="Hi", tracking=True).render(ctx)
    return tracker.finish(out, now=NOW), run


def hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'<a [^>]*href="([^"]*)"', html)]


def targets(run, urls, delivery_id=42) -> list[str]:
    """Where each tracked URL redirects (through the registry), others as they are."""
    back = {v: k for k, v in run.registry.ids.items()}
    out = []
    for url in urls:
        if url.startswith(f"{BASE}/r/"):
            got_delivery, link = run.signer.unsign_ids("click", url.rsplit("/", 1)[1], 2)
            assert got_delivery == delivery_id
            out.append(back[link])
        else:
            out.append(url)
    return out


def test_every_http_link_is_rewritten_to_a_token_naming_its_original_url(renderer):
    out, run = tracked(renderer)
    plain = renderer.compile("mail.mjml", subject="Hi").render(context())
    found = hrefs(out.html)
    assert len(found) == len(hrefs(plain.html))
    assert targets(run, found) == hrefs(plain.html)  # every link leads where it led before
    rewritten = {h for h in found if h.startswith(f"{BASE}/r/")}
    assert {targets(run, [h])[0] for h in rewritten} == {
        "https://example.com/shop?a=1&b=2", "https://example.com/a?x=1&y=2",
        "https://example.com/p/tea towels?ref=mail&id=7", "https://blog.example.com/post?q=a&b=<c>",
        "HTTPS://EXAMPLE.COM/LOUD", "https://example.com/vip"}
    left = [h for h in found if not h.startswith(f"{BASE}/r/")]
    assert left == ["mailto:help@example.com", "#top", "/relative",
                    LINKS["preferences"], LINKS["unsubscribe"], LINKS["view_in_browser"],
                    LINKS["unsubscribe"] + "&x=1"]


def test_the_text_part_shows_tracked_urls_including_bare_ones(renderer):
    out, run = tracked(renderer)
    urls = re.findall(r"https?://[^\s()]+", out.text)
    shown = targets(run, [u.rstrip(".") for u in urls])
    assert "https://example.com/recipes" in shown and "https://example.com/a?x=1&y=2" in shown
    assert not [u for u in urls if not u.startswith(f"{BASE}/r/") and not u.startswith(f"{BASE}/")]
    # Our own pages stay direct in the text too.
    assert f"({LINKS['unsubscribe']})" in out.text and f"({LINKS['preferences']})" in out.text
    # A link whose text is its own URL shows it once, tracked.
    line = next(line for line in out.text.splitlines() if "And " in line).split("And ")[1]
    assert targets(run, [line]) == ["https://blog.example.com/post?q=a&b=<c>"]


def test_one_token_per_url_and_one_registration_per_message(renderer):
    registry = MemoryRegistry()
    out, run = tracked(renderer, registry=registry)
    assert len(registry.calls) == 1  # every new URL of the message in one go
    assert "\x00" not in out.html + out.text and "\x00" not in "".join(out.html_parts + out.text_parts)
    assert out.html == "".join(out.html_parts) and out.text == "".join(out.text_parts)
    shop = [h for h in hrefs(out.html) if targets(run, [h])[0] == LINKS["shop"]]
    assert len(shop) == 2 and shop[0] == shop[1]
    again, _ = tracked(renderer, registry=registry, delivery_id=43)
    assert len(registry.calls) == 1  # the run knows them all now
    assert set(hrefs(again.html)).isdisjoint(h for h in hrefs(out.html) if h.startswith(f"{BASE}/r/"))


def test_open_pixel_before_the_end_of_body_only_when_opens_are_on(renderer):
    out, run = tracked(renderer, opens=True)
    pixel = re.search(rf'<img src="{BASE}/o/([^"]+)\.gif" width="1" height="1" alt="">\s*</body>', out.html)
    assert pixel and run.signer.unsign("open", pixel.group(1)) == 42
    assert "/o/" not in out.text
    off, _ = tracked(renderer, opens=False)
    assert "/o/" not in off.html


def as_tracked_text(plain: str) -> str:
    """The untracked text, but a link showing its own URL as `u (u)` shows it once, as the tracked template does."""
    url = context()["item"]["url"]
    return plain.replace(f"{url} ({url})", url)


def test_clicks_off_leaves_links_exactly_as_the_untracked_template_renders_them(renderer):
    plain = renderer.compile("mail.mjml", subject="Hi").render(context())
    out, _ = tracked(renderer, clicks=False, opens=False)
    assert out.html == plain.html and out.text == as_tracked_text(plain.text) != plain.text


def test_a_tracked_template_without_a_tracker_renders_like_the_plain_one(renderer):
    plain = renderer.compile("mail.mjml", subject="Hi").render(context())
    same = renderer.compile("mail.mjml", subject="Hi", tracking=True).render(context())
    assert same.html == plain.html and same.text == as_tracked_text(plain.text)


def test_urls_that_cannot_be_stored_or_followed_stay_as_written(renderer):
    run = RunTracking(registry=MemoryRegistry(), signer=TokenSigner("k"), base_url=BASE, clicks=True, opens=False)
    tracker = run.for_delivery(1)
    for url in ["https://example.com/" + "a" * (MAX_URL - 20), "https://example.com/a b", "https://exämple.com/ü"]:
        assert tracker.text(url).startswith(f"{BASE}/r/"), url
    for url in ["https://example.com/" + "a" * MAX_URL, "https://example.com/" + "é" * 1100,
                "https://example.com/a\tb", "https://example.com/\nx", " https://example.com/",
                "javascript:alert(1)", "ftp://example.com/",
                f"{BASE}/u/tok", f"{BASE}/p/tok", f"{BASE}/v/tok", f"{BASE}/r/tok", f"{BASE}/o/tok.gif", ""]:
        assert tracker.text(url) == url, url


def test_a_base_url_needing_html_escaping_is_escaped_in_the_html(renderer):
    out, _ = tracked(renderer, base="https://mail.example.com/a&b")
    assert 'href="https://mail.example.com/a&amp;b/r/' in out.html
    assert "https://mail.example.com/a&b/r/" in out.text


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.mjml")))
def test_every_shipped_template_compiles_with_tracking(name, caplog):
    renderer = Renderer(TEMPLATES)
    email = renderer.compile(name, subject="Hi", tracking=True)
    assert not caplog.records  # no fallback to untracked links
    assert "vm_track" in email.html_source and "vm_track" in email.text_source
    assert "vm_open_pixel()" in email.html_source
