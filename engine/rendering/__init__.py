"""Email rendering: MJML compiled once per (template, variant), sandboxed Jinja2 per recipient."""

from .context import sample_context
from .faults import TemplateFault
from .renderer import CompiledEmail, RenderedEmail, Renderer

__all__ = ["CompiledEmail", "RenderedEmail", "Renderer", "TemplateFault", "sample_context"]
