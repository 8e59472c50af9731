"""Hide Jinja tags from the MJML compiler and the HTML parser, then put them back verbatim.

MJML (mrml) and css_inline's html5 parser both rewrite markup: html5 "foster-parents" any text
found between table rows out of the table, and escapes `<`, `>` and `"` in text. A
`{% for %}` between `<tr>`s would end up before the table. So before compilation every
`{{ … }}`, `{% … %}` and `{# … #}` is swapped for a placeholder that both parsers leave where
it is:

* a statement or comment (`{% … %}`, `{# … #}`) in text becomes an HTML comment
  `<!--jt<nonce>x<n>x-->` (comments are never foster-parented), taking the white space around
  it along, because mrml drops white-space-only text between two comments;
* an expression (`{{ … }}`), and any tag inside a start tag (attribute values) or inside an
  element whose content is raw text (mj-title, mj-preview, mj-style, style, script, title),
  becomes a bare word `jt<nonce>x<n>x`: text both parsers keep as it is, where a comment would
  be refused (mrml) or escaped (html5).

`restore` swaps every placeholder back (also in its html-escaped comment form) and reports a
tag that did not survive, naming the file and line it came from. The nonce is random per
compile, so template text can never forge a placeholder.
"""

from __future__ import annotations

import bisect
import re
import secrets
from dataclasses import dataclass, field

#: A Jinja expression, statement or comment (non-greedy, may span lines).
JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)

_SCAN = re.compile(
    # A statement or comment takes the white space around it along: mrml drops white-space-only
    # text between two comments, which would glue "{% endif %} {% if %}" output together.
    r"""(?P<jinja>\{\{.*?\}\}|\s*(?:\{%.*?%\}|\{\#.*?\#\})\s*)
      | (?P<comment><!--.*?-->)
      | (?P<open><(?P<close>/?)(?P<name>[A-Za-z][\w:.-]*))
      | (?P<gt>>)
      | (?P<quote>["'])""",
    re.S | re.X,
)
# Elements whose content the parsers treat as plain text, where a comment would not survive.
RAW_TEXT = frozenset({"mj-title", "mj-preview", "mj-style", "mj-font", "style", "script", "title", "textarea"})


@dataclass(frozen=True)
class Tag:
    """One protected Jinja tag and where it was written."""

    text: str
    file: str
    line: int


@dataclass
class Protected:
    """A source with Jinja tags replaced; maps offsets in it back to lines of the original."""

    text: str
    file: str
    original: str
    _marks: list[tuple[int, int]] = field(default_factory=list)  # (protected offset, original offset)

    def line_of(self, offset: int) -> int:
        """The 1-based line in the original source for an offset into the protected text."""
        i = bisect.bisect_right(self._marks, (offset, float("inf"))) - 1
        if i < 0:
            original = offset
        else:
            at, orig = self._marks[i]
            original = orig + (offset - at)
        original = max(0, min(original, len(self.original)))
        return self.original.count("\n", 0, original) + 1


