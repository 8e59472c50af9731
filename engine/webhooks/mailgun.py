"""Mailgun webhooks: an HMAC-SHA256 of timestamp and token under the webhook signing key.

The body is JSON: `signature` {timestamp, token, signature (hex)} and `event-data`. Mailgun says
to check the timestamp is recent and to refuse a token seen before; the caller claims the token.
Our metadata comes back as the message's user variables (`v:` when sending).
"""

from __future__ import annotations

import hashlib
import hmac

from ..config import WebhookSettings
from .base import (DELIVERY_KEY, RUN_KEY, BounceKind, EventType, Parsed, WebhookDeps, WebhookEvent,
                   WebhookRefused, WebhookRequest, check_timestamp, load_json, parse_time,
                   require_object, text)

SEVERITIES = {"permanent": BounceKind.hard, "temporary": BounceKind.soft}


class MailgunVerifier:
    """Verifies Mailgun event webhooks."""

    name = "mailgun"

    def __init__(self, *, signing_key: bytes, tolerance: int):
        self.signing_key = signing_key
        self.tolerance = tolerance

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify the signature block, then return the event (its token is the nonce to claim)."""
        body = require_object(load_json(request.body), "the body")
        signature = body.get("signature")
        if not isinstance(signature, dict):
            raise WebhookRefused("the body has no signature object", status=401)
        stamp, token, digest = (text(signature.get(k)) for k in ("timestamp", "token", "signature"))
        if not stamp or not token or not digest:
            raise WebhookRefused("the signature lacks timestamp, token or signature", status=401)
        expected = hmac.new(self.signing_key, (stamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest.lower()):
            raise WebhookRefused("the Mailgun signature does not verify")
        check_timestamp(stamp, now=request.now, tolerance=self.tolerance, what="the signature timestamp")
        data = require_object(body.get("event-data"), "event-data")
        event = _event(data)
        nonces = (f"token:{token}",)
        return Parsed(events=(event,) if event else (), ignored=0 if event else 1, nonces=nonces)


def _event(data: dict) -> WebhookEvent | None:
    name = text(data.get("event"))
    variables = data.get("user-variables") if isinstance(data.get("user-variables"), dict) else {}
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    # Mailgun's send response names the message "<id>", its events without the brackets.
    raw_id = text(headers.get("message-id")).strip("<>")
    common = dict(key=text(data.get("id")) or f"{name}:{raw_id}:{text(data.get('timestamp'))}",
                  recipient=text(data.get("recipient")), occurred_at=parse_time(data.get("timestamp")),
                  delivery_id=text(variables.get(DELIVERY_KEY)), run_id=text(variables.get(RUN_KEY)),
                  provider_message_ids=(f"<{raw_id}>", raw_id) if raw_id else (),
                  message_id=f"<{raw_id}>" if raw_id else "")
    diagnostic = text(status.get("description")) or text(status.get("message")) or text(data.get("reason"))
    if name == "delivered":
        return WebhookEvent(type=EventType.delivered, diagnostic=text(status.get("message")), **common)
    if name == "complained":
        return WebhookEvent(type=EventType.complained, diagnostic="spam complaint", **common)
    if name == "failed":
        kind = SEVERITIES.get(text(data.get("severity")))
        if kind is None:
            return None
        return WebhookEvent(type=EventType.bounced, kind=kind, code=text(status.get("code")), diagnostic=diagnostic,
                            **common)
    return None


def build(settings: WebhookSettings, *, deps: WebhookDeps) -> MailgunVerifier:
    """The Mailgun verifier, refusing everything while the signing key is not set."""
    name = settings.mailgun.signing_key_env
    key = deps.secret(name, missing=f"the Mailgun webhook signing key is not set: put it in ${name}")
    return MailgunVerifier(signing_key=key.encode("utf-8"), tolerance=settings.tolerance_seconds)
