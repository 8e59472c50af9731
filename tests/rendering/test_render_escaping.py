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
