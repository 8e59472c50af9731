"""What every webhook verifier shares: the request it reads, the events it yields, how it refuses.

A verifier checks one provider's request exactly as that provider documents it and turns the
payload into our own events. It never touches the database or Flask: the nonces it wants
remembered (Mailgun tokens, Svix ids) are returned, and the caller refuses a replay.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

from ..errors import ValuemailError

#: Our metadata keys, sent through each provider's custom-argument mechanism and echoed back.
DELIVERY_KEY = "valuemail_delivery"
RUN_KEY = "valuemail_run"

#: Fetches a URL and returns the body; raises OSError (or a subclass) when it cannot.
HttpGet = Callable[[str], bytes]


class EventType(str, enum.Enum):
    """The events we act on; everything else a provider reports is ignored."""

    delivered = "delivered"
    bounced = "bounced"
    complained = "complained"


class BounceKind(str, enum.Enum):
    hard = "hard"  # the address will never accept mail: suppressed at once
    soft = "soft"  # a temporary failure: suppressed after repeated ones


class WebhookRefused(ValuemailError):
    """The request is not verifiably from the provider (or is a replay): nothing of it is used."""

    def __init__(self, reason: str, *, status: int = 403, challenge: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.challenge = challenge  # the WWW-Authenticate value of a 401, when the scheme has one


class WebhookNotConfigured(WebhookRefused):
    """The provider's secret is not configured, so no request can be verified."""


class WebhookMalformed(ValuemailError):
    """The body is not what the provider documents (not JSON, or the wrong shape)."""


class WebhookUpstreamError(ValuemailError):
    """A verified request needed a call to the provider (SNS subscription confirmation) that failed."""


@dataclass(frozen=True)
class WebhookRequest:
    """The parts of an HTTP request a verifier may read; header names are lower-cased."""

    body: bytes
    headers: Mapping[str, str]
    now: datetime

    def header(self, name: str) -> str:
        """A header's value, or "" when it is absent."""
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class WebhookEvent:
    """One event in our vocabulary, with what is needed to find the delivery it is about."""

    key: str  # unique per provider: the same event delivered twice has the same key
    type: EventType
    recipient: str
    occurred_at: datetime | None = None
    kind: BounceKind | None = None  # bounces only
    code: str = ""  # e.g. the SMTP or enhanced status code
    diagnostic: str = ""  # what the receiving server (or the provider) said
    delivery_id: str = ""  # our metadata, as echoed by the provider
    run_id: str = ""
    provider_message_ids: tuple[str, ...] = ()  # ids the provider may have returned when we sent
    message_id: str = ""  # our Message-ID header, when the provider reports it


@dataclass(frozen=True)
class Parsed:
    """A verified request: our events, how many provider events were not ours to act on, nonces to claim."""

    events: tuple[WebhookEvent, ...] = ()
    ignored: int = 0
    nonces: tuple[str, ...] = ()
    note: str = ""  # for the log: what a request without events did (a confirmed subscription, say)


class Verifier(Protocol):
    """Verifies and parses one provider's webhook requests."""

    name: str

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify `request` and return its events; raises WebhookRefused or WebhookMalformed."""
        ...


@dataclass
class WebhookDeps:
    """I/O the verifiers need, made once per app: the HTTP getter (SNS certificates, confirmations) and caches."""

    http_get: HttpGet
    env: Mapping[str, str]
    cache: dict[str, Any] = field(default_factory=dict)

    def secret(self, env_name: str, *, missing: str) -> str:
        """The secret in environment variable `env_name`; WebhookNotConfigured(`missing`) when unset or empty."""
        value = self.env.get(env_name, "") if env_name else ""
        if not value:
            raise WebhookNotConfigured(missing)
        return value


def load_json(body: bytes) -> Any:
    """The body parsed as JSON, or WebhookMalformed saying why not."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookMalformed("body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise WebhookMalformed(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def require_object(value: Any, what: str) -> dict:
    """`value` when it is a JSON object, else WebhookMalformed naming `what`."""
    if not isinstance(value, dict):
        raise WebhookMalformed(f"{what} must be a JSON object")
    return value


def text(value: Any) -> str:
    """A scalar JSON value as text ("" for null, objects and lists)."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return ""
    return str(value)


def first_text(value: Any) -> str:
    """The first element of a list (SES tags hold lists), or the value itself, as text."""
    if isinstance(value, list):
        return text(value[0]) if value else ""
    return text(value)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp or Unix seconds as aware UTC, or None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        raw = value.strip()
        if raw.endswith("Z"):
            raw = raw[:-1] + "+00:00"
        # Postmark writes seven fractional digits; fromisoformat takes at most six.
        head, dot, rest = raw.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            raw = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def check_timestamp(raw: str, *, now: datetime, tolerance: int, what: str) -> None:
    """Refuse a signature timestamp (Unix seconds) further than `tolerance` seconds from now."""
    try:
        stamp = int(raw)
    except ValueError:
        raise WebhookRefused(f"{what} is not a Unix timestamp", status=401) from None
    if abs(now.timestamp() - stamp) > tolerance:
        raise WebhookRefused(f"{what} is {int(now.timestamp()) - stamp} s from now (tolerance {tolerance} s)")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
