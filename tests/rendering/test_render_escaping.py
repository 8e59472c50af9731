"""Recipient data is escaped in HTML, left as text in the plain part and the subject, never a header break."""

from __future__ import annotations

from .conftest import doc, section

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def test_hostile_contact_data_is_escaped_in_html_and_raw_in_text(templates, renderer, context):
    templates.write("t.mjml", doc(section(
        '<mj-text><p>Hi {{ contact.first_name }}</p><a href="{{ links.shop }}" title="{{ contact.first_name }}">x</a>'
        "</mj-text>")))
    context["contact"]["first_name"] = HOSTILE
    out = renderer.compile("t.mjml", subject="Hi {{ contact.first_name }}").render(context)
    assert "<script>" not in out.html and "<img src=x" not in out.html
    assert ("Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;"
            in out.html)
    assert 'title="&lt;script&gt;alert(&#34;x&#34;)' in out.html  # quotes cannot end the attribute
    assert f"Hi {HOSTILE}" in out.text  # plain text is not HTML: shown as typed, harmless
    assert out.subject == f"Hi {HOSTILE}"


def test_subject_is_one_line(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>")))
    context["contact"]["first_name"] = "Anna\r\nBcc: victim@example.com\x00\x1b"
    subject = "  {{ contact.first_name }},\n\t{{ offer.percent }}% off  "
    out = renderer.compile("t.mjml", subject=subject).render(context)
    assert out.subject == "Anna Bcc: victim@example.com, 15% off"
    assert "\n" not in out.subject and "\r" not in out.subject


def test_subject_keeps_non_ascii_and_emoji(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>")))
    context["contact"]["first_name"] = "Zoë"
    out = renderer.compile("t.mjml", subject="{{ contact.first_name }}, 20% korting 🌷 — tot {{ offer.valid_until|long_date }}").render(context)
    assert out.subject == "Zoë, 20% korting 🌷 — tot 3 April 2027"


def test_bidi_overrides_and_zero_width_characters_never_reach_a_subject(templates, renderer, context):
    """A name (or any value) cannot reorder or hide text in a subject; emoji sequences with ZWJ stay whole."""
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>")))
    context["contact"]["first_name"] = "\u202eAnna\u202c\u200b\u2066\ufeff"
    out = renderer.compile("t.mjml", subject="{{ contact.first_name }} 👩\u200d👩\u200d👧 {{ offer.percent }}%").render(context)
    assert out.subject == "Anna 👩\u200d👩\u200d👧 15%"
