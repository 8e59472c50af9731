"""Template faults are reported with the file, the line and what is wrong; `check` never raises."""

from __future__ import annotations

import pytest

from engine.errors import Problem, RenderError

from .conftest import doc, section


def fault(renderer, template="t.mjml", *, subject="s", context=None) -> RenderError:
    with pytest.raises(RenderError) as info:
        compiled = renderer.compile(template, subject=subject)
        compiled.render(context or {})
    return info.value


def test_undefined_variable_names_template_variable_and_line(templates, renderer, context):
    templates.write("t.mjml", doc("\n\n" + section("<mj-text>Hi\n{{ contact.nickname }}</mj-text>")))
    err = fault(renderer, context=context)
    path = str(templates.root / "t.mjml")
    assert str(err).startswith(f"{path}:4: ")
    assert "contact.nickname" in str(err) and "t.mjml" in str(err)
    assert err.problems == [Problem(path, 4, "undefined variable 'contact.nickname' in t.mjml")]


def test_undefined_top_level_variable(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>{% for item in basket %}{{ item }}{% endfor %}</mj-text>")))
    err = fault(renderer, context=context)
    assert "undefined variable 'basket'" in str(err)
    assert f"{templates.root / 't.mjml'}:1:" in str(err)


def test_undefined_variable_in_a_partial_points_at_the_partial(templates, renderer, context):
    templates.write("partials/footer.mjml", "\n" + section("<mj-text>{{ sender.vat_number }}</mj-text>"))
    templates.write("t.mjml", doc('<mj-include path="partials/footer.mjml" />'))
    err = fault(renderer, context=context)
    assert str(err).startswith(f"{templates.root / 'partials/footer.mjml'}:2: ")
    assert "sender.vat_number" in str(err)


def test_undefined_variable_in_subject(templates, renderer, context):
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>")))
    err = fault(renderer, subject="Hi {{ contact.nick }}", context=context)
    assert "subject" in str(err) and "contact.nick" in str(err)


def test_jinja_syntax_error_names_file_and_line(templates, renderer):
    templates.write("t.mjml", doc("\n\n\n" + section("<mj-text>{% if offer.percent %}open</mj-text>")))
    err = fault(renderer)
    assert str(err).startswith(f"{templates.root / 't.mjml'}:4: Jinja syntax error:")


def test_jinja_syntax_error_in_partial(templates, renderer):
    templates.write("partials/header.mjml", section("<mj-text>\n{{ contact.first_name }</mj-text>"))
    templates.write("t.mjml", doc('<mj-include path="partials/header.mjml" />'))
    err = fault(renderer)
    assert str(err).startswith(f"{templates.root / 'partials/header.mjml'}:2: Jinja syntax error:")


def test_subject_syntax_error(templates, renderer):
    templates.write("t.mjml", doc(section("<mj-text>x</mj-text>")))
    assert "subject: Jinja syntax error" in str(fault(renderer, subject="{{ oops"))


def test_mjml_error_names_file_and_line(templates, renderer):
    templates.write("t.mjml", "<mjml>\n<mj-body>\n<mj-section><mj-column>\n<mj-text>x</mj-column>\n</mj-body></mjml>")
    err = fault(renderer)
    assert str(err).startswith(f"{templates.root / 't.mjml'}") and "MJML:" in str(err)


def test_unknown_mjml_element(templates, renderer):
    templates.write("t.mjml", doc("\n" + section("<mj-txt>typo</mj-txt>")))
    err = fault(renderer)
    assert str(err) == f"{templates.root / 't.mjml'}:2: unknown MJML element <mj-txt>"


def test_missing_template_and_missing_partial(templates, renderer):
    assert "template file not found" in str(fault(renderer, "nope.mjml"))
    templates.write("t.mjml", doc("\n" + '<mj-include path="partials/nope.mjml" />'))
    err = fault(renderer)
    assert str(err).startswith(f"{templates.root / 't.mjml'}:2: <mj-include path='partials/nope.mjml'>")
    assert "not found" in str(err)


def test_check_returns_problems_and_never_raises(templates, renderer, context):
    templates.write("bad.mjml", doc(section("<mj-text>{{ contact.nickname }}</mj-text>")))
    problems = renderer.check("bad.mjml", subject="s", context=context)
    assert len(problems) == 1 and "contact.nickname" in problems[0].message
    assert problems[0].file == str(templates.root / "bad.mjml") and problems[0].line == 1
    assert renderer.check("missing.mjml", subject="s", context=context)[0].message == "template file not found"
    assert "Jinja syntax error" in renderer.check("bad.mjml", subject="{% if %}", context=context)[0].message


def test_check_reports_a_template_without_footer(templates, renderer, context):
    templates.write("bare.mjml", doc(section("<mj-text>Just an offer</mj-text>")))
    messages = [p.message for p in renderer.check("bare.mjml", subject="s", context=context)]
    assert any("unsubscribe link" in m for m in messages)
    assert any("preference centre" in m for m in messages)
    assert any("postal address" in m for m in messages)


def test_check_passes_a_good_template(templates, renderer, context):
    templates.write("good.mjml", doc(section(
        '<mj-text><a href="{{ links.unsubscribe }}">Unsubscribe</a> <a href="{{ links.preferences }}">Preferences</a>'
        "<p>{{ sender.postal_address }}</p></mj-text>")))
    assert renderer.check("good.mjml", subject="Hello", context=context) == []


def test_file_that_is_not_utf8(templates, renderer):
    (templates.root / "latin1.mjml").write_bytes(doc("<mj-text>caf\xe9</mj-text>").encode("latin-1"))
    assert "not valid UTF-8" in str(fault(renderer, "latin1.mjml"))
