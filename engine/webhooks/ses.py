"""Amazon SES bounces and complaints, delivered by Amazon SNS over HTTPS.

SNS signs every message with the key of a certificate it serves from
https://sns.<region>.amazonaws.com/<name>.pem: signature version 1 is SHA1withRSA, version 2
SHA256withRSA, over the documented canonical string ("Key\\nValue\\n" for a fixed list of keys
in byte order). The certificate URL is checked before anything is fetched, and only topics in
`[webhooks.ses] topics` are accepted. A SubscriptionConfirmation is confirmed by GETting its
SubscribeURL, under the same host rules, and only once its signature is verified.
The notification may be SES event publishing (`eventType`) or SES notifications (`notificationType`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..config import WebhookSettings
from .base import (DELIVERY_KEY, RUN_KEY, BounceKind, EventType, HttpGet, Parsed, WebhookDeps, WebhookEvent,
                   WebhookMalformed, WebhookNotConfigured, WebhookRefused, WebhookRequest, WebhookUpstreamError,
                   first_text, load_json, parse_time, require_object, text)

log = logging.getLogger(__name__)

#: The hosts SNS serves certificates and subscription URLs from (AWS partitions incl. China).
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$")
#: A certificate path: one file name ending in .pem.
CERT_PATH = re.compile(r"^/[A-Za-z0-9._-]+\.pem$")
#: The keys each message type signs, in the documented (byte) order; Subject only when present.
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
#: SES bounce types; Undetermined (SES could not tell) counts as soft so a one-off never suppresses.
BOUNCE_KINDS = {"Permanent": BounceKind.hard, "Transient": BounceKind.soft, "Undetermined": BounceKind.soft}
MAX_CERTIFICATES = 32


class CertificateCache:
    """SNS signing certificates by URL, fetched once through the injected getter."""

    def __init__(self, http_get: HttpGet):
        self._get = http_get
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        """The certificate at `url` (already checked to be an SNS certificate URL)."""
        with self._lock:
            cert = self._certs.get(url)
        if cert is not None:
            return cert
        try:
            pem = self._get(url)
        except OSError as exc:
            raise WebhookUpstreamError(f"could not fetch the signing certificate {url}: {exc}") from None
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise WebhookRefused(f"{url} is not a PEM certificate") from None
        with self._lock:
            if len(self._certs) >= MAX_CERTIFICATES:
                self._certs.clear()
            self._certs[url] = cert
        return cert


class SesVerifier:
    """Verifies SNS messages carrying SES events."""

    name = "ses"

    def __init__(self, *, topics: tuple[str, ...], certificates: CertificateCache, http_get: HttpGet):
        self.topics = topics
        self.certificates = certificates
        self.http_get = http_get

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify an SNS message; confirm a subscription, or return the SES events of a notification."""
        message = require_object(load_json(request.body), "the SNS message")
        kind = text(message.get("Type"))
        if kind not in SIGNED_KEYS:
            raise WebhookMalformed(f"unknown SNS message Type {kind[:40]!r}")
        header_type = request.header("x-amz-sns-message-type")
        if header_type and header_type != kind:
            raise WebhookRefused(f"x-amz-sns-message-type {header_type[:40]!r} does not match Type {kind!r}")
        topic = text(message.get("TopicArn"))
        if topic not in self.topics:
            raise WebhookRefused(f"topic {topic[:200]!r} is not in [webhooks.ses] topics")
        self._verify(message, kind, request.now)
        if kind == "SubscriptionConfirmation":
            url = text(message.get("SubscribeURL"))
            check_sns_url(url, what="SubscribeURL")
            try:
                self.http_get(url)
            except OSError as exc:
                raise WebhookUpstreamError(f"confirming the subscription to {topic} failed: {exc}") from None
            log.info("confirmed the SNS subscription to %s", topic)
            return Parsed(note=f"subscription to {topic} confirmed")
        if kind == "UnsubscribeConfirmation":
            log.warning("SNS says this endpoint was unsubscribed from %s", topic)
            return Parsed(note=f"unsubscribed from {topic}")
        try:
            body = load_json(text(message.get("Message")).encode("utf-8"))
        except WebhookMalformed as exc:
            raise WebhookMalformed(f"the SNS Message: {exc}") from None
        return ses_events(require_object(body, "the SES notification"), sns_id=text(message.get("MessageId")))

    def _verify(self, message: dict, kind: str, now: datetime) -> None:
        version = text(message.get("SignatureVersion"))
        if version not in HASHES:
            raise WebhookRefused(f"unsupported SignatureVersion {version[:10]!r}")
        url = text(message.get("SigningCertURL"))
        check_sns_url(url, what="SigningCertURL", path=CERT_PATH)
        try:
            signature = base64.b64decode(text(message.get("Signature")), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRefused("Signature is not base64") from None
        cert = self.certificates.get(url)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise WebhookRefused(f"the signing certificate {url} is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the signing certificate does not hold an RSA key")
        try:
            key.verify(signature, canonical_string(message, kind), padding.PKCS1v15(), HASHES[version]())
        except InvalidSignature:
            raise WebhookRefused("the SNS signature does not verify") from None


def canonical_string(message: dict, kind: str) -> bytes:
    """The string SNS signs for a message of type `kind`."""
    parts = []
    for key in SIGNED_KEYS[kind]:
        if key == "Subject" and message.get(key) is None:
            continue
        if key not in message:
            raise WebhookRefused(f"the SNS message lacks {key}")
        parts.append(f"{key}\n{text(message[key])}\n")
    return "".join(parts).encode("utf-8")


def check_sns_url(url: str, *, what: str, path: re.Pattern | None = None) -> None:
    """Refuse a URL that is not https on an SNS host (and, for certificates, not a .pem file)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused(f"{what} is not a URL") from None
    if parts.scheme != "https":
        raise WebhookRefused(f"{what} must be https")
    if parts.username or parts.password or port not in (None, 443) or not SNS_HOST.match(parts.hostname or ""):
        raise WebhookRefused(f"{what} host {parts.hostname!r} is not sns.<region>.amazonaws.com")
    if path is not None and (not path.match(parts.path) or parts.query or parts.fragment):
        raise WebhookRefused(f"{what} path {parts.path!r} is not a .pem certificate")


def ses_events(body: dict, *, sns_id: str) -> Parsed:
    """Our events from one SES event-publishing record or SES notification."""
    kind = text(body.get("eventType") or body.get("notificationType"))
    mail = body.get("mail") if isinstance(body.get("mail"), dict) else {}
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    headers = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    common = dict(delivery_id=first_text(tags.get(DELIVERY_KEY)), run_id=first_text(tags.get(RUN_KEY)),
                  provider_message_ids=tuple(i for i in (text(mail.get("messageId")),) if i),
                  message_id=text(headers.get("messageId")))
    events: list[WebhookEvent] = []
    if kind == "Bounce":
        bounce = require_object(body.get("bounce"), "bounce")
        bounce_type = text(bounce.get("bounceType"))
        if bounce_type not in BOUNCE_KINDS:
            raise WebhookMalformed(f"unknown bounceType {bounce_type[:40]!r}")
        at = parse_time(bounce.get("timestamp"))
        feedback = text(bounce.get("feedbackId")) or sns_id
        for recipient in _list(bounce.get("bouncedRecipients"), "bouncedRecipients"):
            address = text(recipient.get("emailAddress"))
            diagnostic = text(recipient.get("diagnosticCode")) or \
                f"{bounce_type} {text(bounce.get('bounceSubType'))}".strip()
            events.append(WebhookEvent(key=f"bounce:{feedback}:{address.lower()}", type=EventType.bounced,
                                       recipient=address, occurred_at=at, kind=BOUNCE_KINDS[bounce_type],
                                       code=text(recipient.get("status")), diagnostic=diagnostic, **common))
    elif kind == "Complaint":
        complaint = require_object(body.get("complaint"), "complaint")
        at = parse_time(complaint.get("timestamp"))
        feedback = text(complaint.get("feedbackId")) or sns_id
        for recipient in _list(complaint.get("complainedRecipients"), "complainedRecipients"):
            address = text(recipient.get("emailAddress"))
            events.append(WebhookEvent(key=f"complaint:{feedback}:{address.lower()}", type=EventType.complained,
                                       recipient=address, occurred_at=at,
                                       diagnostic=text(complaint.get("complaintFeedbackType")), **common))
    elif kind == "Delivery":
        delivery = require_object(body.get("delivery"), "delivery")
        at = parse_time(delivery.get("timestamp"))
        recipients = delivery.get("recipients")
        if not isinstance(recipients, list):
            raise WebhookMalformed("delivery.recipients must be a list")
        for address in map(text, recipients):
            events.append(WebhookEvent(key=f"delivery:{sns_id}:{address.lower()}", type=EventType.delivered,
                                       recipient=address, occurred_at=at,
                                       diagnostic=text(delivery.get("smtpResponse")), **common))
    else:
        return Parsed(ignored=1)
    return Parsed(events=tuple(events))


def _list(value, what: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise WebhookMalformed(f"{what} must be a list of objects")
    return value


def build(settings: WebhookSettings, *, deps: WebhookDeps) -> SesVerifier:
    """The SES verifier, refusing everything while no topic is allowed."""
    topics = tuple(settings.ses.topics)
    if not topics:
        raise WebhookNotConfigured("no SNS topic is allowed: set [webhooks.ses] topics")
    certificates = deps.cache.setdefault("ses.certificates", CertificateCache(deps.http_get))
    return SesVerifier(topics=topics, certificates=certificates, http_get=deps.http_get)
