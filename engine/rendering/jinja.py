"""Sandboxed Jinja2 environments for email HTML, plain text and subjects, plus a few safe filters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import budget
from .faults import TemplateFault
from .files import TemplateFiles
from .links import PIXEL_FUNCTION, TRACK_FILTER, open_pixel, track_html_filter, track_text_filter

_CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF ", "NOK": "kr ", "SEK": "kr ",
                     "DKK": "kr. "}


def _remembered(format_value: Callable[..., str]) -> Callable[..., str]:
    """`format_value` answering repeated arguments from a cache: a run formats the same few amounts
    and dates in every one of its mails. Unhashable arguments are formatted each time."""
    cached = functools.lru_cache(maxsize=4096, typed=True)(format_value)

    @functools.wraps(format_value)
    def formatted(*args, **kwargs) -> str:
        try:
            return cached(*args, **kwargs)
        except TypeError:  # unhashable
            return format_value(*args, **kwargs)

    return formatted


@_remembered
def money(value, currency: str = "EUR") -> str:
    """`12.5, "EUR"` → `€12.50`; whole amounts drop the cents (`€10`)."""
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    text = f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"
    symbol = _CURRENCY_SYMBOLS.get(str(currency).upper())
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


@_remembered
def long_date(value) -> str:
    """An ISO date (or date) as `3 April 2027`; anything else unchanged."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value[:10])
        except ValueError:
            return value
    if isinstance(value, (date, datetime)):
        return f"{value.day} {value:%B %Y}"
    return "" if value is None else str(value)


class SandboxLoader(BaseLoader):
    """`{% include %}`/`{% import %}` only from the templates directory, never MJML sources.

    `transform` turns a file's text into the template source (the text environment uses it to
    derive plain text from an included HTML fragment).
    """

    def __init__(self, files: TemplateFiles, *, transform: Callable[[str, str], str] | None = None):
        self.files = files
        self.transform = transform

    def get_source(self, environment, template: str):
        if template.endswith(".mjml"):
            raise TemplateNotFound(f"{template} (MJML partials are included with <mj-include>, not Jinja)")
        try:
            source, mtime = self.files.read(template)
        except TemplateFault as fault:
            raise TemplateNotFound(f"{template} ({fault.problem.message})") from None
        if self.transform is not None:
            source = self.transform(template, source)
        return source, self.files.display(template), lambda: self.files.mtime(template) == mtime


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `mapping.key` on a plain dict looked up without an exception,
    and every render within the limits of `engine.rendering.budget`."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator, left, right):
        budget.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the sandbox's own signature
        budget.check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _parse(self, source, name, filename):
        # Every loop iterates through the budget's guard and every macro call ticks it. The guard
        # is an imported name, which no template variable can shadow.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.ImportedName(f"{budget.__name__}.loop_guard"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        for macro in tree.find_all((nodes.Macro, nodes.CallBlock)):
            macro.body.insert(0, nodes.Output([nodes.Call(nodes.ImportedName(f"{budget.__name__}.tick"), [], [],
                                                          None, None, lineno=macro.lineno)], lineno=macro.lineno))
        return tree

    def getattr(self, obj, attribute):
        # For a plain dict and a name that is no dict attribute, the sandbox's getattr raises and
        # catches an AttributeError, then returns obj[attribute]: the same answer, found directly.
        # A template reads a hundred such names per mail (`t.headline`, `contact.first_name`).
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def make_globals(self, d):
        """A template's globals as one plain dict, not Jinja's ChainMap over the environment's.

        Every render copies them into a fresh context (twice: the values and the key set), and a
        ChainMap iterates in Python; our environments' globals are all set before any template.
        """
        return {**self.globals, **(d or {})}


def _environment(files: TemplateFiles, *, autoescape: bool, text: bool,
                 transform: Callable[[str, str], str] | None = None) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        loader=SandboxLoader(files, transform=transform),
        # In the plain-text part a block tag on its own line must leave no blank line behind.
        trim_blocks=text,
        lstrip_blocks=text,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    _guard_filters(env.filters)
    env.filters["money"] = money
    env.filters["long_date"] = long_date
    # Link tracking (engine.rendering.links): the HTML part gets markup, the text part plain text.
    env.filters[TRACK_FILTER] = track_html_filter if autoescape else track_text_filter
    env.globals[PIXEL_FUNCTION] = open_pixel
    return env


def _guard_filters(filters: dict[str, Callable]) -> None:
    """Jinja's filters that build output of a size taken from their arguments, checked first."""
    def checked(name: str, check: Callable[..., None]) -> None:
        original = filters[name]
        # Some filters take the environment or eval context first (`jinja_pass_arg`, which
        # functools.wraps copies over): the check sees only the template's arguments.
        skip = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

        @functools.wraps(original)
        def guarded(*args, **kwargs):
            check(*args[skip:], **kwargs)
            return original(*args, **kwargs)
        filters[name] = guarded

    def count(limit_name: str) -> Callable[..., None]:
        def check(value=None, amount=0, *args, **kwargs):
            if isinstance(amount, int):
                budget.check_size(f"the {limit_name} asked of a filter", amount, budget.MAX_WIDTH)
        return check

    def indent(value="", width=4, *args, **kwargs):
        if isinstance(width, int):
            budget.check_size("an indent", width, budget.MAX_WIDTH)
            budget.check_size("the indented text", len(str(value)) * (1 + width))
        elif isinstance(width, str):
            budget.check_size("the indented text", len(str(value)) * (1 + len(width)))

    def fmt(value="", *args, **kwargs):
        if isinstance(value, str):
            budget.check_format(value)

    def replace(value="", old="", new="", count=None, *args):
        value, old, new = str(value), str(old), str(new)
        budget.check_size("replace", len(value) + (len(value) + 1) * len(new) / max(len(old), 1))

    def join(value=(), d="", *args, **kwargs):
        if hasattr(value, "__len__"):
            budget.check_size("join", len(str(d)) * len(value))

    checked("center", count("width"))
    checked("wordwrap", count("width"))
    checked("batch", count("batch size"))
    checked("slice", count("number of slices"))
    checked("indent", indent)
    checked("format", fmt)
    checked("replace", replace)
    checked("join", join)


def html_environment(files: TemplateFiles) -> ImmutableSandboxedEnvironment:
    """Autoescaping sandbox for the HTML part."""
    return _environment(files, autoescape=True, text=False)


def text_environment(files: TemplateFiles, *, transform: Callable[[str, str], str]) -> ImmutableSandboxedEnvironment:
    """Non-escaping sandbox for the plain-text part; included HTML goes through `transform`."""
    return _environment(files, autoescape=False, text=True, transform=transform)


def subject_environment(files: TemplateFiles) -> ImmutableSandboxedEnvironment:
    """Non-escaping sandbox for subject lines (a header, not HTML)."""
    return _environment(files, autoescape=False, text=False)
