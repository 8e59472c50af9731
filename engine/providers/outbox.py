"""The `outbox` provider: every message becomes an .eml file (the local default)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from ..config import OutboxSettings
from .base import OutgoingMessage, ProviderContext, SendResult

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


class OutboxProvider:
    """Writes `<outbox>/<message-id>.eml` atomically, so a crash never leaves half a file."""

    name = "outbox"
    sends_mime = True

    def __init__(self, directory: Path, *, sign: Callable[[bytes], bytes] | None = None):
        self.directory = Path(directory)
        self.sign = sign

    @classmethod
    def from_settings(cls, settings: OutboxSettings, *, context: ProviderContext) -> "OutboxProvider":
        """Build from `[provider.outbox]`; the default directory is var/outbox."""
        directory = Path(settings.directory) if settings.directory else Path(context.var_dir) / "outbox"
        # Signed like the smtp provider signs, so the .eml files show what would go out.
        return cls(directory, sign=context.dkim.sign if context.dkim else None)

    def send(self, message: OutgoingMessage) -> SendResult:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = _UNSAFE.sub("_", message.message_id.strip("<>"))
        final = self.directory / f"{stem}.eml"
        partial = self.directory / f".{stem}.{os.getpid()}.tmp"
        try:
            with open(partial, "wb") as fh:
                fh.write(self.sign(message.data) if self.sign else message.data)
            os.replace(partial, final)
        except OSError as exc:
            return SendResult.temporary(f"cannot write {final}: {exc.strerror}")
        return SendResult.ok(final.name)

    def close(self) -> None:
        pass
