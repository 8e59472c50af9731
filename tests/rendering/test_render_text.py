"""The plain-text part: derived once per compile, personalised per render, links shown with their URL."""

from __future__ import annotations

import pytest

from engine.rendering.text import html_to_text_template

from .conftest import doc, section

BODY = (
    section('<mj-image src="https://example.com/logo.png" alt="Example Shop" href="{{ links.shop }}" />')
    + section(
        "<mj-text><h1>Hello {{ contact.first_name }}</h1>"
        "<p>You have ordered {{ contact.orders_count }} times. Thank you!</p>"
        "<ul><li>Fresh herbs</li><li>Linen &amp; cotton</li></ul></mj-text>"
        '<mj-button href="{{ links.shop }}">Shop now</mj-button>'
        '<mj-text><a href="{{ links.unsubscribe }}">Unsubscribe</a> · <a href="mailto:help@example.com">help@example.com</a>'
        '<br><a href="{{ links.preferences }}"><img src="https://example.com/gear.png" alt=""></a></mj-text>')
)


def test_text_part_has_personalised_text_and_urls(templates, renderer, context):
    templates.write("t.mjml", doc(BODY, head="<mj-preview>Hidden preheader {{ offer.code }}</mj-preview>"
                                             "<mj-title>Title not in text</mj-title>"))
    compiled = renderer.compile("t.mjml", subject="s")
    for name in ("Anneke", "Bjørn"):
        context["contact"]["first_name"] = name
        text = compiled.render(context).text
        # The logo links where "Shop now" does: the text part shows that link once.
        assert text == (
            f"Hello {name}\n"
            "\n"
            "You have ordered 7 times. Thank you!\n"
            "\n"
            "- Fresh herbs\n"
            "- Linen & cotton\n"
            "Shop now (https://example.com/spring)\n"
            "Unsubscribe (http://127.0.0.1:8000/u/sample-unsubscribe-token) · help@example.com\n"
        )


def test_conditional_blocks_leave_no_blank_line_runs(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        "<mj-text><p>One</p>{% if offer.tier %}<p>Tier {{ offer.tier }}</p>{% endif %}<p>Two</p>"
        "{% for product in offer.products %}<p>{{ product.name }}</p>{% endfor %}<p>End</p></mj-text>")))
    compiled = renderer.compile("t.mjml", subject="s")
    assert compiled.render(context).text == (
        "One\n\nTwo\n\nLinen tea towel, set of 3\n\nCeramic herb planter\n\nOrganic seed starter kit\n\nEnd\n")
    context["offer"]["tier"] = "gold"
    context["offer"]["products"] = []
    assert compiled.render(context).text == "One\n\nTier gold\n\nTwo\n\nEnd\n"


def test_inline_statement_ending_a_line_keeps_the_line_break(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        "<mj-text><p>A{% if offer.percent %} {{ offer.percent }}%{% endif %}</p><p>C</p></mj-text>")))
    assert renderer.compile("t.mjml", subject="s").render(context).text == "A 15%\n\nC\n"


def test_image_link_is_kept_when_no_text_link_has_its_url():
    text = html_to_text_template('<a href="https://x.example/a"><img alt="Banner"></a><p><a href="https://x.example/b">B</a></p>')
    assert text == "Banner (https://x.example/a)\n\nB (https://x.example/b)\n"


def test_table_rows_become_lines(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        "<mj-raw><tr><td><table><tbody>{% for p in offer.products %}"
        '<tr><td><a href="{{ p.url }}">{{ p.name }}</a></td><td>{{ p.price|money(offer.currency) }}</td></tr>'
        "{% endfor %}</tbody></table></td></tr></mj-raw>")))
    text = renderer.compile("t.mjml", subject="s").render(context).text
    assert text == (
        "Linen tea towel, set of 3 (https://example.com/p/linen-tea-towels) €24.95\n"
        "Ceramic herb planter (https://example.com/p/herb-planter) €34.50\n"
        "Organic seed starter kit (https://example.com/p/seed-kit) €19\n"
    )


def test_text_is_derived_once_not_per_recipient(templates, renderer, context, monkeypatch):
    import engine.rendering.renderer as renderer_module

    calls = []
    real = renderer_module.html_to_text_template
    monkeypatch.setattr(renderer_module, "html_to_text_template", lambda html: calls.append(1) or real(html))
    templates.write("t.mjml", doc(section("<mj-text>Hi {{ contact.first_name }}</mj-text>")))
    for i in range(20):
        context["contact"]["first_name"] = f"R{i}"
        assert renderer.compile("t.mjml", subject="s").render(context).text == f"Hi R{i}\n"
    assert calls == [1]


@pytest.mark.parametrize("html,expected", [
    ("<p>a</p><p>b</p>", "a\n\nb\n"),
    ("<div>a</div><div>b</div>", "a\nb\n"),
    ("<p>line<br>break</p>", "line\nbreak\n"),
    ("<p>  lots   of\n\n space </p>", "lots of space\n"),
    ('<p><a href="https://x.example/">https://x.example/</a></p>', "https://x.example/\n"),
    ('<p><a href="#top">Back to top</a></p>', "Back to top\n"),
    ("<p>Caf&eacute; &amp; &#8364;5</p>", "Café & €5\n"),
    ('<div style="display: none">hidden</div><p>shown</p>', "shown\n"),
    ("<p>a</p><hr><p>b</p>", "a\n\n" + "-" * 40 + "\n\nb\n"),
])
def test_html_to_text_basics(html, expected):
    assert html_to_text_template(html) == expected


def test_statements_in_hidden_places_keep_blocks_balanced():
    html = ('<div style="display:none">{% if a %}x{% endif %}</div>'
            '<p class="{% if b %}b{% endif %}">{% set n = 3 %}n={{ n }}</p>')
    text = html_to_text_template(html)
    assert text.count("{% if") == 2 and text.count("{% endif %}") == 2
    assert "{% set n = 3 %}" in text and "{{ n }}" in text
