"""Link tracking at compile time: every http(s) link target becomes one call to the `vm_track` filter.

A compiled template is rendered for every recipient, so the work of finding links is done once
here: each `<a href>` in the HTML Jinja source, and each link or bare URL in the plain-text
source, is replaced by `{{ (<the same value as one expression>) | vm_track }}`. Constant text
becomes a string literal, `{{ … }}` tags inside the value become parenthesised operands of `~`, so
the filter gets the final, unescaped URL of that recipient. At render time the filter asks the
context's tracker (`TRACKING`) for the tracked URL; without a tracker it returns the value as it
was, so a tracked template renders exactly like the plain one.

A link target holding `{% … %}` statements (`{% if vip %}…{% else %}…{% endif %}`) cannot be
split into operands; it is wrapped as a block instead, `{% filter vm_track %}…{% endfilter %}`,
where the block's output is the URL (in the HTML part, escaped: the filter unescapes markup).
Bare URLs in running text are only wrapped when they hold no statement: a block ending a line
of the text part would take the line break with it (trim_blocks).

Left as written: targets that do not start with http(s):// (mailto:, tel:, #anchors, relative
paths), and the unsubscribe, preferences and view-in-browser links (the tracker refuses those at
render time too, whatever expression produced them).
"""

from __future__ import annotations

import html
import re

from jinja2 import pass_context

from .protect import Protector

#: The context key holding the per-message tracker (see `engine.tracking.MessageTracking`).
TRACKING = "_vm_tracking"
#: The filter and the function the compiled templates call.
TRACK_FILTER = "vm_track"
PIXEL_FUNCTION = "vm_open_pixel"

_HTTP = re.compile(r"https?://", re.I)
# Our own per-recipient pages: never sent through a redirect (unsubscribe must stay direct, RFC 8058).
_UNTRACKED = frozenset({f"links{access}" for key in ("unsubscribe", "preferences", "view_in_browser")
                        for access in (f".{key}", f"['{key}']", f'["{key}"]')})
_A_START = re.compile(r"<a(?=[\s/>])", re.I)
_ATTRIBUTE = re.compile(r"""\s*(?P<name>[^\s=>/"']+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>"']+))?""")
_BODY_END = re.compile(r"</body\s*>", re.I)
# A URL in running text: up to white space or a character that cannot be part of one unescaped.
_URL_RUN = re.compile(r"https?://[^\s<>()\"'`]+", re.I)
_TRAILING = ".,;:!?"


class LinkWrapper:
    """Wraps link targets written with placeholder words (see `Protector`) in one tracked expression."""

    def __init__(self, protector: Protector, *, html: bool):
        self._protector = protector
        self._html = html  # constant text is HTML (entities) rather than plain text
        self._word = re.compile(rf"jt{protector.nonce}x(\d+)x")
        self._wrapped: dict[str, str] = {}  # our placeholder word -> the value it replaced

    def wrap(self, value: str, *, blocks: bool = True) -> str | None:
        """The placeholder word(s) tracking `value`, or None to leave it (blocks=False: no filter blocks)."""
        value = value.strip()
        if not value:
            return None
        operands: list[str] = []
        pos = 0
        for m in self._word.finditer(value):
            if m.start() > pos and not self._constant(value[pos:m.start()], operands):
                return None
            tag = self._protector.tags[int(m.group(1))].text
            if not tag.startswith("{{"):
                # A statement or comment: the value cannot become one expression.
                return self._block(value) if blocks else None
            operands.append(f"({_expression(tag)})")
            pos = m.end()
        if pos < len(value) and not self._constant(value[pos:], operands):
            return None
        first = operands[0]
        if first.startswith("'"):
            if not _HTTP.match(_literal_value(first)):
                return None
        elif len(operands) == 1 and re.sub(r"\s+", "", first[1:-1]) in _UNTRACKED:
            return None
        word = self._protector.add("{{ (" + " ~ ".join(operands) + f") | {TRACK_FILTER} }}}}")
        self._wrapped[word] = value
        return word

    def _block(self, value: str) -> str | None:
        first = self._word.match(value)
        if first is None and not _HTTP.match(html.unescape(value) if self._html else value):
            return None  # starts with constant text that is not http(s)
        opening = self._protector.add(f"{{% filter {TRACK_FILTER} %}}")
        closing = self._protector.add("{% endfilter %}")
        self._wrapped[opening] = self._wrapped[closing] = ""
        return opening + value + closing

    def unwrap(self, text: str) -> str:
        """`text` with the words this wrapper made put back to what they replaced."""
        if not self._wrapped:
            return text
        return self._word.sub(lambda m: self._wrapped.get(m.group(), m.group()), text)

    def wrap_urls(self, text: str) -> str:
        """Running text with each URL in it wrapped (trailing punctuation stays outside)."""
        def one(m: re.Match) -> str:
            url = m.group().rstrip(_TRAILING)
            word = self.wrap(url, blocks=False)
            return m.group() if word is None else word + m.group()[len(url):]

        return _URL_RUN.sub(one, text)

    def _constant(self, text: str, operands: list[str]) -> bool:
        if self._html:
            text = html.unescape(text)
        if "{" in text or "}" in text:
            return False  # would need escaping in a Jinja tag; such URLs are left as written
        operands.append(_literal(text))
        return True


