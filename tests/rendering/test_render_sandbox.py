"""Hostile templates cannot reach the server: sandboxed attribute access, no file access outside the directory."""

from __future__ import annotations

import os

import pytest

from engine.errors import RenderError

from .conftest import doc, section

SECRET = "do-not-leak-3f9a"


@pytest.fixture
def outside(tmp_path, templates):
    """Files next to the templates directory that a template must never read."""
    (tmp_path / "templates" / "config.toml").write_text(f'secret = "{SECRET}"\n')
    (tmp_path / "secret.html").write_text(SECRET)
    return tmp_path


def refused(renderer, templates, context, body: str, *, head: str = "") -> str:
    templates.write("evil.mjml", doc(section(body), head=head))
    with pytest.raises(RenderError) as info:
        renderer.compile("evil.mjml", subject="s").render(context)
    problems = renderer.check("evil.mjml", subject="s", context=context)
    assert problems and all(SECRET not in str(p) for p in problems)
    assert SECRET not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("expression", [
    "''.__class__.__mro__",
    "''.__class__.__mro__[1].__subclasses__()",
    "contact.__class__",
    "cycler.__init__.__globals__",
    "self.__init__.__globals__",
    "offer.products.__class__.__base__",
    "links.items.__self__.__class__",
    "range.__self__",
    "lipsum.__globals__['os']",
    "'{0.__class__}'.format(contact)",
])
def test_sandbox_blocks_attribute_escapes(templates, renderer, context, outside, expression):
    message = refused(renderer, templates, context, f"<mj-text>{{{{ {expression} }}}}</mj-text>")
    assert "evil.mjml" in message


def test_sandbox_blocks_mutation(templates, renderer, context):
    refused(renderer, templates, context, "<mj-text>{{ offer.products.append(1) }}{{ contact.update(email='x') }}</mj-text>")
    assert len(context["offer"]["products"]) == 3


@pytest.mark.parametrize("target", [
    "/etc/passwd",
    "../config.toml",
    "../../secret.html",
    "partials/../../config.toml",
    "./../config.toml",
    "~/.bashrc",
])
def test_jinja_include_outside_the_directory_is_refused(templates, renderer, context, outside, target):
    message = refused(renderer, templates, context,
                      f"<mj-raw><tr><td>{{% include '{target}' %}}</td></tr></mj-raw>")
    assert "include refused" in message


@pytest.mark.parametrize("target", ["/etc/passwd", "../config.toml", "../../secret.html", "partials/../../config.toml"])
def test_mj_include_outside_the_directory_is_refused(templates, renderer, context, outside, target):
    templates.write("evil.mjml", doc(f'<mj-include path="{target}" />'))
    with pytest.raises(RenderError) as info:
        renderer.compile("evil.mjml", subject="s")
    assert SECRET not in str(info.value)
    assert "evil.mjml:1: <mj-include" in str(info.value)


def test_symlink_out_of_the_directory_is_refused(templates, renderer, context, outside):
    os.symlink(outside / "secret.html", templates.root / "link.html")
    message = refused(renderer, templates, context, "<mj-raw><tr><td>{% include 'link.html' %}</td></tr></mj-raw>")
    assert "outside the templates directory" in message
    templates.write("evil2.mjml", doc('<mj-include path="link.html" />'))
    with pytest.raises(RenderError):
        renderer.compile("evil2.mjml", subject="s")


def test_template_name_itself_cannot_escape(templates, renderer, context, outside):
    for name in ("../config.toml", "/etc/passwd", "..\\config.toml"):
        with pytest.raises(RenderError):
            renderer.compile(name, subject="s")
        assert renderer.check(name, subject="s", context=context)


def test_include_inside_the_directory_works_and_is_sandboxed_too(templates, renderer, context):
    templates.write("partials/note.html", "<p>Note for {{ contact.first_name }}</p>")
    templates.write("t.mjml", doc(section("<mj-raw><tr><td>{% include 'partials/note.html' %}</td></tr></mj-raw>")))
    context["contact"]["first_name"] = "<b>Bo</b>"
    out = renderer.compile("t.mjml", subject="s").render(context)
    assert "<p>Note for &lt;b&gt;Bo&lt;/b&gt;</p>" in out.html
    assert "Note for <b>Bo</b>" in out.text  # included HTML is converted to text as well
    templates.write("t2.mjml", doc(section("<mj-raw><tr><td>{% include 'partials/x.mjml' %}</td></tr></mj-raw>")))
    templates.write("partials/x.mjml", "<mj-text>x</mj-text>")
    with pytest.raises(RenderError):
        renderer.compile("t2.mjml", subject="s").render(context)


def test_a_dict_key_named_like_a_dict_method_still_reads_the_method():
    """The fast path for `mapping.key` keeps Jinja's order: a dict's own attributes come first."""
    from jinja2 import UndefinedError

    from engine.rendering.files import TemplateFiles
    from engine.rendering.jinja import subject_environment

    env = subject_environment(TemplateFiles(os.path.dirname(__file__)))
    data = {"items": "a key", "name": "Anneke"}
    assert env.from_string("{{ d.name }}").render(d=data) == "Anneke"
    assert env.from_string("{{ d.items() | list | length }}").render(d=data) == "2"
    with pytest.raises(UndefinedError):
        env.from_string("{{ d.missing }}").render(d=data)  # StrictUndefined, as before
