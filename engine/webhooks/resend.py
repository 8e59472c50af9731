"""Resend webhooks, signed the Svix way.

Svix signs "{svix-id}.{svix-timestamp}.{body}" with HMAC-SHA256 under the base64 key after the
`whsec_` prefix of the endpoint's signing secret; svix-signature is a space-separated list of
"v1,<base64>" entries, any of which may match. The timestamp must be recent. An exact replay
(same id and timestamp) is refused; a retry (same id, new timestamp and signature) is verified
and then changes nothing, as its events were recorded under the svix-id already.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from ..config import WebhookSettings
from .base import (DELIVERY_KEY, RUN_KEY, BounceKind, EventType, Parsed, WebhookDeps, WebhookEvent,
                   WebhookNotConfigured, WebhookRefused, WebhookRequest, check_timestamp, load_json, parse_time,
                   require_object, text)

SECRET_PREFIX = "whsec_"


class ResendVerifier:
    """Verifies Resend (Svix) webhooks."""

    name = "resend"

    def __init__(self, *, secret: bytes, tolerance: int):
        self.secret = secret
        self.tolerance = tolerance

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify the Svix signature and timestamp; return the event keyed by its svix-id."""
        msg_id, stamp, signatures = (request.header(h) for h in ("svix-id", "svix-timestamp", "svix-signature"))
        if not msg_id or not stamp or not signatures:
            raise WebhookRefused("missing svix-id, svix-timestamp or svix-signature", status=401)
        signed = msg_id.encode("utf-8") + b"." + stamp.encode("utf-8") + b"." + request.body
        expected = base64.b64encode(hmac.new(self.secret, signed, hashlib.sha256).digest())
        candidates = [part.partition(",") for part in signatures.split(" ")]
        if not any(version == "v1" and hmac.compare_digest(expected, value.encode("utf-8"))
                   for version, _, value in candidates):
            raise WebhookRefused("the Svix signature does not verify")
        check_timestamp(stamp, now=request.now, tolerance=self.tolerance, what="svix-timestamp")
        body = require_object(load_json(request.body), "the body")
        event = _event(body, msg_id)
        return Parsed(events=(event,) if event else (), ignored=0 if event else 1, nonces=(f"svix:{msg_id}:{stamp}",))


def _event(body: dict, msg_id: str) -> WebhookEvent | None:
    kind = text(body.get("type"))
    data = require_object(body.get("data"), "data")
    tags = _tags(data.get("tags"))
    email_id = text(data.get("email_id"))
    recipients = data.get("to") if isinstance(data.get("to"), list) else [data.get("to")]
    # We send one message per recipient, so the first is the one.
    common = dict(key=msg_id, recipient=text(recipients[0]) if recipients else "",
                  occurred_at=parse_time(body.get("created_at")), delivery_id=tags.get(DELIVERY_KEY, ""),
                  run_id=tags.get(RUN_KEY, ""), provider_message_ids=(email_id,) if email_id else ())
    if kind == "email.delivered":
        return WebhookEvent(type=EventType.delivered, **common)
    if kind == "email.complained":
        return WebhookEvent(type=EventType.complained, diagnostic="spam complaint", **common)
    if kind == "email.bounced":
        bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
        bounce_type = text(bounce.get("type"))
        severity = BounceKind.hard if bounce_type == "Permanent" else BounceKind.soft
        return WebhookEvent(type=EventType.bounced, kind=severity,
                            code=" ".join(filter(None, (bounce_type, text(bounce.get("subType"))))),
                            diagnostic=text(bounce.get("message")), **common)
    return None


def _tags(value) -> dict[str, str]:
    # Resend echoes tags as an object; its send API takes a list of {name, value}: accept both.
    if isinstance(value, dict):
        return {str(k): text(v) for k, v in value.items()}
    if isinstance(value, list):
        return {text(t.get("name")): text(t.get("value")) for t in value if isinstance(t, dict)}
    return {}


def build(settings: WebhookSettings, *, deps: WebhookDeps) -> ResendVerifier:
    """The Resend verifier, refusing everything while the signing secret is not set."""
    name = settings.resend.secret_env
    raw = deps.secret(name, missing=f"the Resend webhook signing secret is not set: put it in ${name}")
    try:
        secret = base64.b64decode(raw.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookNotConfigured(f"${name} is not a Resend signing secret (whsec_<base64>)") from None
    return ResendVerifier(secret=secret, tolerance=settings.tolerance_seconds)
