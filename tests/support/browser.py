"""A phone-sized Chromium (Debian's, driven by Playwright) for the recipient pages, and the mails that lead there.

Chromium is part of the test set-up: when it is missing the browser tests FAIL (never skip), so a
machine without it cannot look green.

`Phone` is one recipient's browser (its own cookies) at 375 px: every page it visits can be checked
the same way (`check`): nothing wider than the screen, tap targets at least 44 px tall, no console
errors or uncaught script errors, and a full-page screenshot under test-artifacts/. The tests have
no internet: requests to any other host than the server under test get a blank image (images) or
are refused (anything else), so a page never waits on, or logs errors about, the outside world.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: The phone: an iPhone-SE-sized screen.
WIDTH, HEIGHT = 375, 740
#: The smallest tap target (WCAG 2.5.5, Apple and Google guidelines).
MIN_TAP = 44
#: A 1x1 transparent PNG, served for every image from another host.
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
# What Chromium logs for a response with an error status; the page's own status is asserted instead.
_STATUS_LOG = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


def launch(playwright):
    """Debian's Chromium, headless; a missing binary fails the test with the fix."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium missing at {CHROMIUM}: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextmanager
def chromium():
    """Playwright and Debian's Chromium for a block; either one missing fails (never skips) the test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Phone:
    """One recipient's browser: a fresh context (no cookies shared with other phones) and one tab."""

    browser: object
    site_url: str
    page: object = field(init=False)
    problems: list[str] = field(default_factory=list, init=False)
    screenshots: list[Path] = field(default_factory=list, init=False)

    def __post_init__(self):
        self.context = self.browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=2,
                                                is_mobile=True, has_touch=True, accept_downloads=True)
        origin = self.site_url.rstrip("/")
        self.context.route(lambda url: not (url == origin or url.startswith(origin + "/")), self._offline)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))

    @staticmethod
    def _offline(route):
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=BLANK_PNG)
        else:
            route.abort("internetdisconnected")

    def open(self, url: str):
        """Go to `url` (following redirects); the final response."""
        response = self.page.goto(url)
        self.page.wait_for_load_state("load")
        return response

    def click(self, selector: str):
        """Tap `selector` and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.locator(selector).tap()
        self.page.wait_for_load_state("load")

    def heading(self) -> str:
        return self.page.locator("h1").first.inner_text().strip()

    def text(self) -> str:
        return self.page.locator("body").inner_text()

    def check(self, name: str, *, status: int = 200, tap_targets: str = "button, a.button, input[type=submit]") -> Path:
        """The phone checks of the page shown now, then its full-page screenshot `<name>-375.png`.

        `status` is the page's expected HTTP status: Chromium logs a console error for any 4xx, which
        is expected (and only then ignored) on an error page. `tap_targets` selects the buttons
        that must be tall enough ("" for none, e.g. on the mail itself).
        """
        page = self.page
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{name}: the page is {width}px wide on a {WIDTH}px screen (horizontal scrolling)"
        if tap_targets:
            for target in page.locator(tap_targets).all():
                if not target.is_visible():
                    continue
                box = target.bounding_box()
                label = target.inner_text().strip() or target.get_attribute("value") or "?"
                assert box["height"] >= MIN_TAP, f"{name}: {label!r} is {box['height']:.0f}px tall, under {MIN_TAP}px"
                assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH + 0.5, f"{name}: {label!r} leaves the screen"
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}-375.png"
        page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)
        unexpected = [p for p in self.problems if not ((m := _STATUS_LOG.search(p)) and int(m.group(1)) == status)]
        self.problems.clear()
        assert unexpected == [], f"{name}: {unexpected}"
        return path

    def close(self) -> None:
        self.context.close()


# -- reading a received mail ---------------------------------------------------------------------

class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._open: list[list] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._open.append([dict(attrs).get("href") or "", []])

    def handle_data(self, data):
        for item in self._open:
            item[1].append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            href, parts = self._open.pop()
            self.links.append((href, " ".join("".join(parts).split())))


@dataclass
class Mail:
    """A received message: its headers, HTML and the links in it as (href, visible text)."""

    message: EmailMessage

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def links(self) -> list[tuple[str, str]]:
        parser = _Anchors()
        parser.feed(self.html)
        return parser.links

    def link(self, text: str) -> str:
        """The one link whose visible text is `text`."""
        found = sorted({href for href, shown in self.links if shown == text})
        assert len(found) == 1, f"links reading {text!r}: {found} (all: {self.links})"
        return found[0]

    def links_to(self, prefix: str) -> list[str]:
        """The distinct links whose path starts with `prefix` (e.g. "/p/"), in mail order."""
        return list(dict.fromkeys(href for href, _ in self.links if urlsplit(href).path.startswith(prefix)))


def forge(url: str) -> str:
    """`url` with one character of its token (its longest path segment) changed, inside the signature.

    Not the last character: its low bits are base64 padding, and a change there may decode to the
    same bytes, that is to a token still valid.
    """
    parts = urlsplit(url)
    segments = parts.path.split("/")
    index = max(range(len(segments)), key=lambda i: len(segments[i]))
    token = segments[index]
    position = len(token) - 6
    replacement = "B" if token[position] != "B" else "C"
    segments[index] = token[:position] + replacement + token[position + 1:]
    return parts._replace(path="/".join(segments)).geturl()
