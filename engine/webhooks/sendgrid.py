"""SendGrid's Signed Event Webhook.

SendGrid signs the timestamp header followed by the raw body with ECDSA (P-256, SHA-256) and sends
the DER signature, base64, in X-Twilio-Email-Event-Webhook-Signature; the verification key is the
base64 DER public key shown in SendGrid's settings. The body is a JSON list of events; our
custom_args (valuemail_delivery, valuemail_run) appear as top-level fields of each event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from ..config import WebhookSettings
from .base import (DELIVERY_KEY, RUN_KEY, BounceKind, EventType, Parsed, WebhookDeps, WebhookEvent, WebhookMalformed,
                   WebhookNotConfigured, WebhookRefused, WebhookRequest, check_timestamp, load_json, parse_time, text)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: bounce events: a "bounce" is a permanent rejection, "blocked" a (possibly temporary) block.
BOUNCE_TYPES = {"bounce": BounceKind.hard, "blocked": BounceKind.soft}
#: dropped events SendGrid explains by an earlier bounce or spam report: the address is dead to us too.
DROPPED_HARD = ("bounced address", "spam reporting address")


class SendgridVerifier:
    """Verifies SendGrid event batches."""

    name = "sendgrid"

    def __init__(self, *, public_key: ec.EllipticCurvePublicKey, tolerance: int):
        self.public_key = public_key
        self.tolerance = tolerance

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify the batch's signature and timestamp; return its events."""
        signature, stamp = request.header(SIGNATURE_HEADER), request.header(TIMESTAMP_HEADER)
        if not signature or not stamp:
            raise WebhookRefused(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}", status=401)
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRefused("the signature is not base64") from None
        try:
            self.public_key.verify(der, stamp.encode("utf-8") + request.body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise WebhookRefused("the SendGrid signature does not verify") from None
        check_timestamp(stamp, now=request.now, tolerance=self.tolerance, what=TIMESTAMP_HEADER)
        batch = load_json(request.body)
        if not isinstance(batch, list) or not all(isinstance(item, dict) for item in batch):
            raise WebhookMalformed("the body must be a JSON list of event objects")
        events, ignored = [], 0
        for item in batch:
            event = _event(item)
            if event is None:
                ignored += 1
            else:
                events.append(event)
        return Parsed(events=tuple(events), ignored=ignored)


def _event(item: dict) -> WebhookEvent | None:
    name, reason = text(item.get("event")), text(item.get("reason"))
    # Every SendGrid event carries sg_event_id; a digest of the event stands in should one not.
    key = text(item.get("sg_event_id")) or "sha256:" + hashlib.sha256(
        json.dumps(item, sort_keys=True).encode("utf-8")).hexdigest()
    common = dict(key=key, recipient=text(item.get("email")), occurred_at=parse_time(item.get("timestamp")),
                  delivery_id=text(item.get(DELIVERY_KEY)), run_id=text(item.get(RUN_KEY)),
                  provider_message_ids=_message_id_prefixes(text(item.get("sg_message_id"))),
                  message_id=text(item.get("smtp-id")))
    if name == "delivered":
        return WebhookEvent(type=EventType.delivered, diagnostic=text(item.get("response")), **common)
    if name == "spamreport":
        return WebhookEvent(type=EventType.complained, diagnostic="spam report", **common)
    if name == "bounce":
        kind = BOUNCE_TYPES.get(text(item.get("type")) or "bounce")
        if kind is None:
            return None
        return WebhookEvent(type=EventType.bounced, kind=kind, code=text(item.get("status")), diagnostic=reason,
                            **common)
    if name == "dropped" and reason.lower() in DROPPED_HARD:
        return WebhookEvent(type=EventType.bounced, kind=BounceKind.hard, diagnostic=f"dropped: {reason}", **common)
    return None  # processed, deferred, other drops, opens and clicks: not ours to act on


def _message_id_prefixes(sg_message_id: str) -> tuple[str, ...]:
    # sg_message_id is the X-Message-Id we stored when sending, followed by ".filter..." parts;
    # X-Message-Id itself may contain dots, so every dotted prefix is a candidate (one index probe).
    parts = sg_message_id.split(".")
    return tuple(".".join(parts[:n]) for n in range(1, len(parts) + 1)) if sg_message_id else ()


def load_public_key(raw: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's settings page (base64 DER), or a PEM block."""
    raw = raw.strip()
    try:
        key = load_pem_public_key(raw.encode()) if raw.startswith("-----BEGIN") else \
            load_der_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise WebhookNotConfigured("the SendGrid verification key is not a base64 DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise WebhookNotConfigured("the SendGrid verification key is not an ECDSA P-256 key")
    return key


def build(settings: WebhookSettings, *, deps: WebhookDeps) -> SendgridVerifier:
    """The SendGrid verifier, refusing everything while the verification key is not set."""
    name = settings.sendgrid.public_key_env
    raw = deps.secret(name, missing=f"the SendGrid verification key is not set: put it in ${name}")
    cached = deps.cache.get("sendgrid.key")
    if cached is None or cached[0] != raw:
        cached = (raw, load_public_key(raw))
        deps.cache["sendgrid.key"] = cached
    return SendgridVerifier(public_key=cached[1], tolerance=settings.tolerance_seconds)
