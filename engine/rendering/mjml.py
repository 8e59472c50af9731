"""MJML → HTML (mrml via mjml-python) with confined includes, then `<mj-style inline>` CSS inlined.

mrml ignores `inline="inline"` on `<mj-style>` (it emits the rules in a `<style>` block like
any other), so those blocks are taken out of the source here and inlined with css_inline;
the remaining `<style>` blocks (media queries, client resets) stay in the head untouched,
which is what MJML itself does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import css_inline

from .faults import TemplateFault
from .files import TemplateFiles
from .protect import Protected, Protector

_INLINE_STYLE = re.compile(
    r"<mj-style\b(?=[^>]*\binline\s*=\s*[\"']inline[\"'])[^>]*>(.*?)</mj-style\s*>", re.S | re.I
)
_POSITION = re.compile(r'(?:from "(?P<file>[^"]+)" )?at position (?P<start>\d+):(?P<end>\d+)')
_LEFTOVER_MJ = re.compile(r"<(mj-[\w-]+)")


@dataclass
class MjmlOutput:
    """Compiled HTML (Jinja tags still as placeholders) and the files it was built from."""

    html: str
    sources: dict[str, str] = field(default_factory=dict)  # file name -> original text
    mtimes: dict[str, int] = field(default_factory=dict)


def _strip_inline_styles(source: str, css: list[str]) -> str:
    def take(m: re.Match) -> str:
        css.append(m.group(1))
        # Replace it by a comment of the same length, so mrml's error offsets still map to
        # source lines (mrml refuses bare spaces in <mj-head>, but takes a comment anywhere).
        blank = re.sub(r"[^\n]", " ", m.group())
        return "<!--" + blank[4:-3] + "-->"

    return _INLINE_STYLE.sub(take, source)


def compile_mjml(name: str, *, files: TemplateFiles, protector: Protector, mjml2html: Callable[..., str],
                 inspect: Callable[[str, str], None]) -> MjmlOutput:
    """Compile template `name`; `inspect(file, source)` vets each source (e.g. Jinja syntax) first."""
    out = MjmlOutput(html="")
    protected: dict[str, Protected] = {}
    css: list[str] = []
    failures: list[tuple[str, TemplateFault]] = []

    def prepare(file: str) -> str:
        source, mtime = files.read(file)
        out.sources[file], out.mtimes[file] = source, mtime
        inspect(file, source)
        # Protect first, so a Jinja tag in a style block cannot be mistaken for CSS.
        p = protector.protect(source, file=files.display(file))
        protected[file] = p
        return _strip_inline_styles(p.text, css)

    def include_loader(path: str) -> str:
        try:
            return prepare(path)
        except TemplateFault as fault:
            # mrml replaces the exception with a generic message; keep ours to report it.
            failures.append((path, fault))
            raise
        except Exception as exc:  # a bug here must not surface as "unable to load"
            failures.append((path, TemplateFault(files.display(path), None, f"cannot include: {exc}")))
            raise

    root = prepare(name)
    try:
        html = mjml2html(root, include_loader=include_loader, fonts={}, disable_comments=False)
    except Exception as exc:
        if failures:
            path, fault = failures[0]
            if fault.problem.line is None:
                # The include itself failed (unsafe, missing, unreadable): point at the <mj-include>.
                site = _mjml_fault(str(exc), name=name, files=files, protected=protected).problem
                raise TemplateFault(site.file, site.line, f"<mj-include path={path!r}>: {fault.problem.message}") from None
            raise fault from None
        raise _mjml_fault(str(exc), name=name, files=files, protected=protected) from None
    leftover = _LEFTOVER_MJ.search(html)
    if leftover:
        tag = leftover.group(1)
        file, line = _find(f"<{tag}", out.sources, files) or (files.display(name), None)
        raise TemplateFault(file, line, f"unknown MJML element <{tag}>")
    try:
        out.html = inline_css(html, "\n".join(css))
    except ValueError as exc:
        raise TemplateFault(files.display(name), None, f"cannot inline <mj-style inline> CSS: {exc}") from None
    return out


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html`'s elements; leave `<style>`/`<link>` tags and remote resources alone."""
    inliner = css_inline.CSSInliner(
        inline_style_tags=False,
        keep_style_tags=True,
        keep_link_tags=True,
        load_remote_stylesheets=False,
        extra_css=css,
    )
    return inliner.inline(html)  # css_inline.InlineError is a ValueError


def _mjml_fault(message: str, *, name: str, files: TemplateFiles, protected: dict[str, Protected]) -> TemplateFault:
    m = _POSITION.search(message)
    file, line = name, None
    if m:
        file = m.group("file") or name
        p = protected.get(file)
        if p is not None:
            line = p.line_of(int(m.group("start")))
        message = message[:m.start()].rstrip()
    message = re.sub(r"\s+in (?:root )?template$", "", message)
    return TemplateFault(files.display(file), line, f"MJML: {message}")


def _find(needle: str, sources: dict[str, str], files: TemplateFiles) -> tuple[str, int] | None:
    for file, text in sources.items():
        at = text.find(needle)
        if at >= 0:
            return files.display(file), text.count("\n", 0, at) + 1
    return None
