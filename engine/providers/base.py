"""The provider interface: send one message, get a normalised result. No Flask, no database here."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    from ..dkim import DkimSigner

T = TypeVar("T")


class Outcome(str, enum.Enum):
    """Our own vocabulary for what happened to a message, whatever the provider calls it."""

    sent = "sent"  # accepted by the provider
    temporary = "temporary"  # try again later (4xx, network, rate limit)
    permanent = "permanent"  # will never succeed for this recipient (5xx)
    uncertain = "uncertain"  # the data went out but no answer came back: maybe delivered, never resent


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
    headers: tuple[tuple[str, str], ...] = ()  # ours (List-Unsubscribe...), passed through by API providers
    tag: str = ""  # e.g. the campaign id, for providers that support tags
    from_email: str = ""  # the From header's address and display name, for API providers
    from_name: str = ""
    to_name: str = ""
    reply_to: str = ""
    metadata: tuple[tuple[str, str], ...] = ()  # sent as the provider's custom args; webhooks echo them

    def header(self, name: str) -> str | None:
        """The value of one of our extra headers, by case-insensitive name."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class SendResult:
    """What a provider made of one message."""

    outcome: Outcome
    provider_message_id: str | None = None
    error: str | None = None
    code: int | None = None  # e.g. the SMTP reply code
    retry_after: float | None = None  # seconds, when the provider said so
    # The provider itself is down or unreachable (not this recipient's problem): a fallback
    # provider may take the message. Never set with `uncertain`, whose message may be out already.
    unavailable: bool = False
    # The provider asked us to slow down (HTTP 429, SMTP 421): every message to it waits
    # `retry_after`, not just this one. (An SMTP "try again in N minutes" on another 4xx only
    # delays its own message: greylisting or a full mailbox says nothing about the others.)
    throttled: bool = False

    @classmethod
    def ok(cls, provider_message_id: str | None) -> "SendResult":
        return cls(Outcome.sent, provider_message_id=provider_message_id)

    @classmethod
    def temporary(cls, error: str, *, code: int | None = None, retry_after: float | None = None,
                  unavailable: bool = False, throttled: bool = False) -> "SendResult":
        return cls(Outcome.temporary, error=error, code=code, retry_after=retry_after, unavailable=unavailable,
                   throttled=throttled)

    @classmethod
    def uncertain(cls, error: str, *, code: int | None = None) -> "SendResult":
        return cls(Outcome.uncertain, error=error, code=code)

    @classmethod
    def permanent(cls, error: str, *, code: int | None = None) -> "SendResult":
        return cls(Outcome.permanent, error=error, code=code)


class Provider(Protocol):
    """Sends messages; one instance per sending process, used by one thread at a time.

    `send_batch` is the sending path: the sender hands it up to `[sending] batch_size` messages
    and gets one result per message, in the same order. A provider keeps many of them in flight
    at once (pipelined SMTP connections, a batch API endpoint, concurrent requests); `send` is
    one message alone (test sends, tools). A provider without `send_batch` (an older plug-in)
    is sent one message at a time through `send` (see `send_batch` below).
    """

    name: str
    #: True: sends `message.data`, the built MIME (SMTP, outbox, SES raw); False: sends the fields
    #: (subject, text, html, headers) as an API's JSON or form. A plug-in without it gets both.
    sends_mime: bool

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; per-message failures are results, not exceptions."""
        ...

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send many messages; one result per message, in order; failures are results, not exceptions.

        Messages the provider did not even try because it asked us to slow down (HTTP 429, SMTP
        421) get a `throttled` temporary result: they are requeued without counting an attempt.
        """
        ...

    @classmethod
    def from_settings(cls, settings, *, context: "ProviderContext") -> "Provider":
        """Build from the provider's settings section (a typed section, or a dict for a plug-in)."""
        ...

    def close(self) -> None:
        """Release connections; the provider may be used again afterwards."""
        ...


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory gets besides its own settings section.

    One context is made per provider factory, so `shared` is how the per-thread instances of one
    provider share a resource (an SMTP connection pool, say).
    """

    var_dir: str
    env: dict[str, str] = field(default_factory=dict)
    # `[sending] concurrency`: API requests a provider may have in flight at once in one process.
    concurrency: int = 4
    # `[dkim]` signing, built once per factory; providers that send raw MIME (smtp, outbox) apply it.
    dkim: "DkimSigner | None" = None
    _shared: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def shared(self, key: str, build: Callable[[], T]) -> T:
        """The object stored under `key`, built on first use; the same one for every instance."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = build()
            return self._shared[key]


def send_batch(provider, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
    """`provider.send_batch(messages)`, or one `send` after another for a provider without it."""
    batch = getattr(provider, "send_batch", None)
    if batch is not None:
        results = list(batch(messages))
        if len(results) != len(messages):
            raise RuntimeError(f"provider {provider.name}: {len(results)} results for {len(messages)} messages")
        return results
    results: list[SendResult] = []
    for message in messages:
        result = provider.send(message)
        results.append(result)
        if result.outcome is Outcome.temporary and result.throttled:
            # It asked us to slow down: the rest are not tried, and wait as long as it said.
            results.extend([result] * (len(messages) - len(results)))
            break
    return results
