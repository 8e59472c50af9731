"""Providers, found through the `valuemail.providers` entry-point group."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Callable

from ..config import Settings
from ..dkim import signer_from_settings
from ..errors import ProviderError
from .base import Outcome, OutgoingMessage, Provider, ProviderContext, SendResult, send_batch

ENTRY_POINT_GROUP = "valuemail.providers"


def available() -> dict[str, object]:
    """Provider classes by name, from the installed entry points."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def provider_factory(settings: Settings, *, name: str | None = None,
                     env: dict[str, str] | None = None) -> Callable[[], Provider]:
    """A function that makes a fresh provider instance (one per worker thread)."""
    name = name or settings.provider.name
    found = available()
    if name not in found:
        raise ProviderError(f"unknown provider {name!r} (installed: {', '.join(sorted(found)) or 'none'})")
    cls = found[name].load()
    # Our own providers get their typed section; a plug-in gets its [provider.<name>] table as a dict.
    section = settings.provider.section(name)
    context = ProviderContext(var_dir=str(settings.var_dir), env=dict(os.environ if env is None else env),
                              dkim=signer_from_settings(settings), concurrency=settings.sending.concurrency)

    def make() -> Provider:
        return cls.from_settings(section, context=context)

    make()  # fail now, not in a worker thread, when the settings cannot build it
    make.provider_class = cls  # what it sends (`sends_mime`) is known without making one
    return make


__all__ = ["Outcome", "OutgoingMessage", "Provider", "ProviderContext", "SendResult", "provider_factory", "available", "send_batch"]
