"""Fixtures for rendering tests: a scratch templates directory and a renderer that counts compiles."""

from __future__ import annotations

import os
from pathlib import Path

import mjml
import pytest

from engine.rendering import Renderer, sample_context

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates" / "emails"


def doc(body: str, head: str = "") -> str:
    """A minimal MJML document around `body` (sections) and `head`."""
    return f"<mjml lang=\"en\"><mj-head>{head}</mj-head><mj-body>{body}</mj-body></mjml>\n"


def section(content: str) -> str:
    return f"<mj-section><mj-column>{content}</mj-column></mj-section>"


class Templates:
    """A templates directory under tmp_path that tests write files into."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        old = path.stat().st_mtime_ns if existed else 0
        path.write_text(text, encoding="utf-8")
        if existed:
            # Coarse file-system clocks could leave the mtime unchanged on a fast rewrite.
            os.utime(path, ns=(old + 1_000_000_000, old + 1_000_000_000))
        return path


class CountingCompiler:
    """Wraps mjml2html and counts calls, injected into the Renderer."""

    def __init__(self):
        self.calls = 0

    def __call__(self, source: str, **kwargs) -> str:
        self.calls += 1
        return mjml.mjml2html(source, **kwargs)


@pytest.fixture
def templates(tmp_path) -> Templates:
    return Templates(tmp_path / "templates" / "emails")


@pytest.fixture
def compiler() -> CountingCompiler:
    return CountingCompiler()


@pytest.fixture
def renderer(templates, compiler) -> Renderer:
    return Renderer(templates.root, mjml2html=compiler)


@pytest.fixture
def context() -> dict:
    return sample_context("seasonal_discount")