class Protector:
    """Numbers and remembers Jinja tags across the main template and its includes."""

    def __init__(self, nonce: str | None = None):
        self.nonce = nonce or secrets.token_hex(4)
        self.tags: list[Tag] = []
        self._restore = re.compile(
            rf"(<!--|&lt;!--)?jt{self.nonce}x(\d+)x(?(1)(?:-->|--&gt;))"
        )

    def _placeholder(self, jinja: str, file: str, source: str, at: int, *, comment: bool) -> str:
        at += len(jinja) - len(jinja.lstrip())
        self.tags.append(Tag(jinja, file, source.count("\n", 0, at) + 1))
        word = f"jt{self.nonce}x{len(self.tags) - 1}x"
        return f"<!--{word}-->" if comment else word

    def protect(self, source: str, *, file: str, markup: bool = True) -> Protected:
        """Replace the Jinja tags in `source`; with markup=False every tag becomes a bare word."""
        if not markup:
            return self._protect_plain(source, file)
        edits: list[tuple[int, int, str]] = []
        in_tag = False
        quote = ""
        raw_element = ""  # inside <mj-title> and friends: until its closing tag
        pending_raw = ""
        for m in _SCAN.finditer(source):
            kind = next(k for k in ("jinja", "comment", "open", "gt", "quote") if m.group(k) is not None)
            if kind == "jinja":
                # Expressions are words in any context; statements in text need a comment so the
                # html5 parser cannot foster-parent them out of a table.
                raw = m.group()
                stripped = raw.strip()
                if not stripped.startswith("{{") and not in_tag and not raw_element:
                    replacement = self._placeholder(raw, file, source, m.start(), comment=True)
                else:
                    # Inside a tag the surrounding white space separates attributes: leave it.
                    lead = raw[:len(raw) - len(raw.lstrip())]
                    trail = raw[len(raw.rstrip()):]
                    word = self._placeholder(stripped, file, source, m.start() + len(lead), comment=False)
                    replacement = lead + word + trail
            elif kind == "comment" and not in_tag and not quote:
                # Tags inside an author's comment stay bare: a nested comment would end it early.
                body = m.group()
                replacement = JINJA_TAG.sub(
                    lambda t, base=m.start(): self._placeholder(t.group(), file, source, base + t.start(), comment=False),
                    body,
                )
                if replacement == body:
                    continue
            else:
                if in_tag:
                    if kind == "quote":
                        if not quote:
                            quote = m.group()
                        elif quote == m.group():
                            quote = ""
                    elif kind == "gt" and not quote:
                        in_tag = False
                        if pending_raw and source[m.start() - 1] != "/":
                            raw_element = pending_raw
                        pending_raw = ""
                elif kind == "open":
                    name = m.group("name").lower()
                    closing = bool(m.group("close"))
                    if raw_element:
                        if closing and name == raw_element:
                            raw_element = ""
                            in_tag = True
                    else:
                        in_tag = True
                        pending_raw = name if (not closing and name in RAW_TEXT) else ""
                continue
            edits.append((m.start(), m.end(), replacement))
        return _splice(source, edits, file)

    def _protect_plain(self, source: str, file: str) -> Protected:
        edits = [(m.start(), m.end(), self._placeholder(m.group(), file, source, m.start(), comment=False))
                 for m in JINJA_TAG.finditer(source)]
        return _splice(source, edits, file)

    def add(self, jinja: str) -> str:
        """The placeholder word for a tag the compiler writes itself (e.g. a link-tracking wrapper)."""
        self.tags.append(Tag(jinja, "", 0))
        return f"jt{self.nonce}x{len(self.tags) - 1}x"

    def restore(self, text: str, *, transform=None) -> tuple[str, set[int]]:
        """Put the original tags back; returns the text and the numbers of the tags found."""
        seen: set[int] = set()

        def put_back(m: re.Match) -> str:
            n = int(m.group(2))
            seen.add(n)
            original = self.tags[n].text
            return transform(original) if transform else original

        return self._restore.sub(put_back, text), seen

    def tag_at(self, n: int) -> Tag:
        """The tag numbered `n`."""
        return self.tags[n]


def _splice(source: str, edits: list[tuple[int, int, str]], file: str) -> Protected:
    """Apply (start, end, replacement) edits, remembering how offsets moved."""
    out: list[str] = []
    marks: list[tuple[int, int]] = []
    pos = length = 0
    for start, end, replacement in edits:
        out.append(source[pos:start])
        length += start - pos
        marks.append((length, start))
        out.append(replacement)
        length += len(replacement)
        marks.append((length, end))
        pos = end
    out.append(source[pos:])
    return Protected("".join(out), file, source, marks)


def escape_stray_braces(text: str) -> str:
    """Make literal `{{`, `{%`, `{#` in static text print as themselves instead of opening a Jinja tag.

    The HTML parser decodes `&#123;` to `{`, so text that was harmless in the source can look
    like Jinja after compilation; call this while the real tags are still placeholders.
    """
    return re.sub(r"\{(?=[{%#])", "{{ '{' }}", text)
