"""The provider interface: send one message, get a normalised result. No Flask, no database here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class Outcome(str, enum.Enum):
    """Our own vocabulary for what happened to a message, whatever the provider calls it."""

    sent = "sent"  # accepted by the provider
    temporary = "temporary"  # try again later (4xx, network, rate limit)
    permanent = "permanent"  # will never succeed for this recipient (5xx)


@dataclass(frozen=True)
class OutgoingMessage:
    """A fully built message; providers that take raw MIME use `data`, API providers the fields."""

    envelope_from: str
    recipient: str
    data: bytes
    message_id: str
    subject: str = ""
    text: str = ""
    html: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    tag: str = ""  # e.g. the campaign id, for providers that support tags


@dataclass(frozen=True)
class SendResult:
    """What a provider made of one message."""

    outcome: Outcome
    provider_message_id: str | None = None
    error: str | None = None
    code: int | None = None  # e.g. the SMTP reply code
    retry_after: float | None = None  # seconds, when the provider said so

    @classmethod
    def ok(cls, provider_message_id: str | None) -> "SendResult":
        return cls(Outcome.sent, provider_message_id=provider_message_id)

    @classmethod
    def temporary(cls, error: str, *, code: int | None = None, retry_after: float | None = None) -> "SendResult":
        return cls(Outcome.temporary, error=error, code=code, retry_after=retry_after)

    @classmethod
    def permanent(cls, error: str, *, code: int | None = None) -> "SendResult":
        return cls(Outcome.permanent, error=error, code=code)


class Provider(Protocol):
    """Sends messages; one instance per worker thread, never shared between threads."""

    name: str

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; per-message failures are results, not exceptions."""
        ...

    def close(self) -> None:
        """Release connections; the provider may be used again afterwards."""
        ...


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory gets besides its own settings section."""

    var_dir: str
    env: dict[str, str] = field(default_factory=dict)
