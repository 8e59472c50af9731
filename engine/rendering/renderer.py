"""Compile once per (template, variant), render per recipient: the listmonk model.

compile: MJML → HTML (mrml) → `<mj-style inline>` CSS inlined (css_inline) → a sandboxed,
autoescaping Jinja template; the plain-text Jinja template is derived from it at the same
time. render: two Jinja templates and a subject line per recipient, nothing else.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mjml
from jinja2 import Template, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError
from markupsafe import escape

from ..errors import Problem, RenderError
from ..unsafe_chars import CONTROLS, INVISIBLE
from . import budget
from .faults import TemplateFault
from .files import TemplateFiles
from .jinja import html_environment, subject_environment, text_environment
from .links import track_html
from .mjml import compile_mjml
from .protect import JINJA_TAG, Protector, escape_stray_braces
from .text import html_to_text_template, tidy_text

# Controls, bidi embeddings/overrides/isolates and zero-width characters: none belongs in a subject.
_CONTROL = re.compile(f"[{CONTROLS}{INVISIBLE}]")
_UNDEFINED = re.compile(r"^'(?P<name>[^']+)' is undefined|has no (?:attribute|element) '?(?P<attr>[^']+)'?")
_INCLUDE = re.compile(r"\{%[-+]?\s*(?:include|import|from|extends)\b")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedEmail:
    """One recipient's message content.

    `html_parts`/`text_parts` are the pieces the bodies were joined from, mostly the template's
    constant strings (the same objects for every recipient); `engine.mime.MessageFactory.build`
    accepts them in place of `html`/`text` and then encodes each constant piece only once.
    """

    subject: str
    html: str
    text: str
    html_parts: tuple[str, ...] = field(default=(), repr=False, compare=False)
    text_parts: tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass
class _Body:
    """The compiled HTML and text templates of one (template, variant), and what they came from."""

    html_source: str
    text_source: str
    html: Template
    text: Template
    sources: dict[str, str]  # display path -> original text, for locating render errors
    mtimes: dict[str, int]  # template name -> mtime_ns at compile time
    emails: dict[tuple[str, bool], "CompiledEmail"] = field(default_factory=dict)  # by (subject, tracking)
    tracked: "_Body | None" = None  # the same with link tracking and the open pixel, made on first use


#: How a problem in a rendered subject begins (the subject lives in the campaign file, not the template).
SUBJECT_PART = "subject: "


class CompiledEmail:
    """A compiled template plus subject; `render(context)` is the per-recipient step."""

    def __init__(self, *, template: str, display: str, variant: str, subject_source: str, subject: Template,
                 body: _Body, tracking: bool = False):
        self.template = template
        self.variant = variant
        self.subject_source = subject_source
        self.html_source = body.html_source
        self.text_source = body.text_source
        self._display = display
        self._subject = subject
        self._html = body.html
        self._text = body.text
        self._sources = body.sources
        self.tracking = tracking
        self._mentions: dict[tuple[str, ...], bool] = {}

    def mentions(self, *names: str) -> bool:
        """Whether the subject or any template file it renders uses one of these names (as a word)."""
        found = self._mentions.get(names)
        if found is None:
            word = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b")
            found = any(word.search(text) for text in (self.subject_source, *self._sources.values()))
            self._mentions[names] = found
        return found

    def render(self, context: dict[str, Any]) -> RenderedEmail:
        """Subject, HTML and plain text for one recipient; a template fault raises RenderError."""
        part = "HTML"
        try:
            with budget.limits():  # one budget of time and iterations for the three parts
                html_parts = _pieces(self._html, context)
                budget.check_output(html_parts, "the HTML part")
                part = "plain-text part"
                text_parts = _pieces(self._text, context)
                budget.check_output(text_parts, "the plain-text part")
                part = "subject"
                raw = _pieces(self._subject, context)
                budget.check_output(raw, "the subject", 10 * budget.MAX_SUBJECT)
                subject = " ".join("".join(raw).split())
                budget.check_size("the subject", len(subject), budget.MAX_SUBJECT)
        except Exception as exc:  # any failure inside a template is the template's fault
            raise self._fault(exc, part) from exc
        if _CONTROL.search(subject):
            subject = _CONTROL.sub("", subject)
        text = "".join(text_parts)
        tidy = tidy_text(text)
        if tidy is not text:
            text, text_parts = tidy, (tidy,)
        return RenderedEmail(subject=subject, html="".join(html_parts), text=text, html_parts=html_parts,
                             text_parts=text_parts)

    def _fault(self, exc: Exception, part: str) -> TemplateFault:
        where = f" (variant {self.variant})" if self.variant else ""
        label = "" if part == "HTML" else f"{part}: "
        found = None
        if isinstance(exc, UndefinedError):
            sources = {"subject": self.subject_source} if part == "subject" else self._sources
            name, found = _locate_undefined(str(exc), sources)
            message = f"undefined variable '{name}'" + ("" if part == "subject" else f" in {self.template}")
        elif isinstance(exc, SecurityError):
            m = re.search(r"attribute '([^']+)'", str(exc))
            if m:
                found = _find_tag(lambda tag: m.group(1) in tag, self._sources)
            message = f"refused by the sandbox: {exc}"
        elif isinstance(exc, TemplateNotFound):
            found = _find_tag(_INCLUDE.match, self._sources)
            message = f"include refused: {exc.message or exc.name}"
        else:
            message = f"{type(exc).__name__}: {exc}"
        if found is None and part != "subject":
            found = self._from_traceback(exc, self.text_source if part.startswith("plain") else self.html_source)
        if part == "subject":
            found = None  # the subject lives in the campaign file, not in the template
        file, line = found or (self._display, None)
        return TemplateFault(file, line, f"{label}{message}{where}")

    def _from_traceback(self, exc: Exception, compiled: str) -> tuple[str, int] | None:
        """Where in the sources the tag on the failing line of the compiled template was written."""
        tb, lineno = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<template>":
                lineno = tb.tb_lineno
            tb = tb.tb_next
        lines = compiled.splitlines()
        if lineno is None or not 0 < lineno <= len(lines):
            return None
        tags = {t.group() for t in JINJA_TAG.finditer(lines[lineno - 1])}
        if len(tags) != 1:
            return None  # MJML output packs many tags on a line: do not guess
        tag = tags.pop()
        return _find_tag(lambda text: text == tag, self._sources)


class Renderer:
    """Compiles MJML email templates from one directory and caches them until a file changes."""

    def __init__(self, templates_dir: Path, *, mjml2html: Callable[..., str] | None = None):
        self.files = TemplateFiles(Path(templates_dir))
        self._mjml2html = mjml2html or mjml.mjml2html
        self._html_env = html_environment(self.files)
        self._text_env = text_environment(self.files, transform=_included_text)
        self._subject_env = subject_environment(self.files)
        self._bodies: dict[tuple[str, str], _Body] = {}
        self._lock = threading.Lock()

    def compile(self, template: str, *, subject: str, variant: str = "", tracking: bool = False) -> CompiledEmail:
        """The compiled email for `template` (a name under the templates directory) and `subject`."""
        # With `tracking`, links go through the `vm_track` filter and the HTML ends with the open
        # pixel (see engine.rendering.links); the context's tracker decides what they become.
        with self._lock:
            key = (template, variant)
            body = self._bodies.get(key)
            if body is None or self._stale(body):
                body = self._compile_body(template)
                self._bodies[key] = body
            email = body.emails.get((subject, tracking))
            if email is None:
                if tracking and body.tracked is None:
                    body.tracked = self._track(template, body)
                email = CompiledEmail(template=template, display=self.files.display(template), variant=variant,
                                      subject_source=subject, subject=self._compile_subject(template, subject),
                                      body=body.tracked if tracking else body, tracking=tracking)
                body.emails[(subject, tracking)] = email
            return email

    def check(self, template: str, *, subject: str, context: dict[str, Any], variant: str = "") -> list[Problem]:
        """Compile and render with `context`; the problems found, as `file:line: message` (never raises)."""
        display = self.files.display(template) if isinstance(template, str) else str(template)
        try:
            rendered = self.compile(template, subject=subject, variant=variant).render(context)
        except TemplateFault as fault:
            return list(fault.problems)
        except RenderError as exc:
            return [Problem(display, None, str(exc))]
        return _contract_problems(display, rendered, context)

    def _stale(self, body: _Body) -> bool:
        return any(self.files.mtime(name) != mtime for name, mtime in body.mtimes.items())

    def _inspect(self, name: str, source: str) -> None:
        try:
            self._html_env.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateFault(self.files.display(name), exc.lineno, f"Jinja syntax error: {exc.message}") from None

    def _compile_body(self, template: str) -> _Body:
        protector = Protector()
        out = compile_mjml(template, files=self.files, protector=protector, mjml2html=self._mjml2html,
                           inspect=self._inspect)
        html_source, seen = protector.restore(escape_stray_braces(out.html))
        lost = [n for n in range(len(protector.tags)) if n not in seen]
        if lost:
            tag = protector.tag_at(lost[0])
            raise TemplateFault(tag.file, tag.line, f"Jinja tag {tag.text.strip()} was dropped by the MJML compiler "
                                                    "(is it in an attribute MJML does not know, or a statement "
                                                    "between MJML elements that belongs inside <mj-raw>?)")
        display = self.files.display(template)
        try:
            html = self._html_env.from_string(html_source)
        except TemplateSyntaxError as exc:
            raise TemplateFault(display, None, f"after MJML compilation the Jinja tags no longer nest: "
                                               f"{exc.message} (keep each block inside one <mj-raw> or element)") from None
        text_source = html_to_text_template(html_source)
        try:
            text = self._text_env.from_string(text_source)
        except TemplateSyntaxError as exc:
            raise TemplateFault(display, None, f"plain-text part: {exc.message}") from None
        sources = {self.files.display(name): src for name, src in out.sources.items()}
        return _Body(html_source=html_source, text_source=text_source, html=html, text=text, sources=sources,
                     mtimes=dict(out.mtimes))

    def _track(self, template: str, body: _Body) -> _Body:
        """`body` with tracked links and the open pixel; compiled from the same MJML output, once."""
        html_source = track_html(body.html_source, pixel=True)
        try:
            html = self._html_env.from_string(html_source)
            text_source = html_to_text_template(body.html_source, track=True)
            text = self._text_env.from_string(text_source)
        except TemplateSyntaxError as exc:
            # Every link value this wraps was a valid expression already; should one still not
            # compile, the mail goes out with its links as written rather than not at all.
            log.error("%s: link tracking left out: the tracked template does not compile: %s",
                      self.files.display(template), exc.message)
            return body
        return _Body(html_source=html_source, text_source=text_source, html=html, text=text, sources=body.sources,
                     mtimes=body.mtimes)

    def _compile_subject(self, template: str, subject: str) -> Template:
        if not isinstance(subject, str):
            raise TemplateFault(self.files.display(template), None, "subject must be a string")
        try:
            return self._subject_env.from_string(subject)
        except TemplateSyntaxError as exc:
            raise TemplateFault(self.files.display(template), None, f"subject: Jinja syntax error: {exc.message}") from None


def _included_text(name: str, source: str) -> str:
    """A file included from the text template: HTML fragments become text, anything else stays."""
    return html_to_text_template(source) if name.endswith((".html", ".htm")) else source


def _pieces(template: Template, context: dict[str, Any]) -> tuple[str, ...]:
    """What `template.render(context)` joins, kept apart (see RenderedEmail)."""
    try:
        return tuple(template.root_render_func(template.new_context(context)))
    except Exception:
        template.environment.handle_exception()  # re-raises with the template's line numbers
        raise


def _locate_undefined(message: str, sources: dict[str, str]) -> tuple[str, tuple[str, int] | None]:
    """The undefined name (dotted where the source shows it) and the first file:line using it."""
    m = _UNDEFINED.search(message)
    if not m:
        return message, None
    name = m.group("name") or m.group("attr")
    if m.group("name"):
        pattern = re.compile(rf"(?<![\w.'\"]){re.escape(name)}\b")
    else:
        pattern = re.compile(rf"(?:[A-Za-z_]\w*(?:\.\w+|\[[^\]]*\])*?)?(?:\.{re.escape(name)}\b|\[\s*['\"]?"
                             rf"{re.escape(name)}['\"]?\s*\])")
    for file, text in sources.items():
        for tag in JINJA_TAG.finditer(text):
            hit = pattern.search(tag.group())
            if hit:
                return hit.group().replace(" ", ""), (file, text.count("\n", 0, tag.start() + hit.start()) + 1)
    return name, None


def _find_tag(matches: Callable[[str], Any], sources: dict[str, str]) -> tuple[str, int] | None:
    """file:line of the first Jinja tag in the sources for which `matches(tag)` is true."""
    for file, text in sources.items():
        for tag in JINJA_TAG.finditer(text):
            if matches(tag.group()):
                return file, text.count("\n", 0, tag.start()) + 1
    return None


def _contract_problems(display: str, rendered: RenderedEmail, context: dict[str, Any]) -> list[Problem]:
    """What PRODUCT.md says every message carries, checked on a rendered sample."""
    problems: list[Problem] = []
    if not rendered.subject:
        problems.append(Problem(display, None, "the subject renders empty"))
    links = context.get("links") or {}
    wanted = [("unsubscribe", "an unsubscribe link ({{ links.unsubscribe }})"),
              ("preferences", "a link to the preference centre ({{ links.preferences }})")]
    for key, what in wanted:
        url = links.get(key)
        if url and str(escape(url)) not in rendered.html:
            problems.append(Problem(display, None, f"the HTML part has no {what}"))
        if url and url not in rendered.text:
            problems.append(Problem(display, None, f"the plain-text part has no {what}"))
    address = (context.get("sender") or {}).get("postal_address")
    if address and str(escape(address)) not in rendered.html:
        problems.append(Problem(display, None, "the footer lacks the sender's postal address ({{ sender.postal_address }})"))
    return problems
