"""`<mj-style inline="inline">` rules end up in style attributes (mrml alone ignores `inline`)."""

from __future__ import annotations

import re

from .conftest import doc, section

HEAD = """
<mj-style inline="inline">
  .notice { color: #b00020; }
  .notice strong { text-decoration: underline; }
  a { color: #1d6b4f; }
</mj-style>
<mj-style>
  .stays-in-head { color: blue; }
  @media only screen and (max-width: 480px) { .notice { font-size: 20px !important; } }
</mj-style>
"""


def test_inline_styles_are_inlined_and_others_stay_in_head(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        '<mj-text><p class="notice">Hello <strong>{{ contact.first_name }}</strong> '
        '<a href="{{ links.shop }}">shop</a></p></mj-text>'), head=HEAD))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    notice = re.search(r'<p class="notice"[^>]*>', html).group()
    assert re.search(r'style="[^"]*color: ?#b00020', notice), notice
    assert re.search(r'<strong style="[^"]*text-decoration: ?underline[^"]*">Anneke</strong>', html)
    assert re.search(r'<a href="https://example.com/spring" style="[^"]*color: ?#1d6b4f', html)
    # The inline block is gone from the head; ordinary blocks and media queries stay.
    assert "#b00020" not in html.split("</head>")[0]
    assert ".stays-in-head { color: blue; }" in html
    assert "@media only screen and (max-width: 480px)" in html


def test_inline_styles_from_a_partial_are_inlined(templates, renderer, context):
    templates.write("partials/styles.mjml", '<mj-style inline="inline">.brand { color: #123456; }</mj-style>')
    templates.write("t.mjml", doc(section('<mj-text><span class="brand">Brand</span></mj-text>'),
                                  head='<mj-include path="partials/styles.mjml" />'))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    assert re.search(r'<span class="brand" style="color: ?#123456;?">Brand</span>', html)


def test_jinja_in_inlined_elements_survives(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        '<mj-text><a class="cta" href="{{ links.shop }}?c={{ offer.code }}&amp;x=1">{{ offer.code }}</a></mj-text>'),
        head='<mj-style inline="inline">.cta { font-weight: bold; }</mj-style>'))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    assert ('<a class="cta" href="https://example.com/spring?c=SPRING-7K3Q-M2XD&amp;x=1" '
            'style="font-weight: bold;">SPRING-7K3Q-M2XD</a>') in html
