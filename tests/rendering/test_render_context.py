"""The sample context follows the contract, and rendered parts join up to the rendered bodies."""

from __future__ import annotations

from engine.rendering import sample_context

from .conftest import doc, section


def test_sample_context_follows_the_contract():
    ctx = sample_context("seasonal_discount")
    assert set(ctx["contact"]) == {"email", "first_name", "last_name", "country", "language", "timezone",
                                   "attributes", "ltv", "orders_count"}
    assert set(ctx["campaign"]) == {"id", "name", "kind", "values"} and ctx["campaign"]["kind"] == "seasonal_discount"
    assert isinstance(ctx["segment"], str)
    assert set(ctx["offer"]) == {"percent", "amount", "currency", "min_order", "valid_from", "valid_until", "code",
                                 "tier", "headline", "products"}
    assert all(set(p) == {"name", "url", "image_url", "price"} for p in ctx["offer"]["products"])
    assert set(ctx["sender"]) == {"from_name", "from_email", "postal_address"}
    assert set(ctx["links"]) == {"unsubscribe", "preferences", "view_in_browser", "shop"}


def test_sample_context_is_a_fresh_copy_and_other_kinds_get_the_common_part():
    a = sample_context("seasonal_discount")
    a["offer"]["products"].clear()
    assert sample_context("seasonal_discount")["offer"]["products"]
    other = sample_context("contest")
    assert other["campaign"]["kind"] == "contest" and "offer" not in other and "contact" in other


def test_parts_join_to_the_bodies(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>{% for p in offer.products %}<p>{{ p.name }}</p>{% endfor %}"
                                          "<p>{% if offer.tier %}x{% endif %}</p></mj-text>")))
    out = renderer.compile("t.mjml", subject="s").render(context)
    assert "".join(out.html_parts) == out.html and len(out.html_parts) > 1
    assert "".join(out.text_parts) == out.text


def test_constant_parts_are_the_same_objects_for_every_recipient(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>Hi {{ contact.first_name }}, welcome.</mj-text>")))
    compiled = renderer.compile("t.mjml", subject="s")
    first = compiled.render(context).html_parts
    context["contact"]["first_name"] = "Bjørn"
    second = compiled.render(context).html_parts
    shared = [a for a, b in zip(first, second) if a is b]
    assert sum(map(len, shared)) > 0.9 * sum(map(len, second))  # what the MIME piece cache relies on


def test_placeholder_lookalikes_in_template_text_stay_literal(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>jt00000000x0x <!--jt00000000x1x--></mj-text>")))
    assert "jt00000000x0x <!--jt00000000x1x-->" in renderer.compile("t.mjml", subject="s").render(context).html
