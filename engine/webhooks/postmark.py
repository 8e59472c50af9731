"""Postmark webhooks, authenticated by HTTP Basic credentials put in the webhook URL.

Postmark does not sign its webhooks; its documented protection is basic auth on the URL
(https://user:password@host/webhooks/postmark), compared here in constant time. The body is
one record: Bounce (its Type classified per Postmark's bounce type list), SpamComplaint or Delivery.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from ..config import WebhookSettings
from .base import (DELIVERY_KEY, RUN_KEY, BounceKind, EventType, Parsed, WebhookDeps, WebhookEvent,
                   WebhookNotConfigured, WebhookRefused, WebhookRequest, load_json, parse_time, require_object, text)

CHALLENGE = 'Basic realm="valuemail webhooks", charset="UTF-8"'
#: Postmark bounce types that mean the address cannot receive mail.
HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
#: ... that mean a temporary failure at the receiving side.
SOFT = frozenset({"Transient", "SoftBounce", "DnsError", "Blocked", "DMARCPolicy", "SpamNotification"})
# Not acted on: Unsubscribe, Subscribe, AutoResponder, AddressChange, OpenRelayTest, Unknown,
# VirusNotification, ChallengeVerification, Unconfirmed, SMTPApiError, InboundError, TemplateRenderingFailed.


class PostmarkVerifier:
    """Checks Postmark's basic-auth credentials and parses its records."""

    name = "postmark"

    def __init__(self, *, username: str, password: str):
        self.expected = f"{username}:{password}".encode("utf-8")

    def parse(self, request: WebhookRequest) -> Parsed:
        """Check the credentials, then return the record's event."""
        scheme, _, encoded = request.header("authorization").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise WebhookRefused("no basic-auth credentials", status=401, challenge=CHALLENGE)
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRefused("the basic-auth credentials are not base64", status=401, challenge=CHALLENGE) from None
        if not hmac.compare_digest(given, self.expected):
            raise WebhookRefused("wrong basic-auth credentials", status=401, challenge=CHALLENGE)
        record = require_object(load_json(request.body), "the body")
        event = _event(record)
        return Parsed(events=(event,) if event else (), ignored=0 if event else 1)


def _event(record: dict) -> WebhookEvent | None:
    kind = text(record.get("RecordType"))
    metadata = record.get("Metadata") if isinstance(record.get("Metadata"), dict) else {}
    message_id = text(record.get("MessageID"))
    common = dict(delivery_id=text(metadata.get(DELIVERY_KEY)), run_id=text(metadata.get(RUN_KEY)),
                  provider_message_ids=(message_id,) if message_id else ())
    if kind == "Delivery":
        recipient = text(record.get("Recipient"))
        return WebhookEvent(key=f"delivery:{message_id}:{recipient.lower()}", type=EventType.delivered,
                            recipient=recipient, occurred_at=parse_time(record.get("DeliveredAt")),
                            diagnostic=text(record.get("Details")), **common)
    if kind not in ("Bounce", "SpamComplaint"):
        return None
    bounce_type = text(record.get("Type"))
    key = f"{kind.lower()}:{text(record.get('ID')) or message_id}"
    recipient = text(record.get("Email"))
    at = parse_time(record.get("BouncedAt"))
    diagnostic = text(record.get("Details")) or text(record.get("Description"))
    if kind == "SpamComplaint" or bounce_type == "SpamComplaint":
        return WebhookEvent(key=key, type=EventType.complained, recipient=recipient, occurred_at=at,
                            diagnostic=bounce_type or "SpamComplaint", **common)
    if bounce_type in HARD or bounce_type in SOFT:
        return WebhookEvent(key=key, type=EventType.bounced, recipient=recipient, occurred_at=at,
                            kind=BounceKind.hard if bounce_type in HARD else BounceKind.soft,
                            code=f"{bounce_type} ({text(record.get('TypeCode'))})", diagnostic=diagnostic, **common)
    return None


def build(settings: WebhookSettings, *, deps: WebhookDeps) -> PostmarkVerifier:
    """The Postmark verifier, refusing everything while username or password is not set."""
    name = settings.postmark.password_env
    missing = f"Postmark webhook credentials are not set: set [webhooks.postmark] username and ${name}"
    password = deps.secret(name, missing=missing)
    if not settings.postmark.username:
        raise WebhookNotConfigured(missing)
    return PostmarkVerifier(username=settings.postmark.username, password=password)
