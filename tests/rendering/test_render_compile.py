"""Compile once per (template, variant); recompile only when a source file changes."""

from __future__ import annotations

from .conftest import doc, section


def test_mjml_compiled_once_per_template_and_variant(templates, renderer, compiler, context):
    templates.write("t.mjml", doc(section("<mj-text>Hi {{ contact.first_name }}</mj-text>")))
    for i in range(200):
        context["contact"]["first_name"] = f"Reader {i}"
        out = renderer.compile("t.mjml", subject="Hi {{ contact.first_name }}").render(context)
        assert f"Hi Reader {i}" in out.html
        assert out.subject == f"Hi Reader {i}"
    assert compiler.calls == 1
    for _ in range(50):
        renderer.compile("t.mjml", subject="x", variant="gold").render(context)
        renderer.compile("t.mjml", subject="x", variant="everyone").render(context)
    assert compiler.calls == 3


def test_a_new_subject_reuses_the_compiled_body(templates, renderer, compiler, context):
    templates.write("t.mjml", doc(section("<mj-text>Body</mj-text>")))
    a = renderer.compile("t.mjml", subject="First {{ offer.percent }}%").render(context)
    b = renderer.compile("t.mjml", subject="Second").render(context)
    assert (a.subject, b.subject) == ("First 15%", "Second")
    assert compiler.calls == 1


def test_cache_is_invalidated_when_the_template_changes(templates, renderer, compiler, context):
    templates.write("t.mjml", doc(section("<mj-text>Version one</mj-text>")))
    assert "Version one" in renderer.compile("t.mjml", subject="s").render(context).html
    templates.write("t.mjml", doc(section("<mj-text>Version two</mj-text>")))
    assert "Version two" in renderer.compile("t.mjml", subject="s").render(context).html
    assert compiler.calls == 2


def test_cache_is_invalidated_when_a_partial_changes(templates, renderer, compiler, context):
    templates.write("partials/footer.mjml", section("<mj-text>Footer one</mj-text>"))
    templates.write("t.mjml", doc('<mj-include path="partials/footer.mjml" />'))
    assert "Footer one" in renderer.compile("t.mjml", subject="s").render(context).html
    assert "Footer one" in renderer.compile("t.mjml", subject="s").render(context).html
    assert compiler.calls == 1
    templates.write("partials/footer.mjml", section("<mj-text>Footer two</mj-text>"))
    html = renderer.compile("t.mjml", subject="s").render(context).html
    assert "Footer two" in html and "Footer one" not in html
    assert compiler.calls == 2


def test_compiled_email_exposes_its_sources(templates, renderer):
    templates.write("t.mjml", doc(section("<mj-text>Hi {{ contact.first_name }}</mj-text>")))
    compiled = renderer.compile("t.mjml", subject="s", variant="v")
    assert "{{ contact.first_name }}" in compiled.html_source
    assert "{{ contact.first_name }}" in compiled.text_source
    assert (compiled.template, compiled.variant) == ("t.mjml", "v")
