"""Jinja tags survive MJML compilation and html5 re-serialisation exactly where they were written."""

from __future__ import annotations

import re

import pytest

from engine.errors import RenderError

from .conftest import doc, section

ROWS = """
<mj-raw>
  <tr><td>
    <table id="products">{tbody}
      {{% for product in offer.products %}}
      <tr class="{{% if loop.first %}}first {{% endif %}}row"><td>{{{{ loop.index }}}}</td><td>{{{{ product.name }}}}</td><td>{{{{ product.price|money(offer.currency) }}}}</td></tr>
      {{% endfor %}}
    {end}</table>
  </td></tr>
</mj-raw>
"""


@pytest.mark.parametrize("tbody", [True, False], ids=["explicit-tbody", "implicit-tbody"])
def test_for_loop_over_table_rows_in_mj_raw(templates, renderer, context, tbody):
    rows = ROWS.format(tbody="<tbody>" if tbody else "", end="</tbody>" if tbody else "")
    templates.write("t.mjml", doc(section("<mj-text>Before</mj-text>" + rows + "<mj-text>After</mj-text>")))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    table = re.search(r'<table id="products">(.*?)</table>', html, re.S)
    assert table, html
    found = re.findall(r'<tr class="([^"]*)"><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>', table.group(1))
    assert found == [
        ("first row", "1", "Linen tea towel, set of 3", "€24.95"),
        ("row", "2", "Ceramic herb planter", "€34.50"),
        ("row", "3", "Organic seed starter kit", "€19"),
    ]
    # Nothing was foster-parented out of the table.
    assert html.index("Before") < html.index('<table id="products">') < html.index("After")
    before_table = html[:html.index('<table id="products">')]
    assert "Linen" not in before_table and "{%" not in html


def test_expressions_in_text_and_attributes_keep_their_operators_and_quotes(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        """<mj-text><p title='{{ "big" if offer.percent > 10 else "small" }}'>"""
        """{{ "more" if offer.percent > 10 else "less" }} &amp; {{ offer.percent < 20 and 'under' }}</p></mj-text>"""
        """<mj-button href="{{ links.shop }}?code={{ offer.code|urlencode }}&amp;p={% if offer.percent %}1{% endif %}">"""
        """Shop now</mj-button>""")))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    assert '<p title="big">more &amp; under</p>' in html
    assert 'href="https://example.com/spring?code=SPRING-7K3Q-M2XD&amp;p=1"' in html


def test_white_space_between_tags_is_kept(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        "<mj-text><p>{{ contact.first_name }} {{ contact.last_name }}</p>"
        "<p>{% if offer.percent %}A{% endif %} {% if offer.code %}B{% endif %}\n  {% if true %}C{% endif %}</p>"
        "</mj-text>")))
    out = renderer.compile("t.mjml", subject="s").render(context)
    assert "<p>Anneke de Vries</p>" in out.html
    assert re.search(r"<p>A B\s+C</p>", out.html)
    assert "Anneke de Vries" in out.text and "A B C" in out.text


def test_statements_between_sections_in_mj_raw(templates, renderer, context):
    body = (section("<mj-text>Top</mj-text>")
            + "<mj-raw>{% if offer.tier %}</mj-raw>" + section("<mj-text>Tier {{ offer.tier }}</mj-text>")
            + "<mj-raw>{% endif %}</mj-raw>" + section("<mj-text>Bottom</mj-text>"))
    templates.write("t.mjml", doc(body))
    compiled = renderer.compile("t.mjml", subject="s")
    assert "Tier" not in compiled.render(context).html
    context["offer"]["tier"] = "gold"
    out = compiled.render(context)
    assert "Tier gold" in out.html and "Tier gold" in out.text


def test_jinja_in_title_and_preview(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>"),
                                  head="<mj-title>{{ offer.headline }}</mj-title>"
                                       "<mj-preview>{% if offer.percent %}{{ offer.percent }}% off{% endif %}</mj-preview>"))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    assert "<title>Spring is here — and so is your discount</title>" in html
    assert re.search(r'<div style="display:none;[^"]*">15% off</div>', html)


def test_comments_render_nothing_and_literal_braces_stay_literal(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        "<mj-text><p>{# a note for colleagues #}Write &#123;&#123; like this }} and &#123;% too</p></mj-text>")))
    out = renderer.compile("t.mjml", subject="s").render(context)
    assert "<p>Write {{ like this }} and {% too</p>" in out.html
    assert "Write {{ like this }} and {% too" in out.text
    assert "colleagues" not in out.html + out.text


def test_a_tag_mjml_drops_is_reported_not_silently_lost(templates, renderer, context):
    templates.write("t.mjml", doc("\n" + '<mj-section foo="{{ contact.first_name }}"><mj-column>'
                                  "<mj-text>x</mj-text></mj-column></mj-section>"))
    with pytest.raises(RenderError) as info:
        renderer.compile("t.mjml", subject="s")
    assert "t.mjml:2:" in str(info.value)
    assert "{{ contact.first_name }}" in str(info.value)
