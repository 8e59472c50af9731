"""What one render may cost: output size, loop iterations, time, and the size of what one operation builds.

A campaign template is written by a marketer, or by whoever got at the campaign files; a
`range(99999)` inside another, `'a' * 10**9` or `'{:>999999999}'.format('x')` in a subject must
fail that template with a clear reason, not hold a sending process, a web thread or the machine.
The sandbox (`engine.rendering.jinja`) calls in here: every `{% for %}` iterates through
`loop_guard`, every macro call ticks, and operators, methods and filters that build strings or
lists of a size taken from their arguments are checked before they run.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
from typing import Any, Iterable, Iterator

from jinja2.exceptions import SecurityError

MAX_OUTPUT = 2_000_000  # characters of one rendered part (HTML or text)
MAX_SUBJECT = 1_000  # characters of a rendered subject or preheader
MAX_ITERATIONS = 1_000_000  # loop iterations and macro calls in one render
MAX_SECONDS = 2.0  # wall time of one render, checked at every 1,024th iteration
MAX_WIDTH = 10_000  # a padding width, a count of items or words asked of a method or filter
MAX_POWER_BITS = 10_000  # bits of an integer a ** may build

_CHECK_EVERY = 1024
_FORMAT_WIDTH = re.compile(r"[{:%][^{}%\d]*?(\d{5,})")  # a width or precision of 5+ digits in a format string


class BudgetExceeded(SecurityError):
    """The render would cost more than a template may."""


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.steps = 0


_current: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("valuemail_render_budget", default=None)


class limits:  # noqa: N801 - used as a function: `with limits():`
    """Renders inside this block share one budget of iterations and time (MAX_SECONDS by default).

    Inside another `limits` block the outer budget goes on (an admin page's previews share one).
    """

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float | None = None):
        self._seconds = MAX_SECONDS if seconds is None else seconds

    def __enter__(self) -> None:
        self._token = None if _current.get() is not None else _current.set(_Budget(self._seconds))

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _current.reset(self._token)


def tick() -> str:
    """Count one step (a loop iteration, a macro call); raise once the budget is spent."""
    budget = _current.get()
    if budget is not None:
        budget.steps += 1
        if budget.steps > MAX_ITERATIONS or (not budget.steps % _CHECK_EVERY and time.monotonic() > budget.deadline):
            _spent(budget)
    return ""


def _spent(budget: _Budget) -> None:
    if budget.steps > MAX_ITERATIONS:
        raise BudgetExceeded(f"more than {MAX_ITERATIONS:,} loop iterations and macro calls in one render")
    raise BudgetExceeded(f"the render took longer than {MAX_SECONDS:g} s")


def loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a template's `{% for %}` iterates: the same items, each counted."""
    budget = _current.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.steps += 1  # tick(), inlined: this runs for every item of every loop of every mail
        if budget.steps > MAX_ITERATIONS or (not budget.steps % _CHECK_EVERY and time.monotonic() > budget.deadline):
            _spent(budget)
        yield item


def check_size(what: str, size: float, limit: int = MAX_OUTPUT) -> None:
    """Refuse to build `what` of `size` characters or items if that is past `limit`."""
    if size > limit:
        raise BudgetExceeded(f"{what} would be {size:,.0f} long, more than the {limit:,} a template may build")


def check_output(pieces: tuple[str, ...], what: str, limit: int = MAX_OUTPUT) -> None:
    """Refuse a rendered part longer than `limit` characters (before its pieces are joined)."""
    check_size(what, sum(map(len, pieces)), limit)


def check_format(template: str) -> None:
    """Refuse a format string (`str.format`, `%`, the `format` filter) asking for a huge width or precision."""
    match = _FORMAT_WIDTH.search(template)
    if match and int(match.group(1)) > MAX_WIDTH:
        raise BudgetExceeded(f"a format width or precision of {int(match.group(1)):,} (at most {MAX_WIDTH:,})")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """`*`, `**` and `%` in a template: refuse what would build something huge."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                check_size("a repeated string or list", len(seq) * max(count, 0))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        if right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise BudgetExceeded(f"{left} ** {right} is a number of more than {MAX_POWER_BITS:,} bits")
    elif operator == "%" and isinstance(left, str):
        check_format(left)


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def check_call(function: Any, args: tuple, kwargs: dict) -> None:
    """A method or function called from a template: refuse huge widths, counts and products."""
    function = getattr(function, "__wrapped__", function)  # the sandbox hands out str.format wrapped
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    if isinstance(owner, str):
        if name in _WIDTH_METHODS:
            _check_ints(f"str.{name}", args, kwargs)
        elif name in ("format", "format_map"):
            check_format(owner)
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            check_size("str.replace", len(owner) + (len(owner) + 1) * len(args[1]) / max(len(args[0]), 1))
        elif name == "join" and args and hasattr(args[0], "__len__"):
            check_size("str.join", len(owner) * len(args[0]))
    elif name == "generate_lorem_ipsum":  # lipsum(n, html, min, max)
        _check_ints("lipsum", args, kwargs, limit=100)


def _check_ints(what: str, args: tuple, kwargs: dict, *, limit: int = MAX_WIDTH) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and value > limit:
            raise BudgetExceeded(f"{what} asked for {value:,} (at most {limit:,})")