def track_html(html_source: str, *, pixel: bool) -> str:
    """The HTML Jinja source with each `<a href>` wrapped; with `pixel`, the open pixel call before `</body>`."""
    protector = Protector()
    protected = protector.protect(html_source, file="", markup=False).text
    wrapper = LinkWrapper(protector, html=True)
    out: list[str] = []
    pos = 0
    for start in _A_START.finditer(protected):
        if start.start() < pos:
            continue
        at = start.end()
        while True:
            m = _ATTRIBUTE.match(protected, at)
            if m is None:
                break
            value = m.group("value")
            if m.group("name").lower() == "href" and value is not None:
                quoted = value[:1] in "\"'"
                inner = value[1:-1] if quoted else value
                word = wrapper.wrap(inner)
                if word is not None:
                    out.append(protected[pos:m.start("value")])
                    out.append(f'"{word}"')
                    pos = m.end("value")
            at = m.end()
    out.append(protected[pos:])
    protected = "".join(out)
    if pixel:
        call = protector.add(f"{{{{ {PIXEL_FUNCTION}() }}}}")
        ends = list(_BODY_END.finditer(protected))
        at = ends[-1].start() if ends else len(protected)
        protected = protected[:at] + call + protected[at:]
    restored, _ = protector.restore(protected)
    return restored


@pass_context
def track_html_filter(context, value):
    """`vm_track` in the HTML part: the tracked URL as markup, or the value unchanged."""
    tracking = _tracker(context)
    return value if tracking is None else tracking.html(value)


@pass_context
def track_text_filter(context, value):
    """`vm_track` in the plain-text part: the tracked URL, or the value unchanged."""
    tracking = _tracker(context)
    return value if tracking is None else tracking.text(value)


@pass_context
def open_pixel(context):
    """`vm_open_pixel()`: the open-tracking image for this message, or nothing."""
    tracking = _tracker(context)
    return "" if tracking is None else tracking.pixel()


def _tracker(context):
    # The render context holds it (context.parent); Context.get costs a KeyError when absent.
    tracking = context.parent.get(TRACKING)
    return tracking if tracking is not None else context.vars.get(TRACKING)


def _expression(tag: str) -> str:
    """The expression inside `{{ … }}`, without white-space control marks."""
    inner = tag[2:-2]
    if inner[:1] in "-+":
        inner = inner[1:]
    if inner[-1:] in "-+":
        inner = inner[:-1]
    return inner.strip()


def _literal(text: str) -> str:
    """A Jinja string literal for `text` (the lexer decodes backslash escapes)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + escaped.encode("ascii", "backslashreplace").decode("ascii") + "'"


def _literal_value(literal: str) -> str:
    return literal[1:-1].encode("ascii").decode("unicode-escape")
