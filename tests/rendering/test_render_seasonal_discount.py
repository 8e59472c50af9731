"""The shipped seasonal_discount template against the context contract."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from engine.rendering import Renderer, sample_context

from .conftest import TEMPLATES

SUBJECT = "{{ contact.first_name }}, {{ offer.percent }}% off this spring"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.links: list[dict] = []
        self.html_lang = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a)
        elif tag == "html":
            self.html_lang = a.get("lang")


@pytest.fixture(scope="module")
def compiled():
    return Renderer(TEMPLATES).compile("seasonal_discount.mjml", subject=SUBJECT, variant="spring-sale:everyone")


def collect(html: str) -> _Collect:
    c = _Collect()
    c.feed(html)
    return c


def test_renders_the_offer_with_one_call_to_action(compiled):
    ctx = sample_context("seasonal_discount", templates_dir=TEMPLATES)
    out = compiled.render(ctx)
    assert out.subject == "Anneke, 15% off this spring"
    html = out.html
    assert "Hi Anneke," in html
    assert "<strong>15% off</strong>" in html
    assert "SPRING-7K3Q-M2XD" in html
    assert "Valid from 20 March 2027 until 3 April 2027." in html
    assert "Minimum order €50." in html
    assert html.count(">Shop now</a>") == 1
    assert re.search(r'<a href="https://example.com/spring"[^>]*>Shop now</a>', html)
    for product in ctx["offer"]["products"]:
        assert product["name"] in html and product["url"] in html and product["image_url"] in html
    assert "{{" not in html and "{%" not in html
    assert not re.search(r"jt[0-9a-f]{8}x\d+x", html + out.text)  # no placeholder left behind


def test_footer_carries_what_every_message_must(compiled):
    ctx = sample_context("seasonal_discount", templates_dir=TEMPLATES)
    out = compiled.render(ctx)
    hrefs = [a.get("href") for a in collect(out.html).links]
    for key in ("unsubscribe", "preferences", "view_in_browser"):
        assert ctx["links"][key] in hrefs
        assert ctx["links"][key] in out.text
    assert ctx["sender"]["postal_address"] in out.html
    assert ctx["sender"]["postal_address"] in out.text


def test_accessible_markup(compiled):
    out = compiled.render(sample_context("seasonal_discount", templates_dir=TEMPLATES))
    page = collect(out.html)
    assert page.html_lang == "en"
    assert page.images and all("alt" in img for img in page.images)
    # Informative images describe themselves; the product thumbnails sit next to the product name.
    assert any(img["alt"] for img in page.images)
    assert "<h1" in out.html
    assert "<title>Spring is here — and so is your discount</title>" in out.html


def test_no_tracking_pixels_or_remote_fonts(compiled):
    out = compiled.render(sample_context("seasonal_discount", templates_dir=TEMPLATES))
    for img in collect(out.html).images:
        assert img["src"].startswith("https://example.com/")
        assert img.get("width") not in ("1", "0") and img.get("height") not in ("1", "0")
    assert "fonts.googleapis.com" not in out.html


def test_amount_offer_without_products_min_order_or_start(compiled):
    ctx = sample_context("seasonal_discount", templates_dir=TEMPLATES)
    ctx["offer"].update(percent=None, amount=10.0, min_order=None, valid_from=None, products=[], tier="Gold",
                        headline=None)
    out = compiled.render(ctx)
    assert "<strong>€10 off</strong>" in out.html
    assert "one of our Gold customers" in out.html
    assert "Valid until 3 April 2027." in out.html
    assert "Minimum order" not in out.html and "Picked for you" not in out.html
    assert "<h1" in out.html and "Spring sale</h1>" in out.html  # falls back to the campaign name
    assert "Enjoy €10 off your next order" in out.text
    assert "\n\n\n" not in out.text


def test_offer_without_a_code(compiled):
    ctx = sample_context("seasonal_discount", templates_dir=TEMPLATES)
    ctx["offer"]["code"] = ""
    out = compiled.render(ctx)
    assert "Your discount code" not in out.html and "code-box" not in out.html
    assert "The discount is applied at checkout." in out.html
    assert ">Shop now</a>" in out.html


def test_plain_text_reads_well(compiled):
    text = compiled.render(sample_context("seasonal_discount", templates_dir=TEMPLATES)).text
    assert text.startswith("Spring is here — and so is your discount\n\nHi Anneke,\n")
    assert "Hi Anneke," in text
    assert "SPRING-7K3Q-M2XD" in text
    assert "Shop now (https://example.com/spring)" in text
    assert "Linen tea towel, set of 3 (https://example.com/p/linen-tea-towels)" in text
    assert "Manage your preferences (http://127.0.0.1:8000/p/sample-preferences-token)" in text
    assert "<" not in text and "{{" not in text


def test_validate_finds_no_problems():
    renderer = Renderer(TEMPLATES)
    for name in ("seasonal_discount.mjml", "bench_newsletter.mjml"):
        assert renderer.check(name, subject=SUBJECT, context=sample_context("seasonal_discount", templates_dir=TEMPLATES)) == []


def test_rendered_mail_builds_into_a_clean_mime_message(compiled):
    from datetime import datetime, timezone
    from email import policy
    from email.parser import BytesParser

    from engine.mime import MessageFactory

    ctx = sample_context("seasonal_discount", templates_dir=TEMPLATES)
    ctx["contact"]["first_name"] = "Zoë"
    out = compiled.render(ctx)
    factory = MessageFactory(from_addr=("Example Shop", "news@example.com"))
    for text, html in ((out.text_parts, out.html_parts), (out.text, out.html)):
        raw = factory.build(to_addr=("Zoë de Vries", "zoe@example.nl"), subject=out.subject, text=text, html=html,
                            message_id="<1.2@example.com>", date=datetime(2027, 3, 20, 8, tzinfo=timezone.utc),
                            headers=[("List-Unsubscribe", f"<{ctx['links']['unsubscribe']}>"),
                                     ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")])
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        assert all(not part.defects for part in msg.walk())
        assert msg["Subject"] == "Zoë, 15% off this spring"
        assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == out.html
        assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == out.text


def test_dutch_recipients_get_dutch_strings_and_lang(compiled):
    out = compiled.render(sample_context("seasonal_discount", templates_dir=TEMPLATES, language="nl"))
    assert '<html lang="nl"' in out.html
    assert "Nu shoppen" in out.html and "Afmelden" in out.html and "Je kortingscode" in out.text
    english = compiled.render(sample_context("seasonal_discount", templates_dir=TEMPLATES))
    assert "Shop now" in english.html and "Unsubscribe" in english.text
