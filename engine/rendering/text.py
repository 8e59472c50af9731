"""Derive the plain-text Jinja template from the compiled HTML Jinja template, once per compile.

Per recipient only the resulting text template is rendered; converting each rendered HTML
to text would cost far more than the render itself.

This is a streaming converter (stdlib `html.parser`) rather than inscriptis: inscriptis lays out
MJML's nested layout tables as padded text grids, and its tree-building parser may move text
(and so Jinja tags) around, whereas a stream keeps every tag exactly in document order.
Jinja tags are swapped for bare placeholder words while converting, so the parser sees them
as ordinary text, and put back afterwards:

* `{{ … }}` expressions are kept where text is shown (text, link URLs, alt text of linked
  images) and dropped where it is not (head, hidden preheader, other attributes);
* `{% … %}` statements are always kept, wherever they were, so blocks stay balanced; one that
  starts a line is put on a line of its own, which the text environment (trim_blocks,
  lstrip_blocks) removes together with its newline;
* `{# … #}` comments are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

from .links import LinkWrapper
from .protect import Protector, escape_stray_braces

_BLOCK = {"address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "figcaption", "figure",
          "footer", "form", "header", "main", "nav", "ol", "section", "table", "tbody", "tfoot", "thead", "tr", "ul"}
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}
_SKIP = {"head", "style", "script", "title", "template", "noscript", "xml"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


class _Converter(HTMLParser):
    def __init__(self, token: re.Pattern, statements: set[str], *, same_url: Callable[[str], str] = str,
                 links: LinkWrapper | None = None):
        super().__init__(convert_charrefs=True)
        self._tracked = links  # with link tracking: wraps URLs shown in the text (see engine.rendering.links)
        self._same_url = same_url  # a key under which two hrefs count as the same link
        self._token = token
        self._statements = statements  # placeholder words standing for {% … %}
        self.out: list[str] = []
        self._newlines = -1  # newlines at the end of out; -1 = nothing written yet
        self._pending = 0  # newlines wanted before the next visible text
        self._space = False
        self._stack: list[tuple[str, bool]] = []  # open elements and whether each hides its content
        self._hidden = 0
        self._links: list[list] = []  # [href, index into out where its text starts, has text]
        self._image_links: list[tuple[str, int, int]] = []  # (href key, start, end) of image-only links
        self._text_hrefs: set[str] = set()
        self._list_depth = 0

    # --- output primitives ----------------------------------------------------------------------

    def _write(self, s: str) -> None:
        self.out.append(s)
        stripped = s.rstrip("\n")
        if stripped:
            self._newlines = len(s) - len(stripped)
        elif self._newlines >= 0:
            self._newlines += len(s)

    def _block(self, newlines: int) -> None:
        self._pending = max(self._pending, newlines)
        self._space = False

    def _visible(self, s: str) -> None:
        """Write visible content, honouring pending line breaks and collapsed white space."""
        if self._newlines < 0:
            self._pending = 0
        elif self._pending > self._newlines:
            self._write("\n" * (self._pending - self._newlines))
        elif self._space and self._newlines == 0:
            self._write(" ")
        self._pending = 0
        self._space = False
        self._write(s)

    def _statement(self, word: str) -> None:
        if self._newlines == 0 and self._pending == 0:
            if self._space:  # white space before an inline statement is the text's own
                self._write(" ")
                self._space = False
            self._write(word)  # mid-line: stays inline
            return
        # Line breaks owed to what came before are written first, outside the block, so
        # they appear whichever branch is taken.
        if self._newlines >= 0:
            self._write("\n" * max(self._pending - self._newlines, 1 - self._newlines, 0))
        self._pending = 0
        newlines = self._newlines
        self._write(word + "\n")
        # The statement's line disappears when rendered, so it does not count as a line break.
        self._newlines = max(newlines, 0) if newlines >= 0 else -1

    def _text(self, data: str, *, visible: bool) -> None:
        if visible and self._tracked is not None and "://" in data:
            data = self._tracked.wrap_urls(data)
        pos = 0
        for m in self._token.finditer(data):
            self._plain(data[pos:m.start()], visible=visible)
            word = m.group()
            if word in self._statements:
                self._statement(word)
            elif visible:
                if self._links:
                    self._links[-1][2] = True
                self._visible(word)
            pos = m.end()
        self._plain(data[pos:], visible=visible)

    def _plain(self, data: str, *, visible: bool) -> None:
        if not visible or not data:
            return
        if data[0].isspace():
            self._space = True
        words = data.split()
        if words:
            if self._links:
                self._links[-1][2] = True
            self._visible(" ".join(words))
            self._space = data[-1].isspace()

    def _attribute_statements(self, attrs, keep: tuple[str, ...] = ()) -> None:
        for name, value in attrs:
            if value and name not in keep:
                for m in self._token.finditer(value):
                    if m.group() in self._statements:
                        self._statement(m.group())

    # --- parser callbacks -------------------------------------------------------------------------

    def handle_starttag(self, tag, attrs):
        hidden = tag in _SKIP or any(n == "style" and v and _HIDDEN_STYLE.search(v) for n, v in attrs)
        visible = not self._hidden and not hidden
        attrs_d = dict(attrs)
        keep: tuple[str, ...] = ()
        if visible:
            if tag == "a":
                keep = ("href",)
            elif tag == "img" and self._links:
                keep = ("alt",)
        self._attribute_statements(attrs, keep)
        if tag not in _VOID:
            self._stack.append((tag, hidden))
            if hidden:
                self._hidden += 1
        if not visible:
            return
        if tag in _PARAGRAPH:
            self._block(2)
        elif tag in _BLOCK:
            self._block(1)
            if tag in ("ul", "ol"):
                self._list_depth += 1
        elif tag == "li":
            self._block(1)
            self._visible("  " * max(self._list_depth - 1, 0) + "-")
            self._space = True
        elif tag == "br":
            if self._newlines >= 0:
                self._write("\n")
            self._space = False
        elif tag == "hr":
            self._block(2)
            self._visible("-" * 40)
            self._block(2)
        elif tag in ("td", "th"):
            self._space = True
        elif tag == "a":
            self._links.append([attrs_d.get("href") or "", len(self.out), False])
        elif tag == "img" and self._links:
            has_text = self._links[-1][2]
            self._text(attrs_d.get("alt") or "", visible=True)
            self._links[-1][2] = has_text  # alt text does not make it a text link

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in _VOID or not any(t == tag for t, _ in self._stack):
            return
        while self._stack:
            open_tag, hidden = self._stack.pop()
            if hidden:
                self._hidden -= 1
            elif not self._hidden:
                self._close(open_tag)
            if open_tag == tag:
                break

    def _close(self, tag: str) -> None:
        if tag in _PARAGRAPH:
            self._block(2)
        elif tag in _BLOCK or tag == "li":
            self._block(1)
            if tag in ("ul", "ol"):
                self._list_depth -= 1
        elif tag in ("td", "th"):
            self._space = True
        elif tag == "a" and self._links:
            href, start, has_text = self._links.pop()
            label = "".join(self.out[start:]).strip()
            href = href.strip()
            if self._tracked is not None:
                label = self._track_label(label, href, start)
            if href and not href.startswith("#") and not href.lower().startswith("javascript:"):
                shown = href[7:] if href.lower().startswith("mailto:") else href
                # A link without text is an image link with empty alt: decorative, skipped.
                if label and label != shown and label != href:
                    self._space = True
                    if self._tracked is not None:
                        shown = self._tracked.wrap(shown) or shown
                    self._visible(f"({shown})")
                key = self._same_url(href)
                if has_text:
                    self._text_hrefs.add(key)
                elif label:
                    self._image_links.append((key, start, len(self.out)))

    def _track_label(self, label: str, href: str, start: int) -> str:
        """The label to compare with the target; a label that shows the target itself is wrapped too."""
        # `<a href="{{ u }}">{{ u }}</a>` holds two placeholders of the same expression: the text
        # shows the URL once, tracked, instead of "url (tracked url)". URLs in a label are wrapped already.
        plain = self._tracked.unwrap(label)
        if plain != label or not plain or self._same_url(plain) != self._same_url(href):
            return plain
        word = self._tracked.wrap(plain, blocks=False)
        if word is not None:
            written = "".join(self.out[start:])
            self.out[start:] = [written.replace(plain, word, 1)]
        return href

    def result(self) -> str:
        """The text, without image links whose target a text link already shows."""
        out = list(self.out)
        for key, start, end in self._image_links:
            if key in self._text_hrefs:
                for i in range(start, end):
                    # Keep statement lines: they hold the template's block structure.
                    out[i] = "".join(self._statement_lines(out[i]))
        text = self._lstrip_lines(_BLANK_RUNS.sub("\n\n", "".join(out)))
        # trim_blocks eats the newline right after a block tag; that is wanted for a statement
        # on a line of its own, but after one that ends a line of text the newline must stay.
        return self._token.sub(
            lambda m: m.group() + "\n" if m.group() in self._statements and m.end() < len(text)
            and text[m.end()] == "\n" and m.start() > 0 and text[m.start() - 1] != "\n" else m.group(),
            text,
        )

    def _lstrip_lines(self, text: str) -> str:
        """Drop blank lines before the first visible line, keeping statement lines there."""
        lines = text.split("\n")
        head: list[str] = []
        for i, line in enumerate(lines):
            if line and line not in self._statements:
                return "\n".join(head + lines[i:])
            if line:
                head.append(line)
        return "\n".join(head)

    def _statement_lines(self, chunk: str):
        for m in self._token.finditer(chunk):
            if m.group() in self._statements:
                yield "\n" + m.group() + "\n"

    def handle_data(self, data):
        self._text(data, visible=not self._hidden)

    def handle_comment(self, data):
        # Conditional comments hold Outlook-only markup; only Jinja statements in them matter.
        self._text(data, visible=False)


def html_to_text_template(html_template: str, *, protector: Protector | None = None, track: bool = False) -> str:
    """The plain-text Jinja source for an HTML Jinja source (links kept as `text (url)`; with `track`, tracked)."""
    protector = protector or Protector()
    start = len(protector.tags)
    protected = protector.protect(html_template, file="", markup=False).text
    statements = {f"jt{protector.nonce}x{n}x" for n in range(start, len(protector.tags))
                  if protector.tags[n].text.startswith("{%")}
    token = re.compile(rf"jt{protector.nonce}x(\d+)x")
    converter = _Converter(token, statements,
                           same_url=lambda href: token.sub(lambda m: protector.tags[int(m.group(1))].text, href),
                           links=LinkWrapper(protector, html=False) if track else None)
    converter.feed(protected)
    converter.close()
    # Entities are decoded by now, so `&#123;&#123;` has become `{{`: escape before restoring.
    text = escape_stray_braces(converter.result().strip() + "\n")
    text = _TRAILING_SPACE.sub("\n", text)
    text, _ = protector.restore(text, transform=_for_text)
    return text


def _for_text(tag: str) -> str:
    if tag.startswith("{#"):
        return ""
    if tag.startswith("{%"):
        # White-space control would glue lines together; trim_blocks/lstrip_blocks handle layout.
        return re.sub(r"^\{%[-+]?", "{%", re.sub(r"[-+]?%\}$", "%}", tag))
    return tag


def tidy_text(text: str) -> str:
    """Per-render clean-up: no runs of blank lines where conditional blocks were left out."""
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text
