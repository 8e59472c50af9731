"""Template DoS: every render is bounded in output, iterations, time and what one operation may build.

Each attack fails its template with a reason, in well under the time the attack would take,
and the same renderer then renders a good template as before.
"""

from __future__ import annotations

import pytest

from engine.errors import RenderError
from engine.rendering import budget

from .conftest import doc, section

GOOD = doc(section("<mj-text>Hello {{ contact.first_name }}</mj-text>"))


def render(renderer, templates, context, body: str = "", *, subject: str = "s"):
    templates.write("t.mjml", doc(section(f"<mj-text>{body}</mj-text>")))
    return renderer.compile("t.mjml", subject=subject).render(context)


def refused(renderer, templates, context, body: str = "", *, subject: str = "s") -> str:
    with pytest.raises(RenderError) as info:
        render(renderer, templates, context, body, subject=subject)
    templates.write("good.mjml", GOOD)
    assert "Hello" in renderer.compile("good.mjml", subject="ok").render(context).html  # the renderer goes on
    return str(info.value)


@pytest.mark.parametrize("body, reason", [
    ("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
     "more than 1,000,000 loop iterations"),
    ("{% for i in range(99999) %}{% for j in contact.email %}{% for k in range(99) %}{% endfor %}{% endfor %}"
     "{% endfor %}", "more than 1,000,000 loop iterations"),
    ("{{ 'a' * 10**9 }}", "a repeated string or list would be 1,000,000,000 long"),
    ("{{ [1, 2] * 10**8 }}", "a repeated string or list would be 200,000,000 long"),
    ("{{ 10 ** 100000 }}", "10 ** 100000 is a number of more than 10,000 bits"),
    ("{{ '{:>999999999}'.format('x') }}", "a format width or precision of 999,999,999"),
    ("{{ '%999999999s' % 'x' }}", "a format width or precision of 999,999,999"),
    ("{{ '%.999999999f'|format(1.5) }}", "a format width or precision of 999,999,999"),
    ("{{ 'x'.center(10**9) }}", "str.center asked for 1,000,000,000"),
    ("{{ 'x'|center(10**9) }}", "the width asked of a filter would be 1,000,000,000 long"),
    ("{{ lipsum(n=10**6) }}", "lipsum asked for 1,000,000"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "the batch size asked of a filter would be 1,000,000,000 long"),
    ("{{ ('x' * 1000000).replace('', 'y' * 1000000) }}", "str.replace would be"),
    ("{{ ('x' * 1000000)|replace('', 'y' * 1000000) }}", "replace would be"),
    ("{{ ('y' * 1000000).join(range(99999)) }}", "str.join would be"),
    ("{{ ('x\\n' * 500000)|indent(10000) }}", "the indented text would be"),
    ("{% for i in range(3000) %}{{ 'y' * 1000 }}{% endfor %}", "the HTML part would be"),
])
def test_a_costly_template_fails_with_the_reason(renderer, templates, context, body, reason, monkeypatch):
    monkeypatch.setattr(budget, "MAX_SECONDS", 3600.0)  # each limit on its own, whatever the machine's speed
    message = refused(renderer, templates, context, body)
    assert "t.mjml" in message and reason in message and "refused by the sandbox" in message


def test_a_subject_is_bounded_too(renderer, templates, context):
    message = refused(renderer, templates, context, subject="{% for i in range(500) %}{{ contact.first_name }} {% endfor %}")
    assert "subject" in message and "the subject would be 3,499 long, more than the 1,000" in message
    assert "subject" in refused(renderer, templates, context, subject="{{ 'a' * 10**9 }}")


def test_ordinary_templates_are_untouched(renderer, templates, context):
    rendered = render(renderer, templates, context,
                      "{% for p in offer.products %}{{ loop.index }}/{{ loop.length }} {{ p.name|center(20) }}"
                      "{% if loop.last %}!{% endif %}{% endfor %}{{ '{:,}'.format(1234567) }} {{ 2 ** 64 }}"
                      "{{ '%5.2f'|format(3.14159) }}{% for i in range(3) %}{{ i }}{% else %}none{% endfor %}")
    assert "1/3" in rendered.html and "3/3" in rendered.html and "!" in rendered.html
    assert "1,234,567" in rendered.html and "18446744073709551616" in rendered.html and " 3.14" in rendered.html


def test_exponential_macro_recursion_is_stopped(renderer, templates, context, monkeypatch):
    monkeypatch.setattr(budget, "MAX_SECONDS", 3600.0)  # the step limit, whatever the machine's speed
    message = refused(renderer, templates, context,
                      "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}")
    assert "more than 1,000,000 loop iterations and macro calls" in message


def test_the_time_limit_stops_a_slow_loop(renderer, templates, context, monkeypatch):
    """The deadline is checked as loops run (with the clock moved on, not by waiting)."""
    monkeypatch.setattr(budget, "MAX_SECONDS", -1.0)  # every check finds the time up
    message = refused(renderer, templates, context, "{% for i in range(5000) %}{{ i }}{% endfor %}")
    assert "the render took longer than" in message


def test_renders_inside_an_outer_budget_share_it(renderer, templates, context, monkeypatch):
    """An admin page renders every variant's preview inside one budget: together they get what one would."""
    monkeypatch.setattr(budget, "MAX_SECONDS", 3600.0)  # the step limit, whatever the machine's speed
    # 200,000 steps in the HTML part and as many in the text part: 400,000 a render.
    templates.write("t.mjml", doc(section("<mj-text>{% for i in range(2) %}{% for j in range(100000) %}{% endfor %}"
                                          "{% endfor %}</mj-text>")))
    compiled = renderer.compile("t.mjml", subject="s")
    compiled.render(context)
    compiled.render(context)  # alone, each render has its own budget
    with budget.limits():
        compiled.render(context)
        compiled.render(context)
        with pytest.raises(RenderError, match="more than 1,000,000 loop iterations"):
            compiled.render(context)
