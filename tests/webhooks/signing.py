"""Test keys and request builders that sign exactly as each provider documents (written from the docs,
not from engine code), and payloads shaped like the providers' documented examples."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

T0 = datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc)
REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:ses-bounces"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"


def stamp(at: datetime = T0) -> str:
    return str(int(at.timestamp()))


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


# -- Amazon SNS ---------------------------------------------------------------------------------------

def rsa_certificate(key=None, *, not_before=T0 - timedelta(days=1), not_after=T0 + timedelta(days=365)):
    """A self-signed certificate like the one SNS serves, and its private key."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeHttp:
    """The injected HTTP getter: serves the given URLs and records every GET (nothing leaves the process)."""

    pages: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.pages:
            raise OSError(f"404 for {url}")
        return self.pages[url]


class SnsSigner:
    """Signs SNS messages as AWS documents: "Key\\nValue\\n" for the signed keys in byte order."""

    NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

    def __init__(self, key, cert_url: str = CERT_URL):
        self.key = key
        self.cert_url = cert_url

    def sign(self, message: dict, *, version: str = "1", key=None) -> dict:
        message = dict(message, SignatureVersion=version, SigningCertURL=message.get("SigningCertURL", self.cert_url))
        keys = self.NOTIFICATION_KEYS if message["Type"] == "Notification" else self.SUBSCRIPTION_KEYS
        canonical = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(canonical.encode("utf-8"), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message

    def notification(self, ses_event: dict, *, topic: str = TOPIC, version: str = "1", message_id: str | None = None,
                     **overrides) -> dict:
        message = {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic,
                   "Message": json.dumps(ses_event), "Timestamp": iso(T0),
                   "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:x",
                   **overrides}
        return self.sign(message, version=version)

    def subscription(self, *, topic: str = TOPIC, version: str = "1", subscribe_url: str | None = None,
                     kind: str = "SubscriptionConfirmation") -> dict:
        token = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736"
        url = subscribe_url or (f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}"
                                f"&Token={token}")
        message = {"Type": kind, "MessageId": str(uuid.uuid4()), "Token": token, "TopicArn": topic,
                   "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, "
                              "visit the SubscribeURL included in this message.",
                   "SubscribeURL": url, "Timestamp": iso(T0)}
        return self.sign(message, version=version)


def sns_headers(message: dict) -> dict:
    return {"x-amz-sns-message-type": message["Type"], "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": message["TopicArn"], "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent"}


def ses_bounce(recipient: str, *, delivery_id=None, run_id=None, bounce_type="Permanent", sub_type="General",
               at: datetime = T0, message_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
               feedback_id=None, event_publishing=True, status="5.1.1",
               diagnostic="smtp; 550 5.1.1 user unknown") -> dict:
    """An SES bounce as event publishing (eventType, mail.tags) or notifications (notificationType) sends it."""
    event = {
        "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type,
                   "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": status,
                                          "diagnosticCode": diagnostic}],
                   "timestamp": iso(at), "feedbackId": feedback_id or f"01000157c44f053b-{uuid.uuid4()}-000000",
                   "reportingMTA": "dsn; mta.example.com"},
        "mail": _ses_mail(recipient, delivery_id, run_id, message_id, event_publishing),
    }
    return {("eventType" if event_publishing else "notificationType"): "Bounce", **event}


def ses_complaint(recipient: str, *, delivery_id=None, run_id=None, at: datetime = T0,
                  message_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000") -> dict:
    return {"eventType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": recipient}], "timestamp": iso(at),
                          "feedbackId": f"01000157c44f053b-{uuid.uuid4()}-000000", "userAgent": "Mozilla/5.0",
                          "complaintFeedbackType": "abuse", "arrivalDate": iso(at)},
            "mail": _ses_mail(recipient, delivery_id, run_id, message_id, True)}


def ses_delivery(recipient: str, *, delivery_id=None, run_id=None, at: datetime = T0,
                 message_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000") -> dict:
    return {"eventType": "Delivery",
            "delivery": {"timestamp": iso(at), "processingTimeMillis": 546, "recipients": [recipient],
                         "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-70.smtp-out.amazonses.com"},
            "mail": _ses_mail(recipient, delivery_id, run_id, message_id, True)}


def _ses_mail(recipient, delivery_id, run_id, message_id, with_tags) -> dict:
    mail = {"timestamp": iso(T0 - timedelta(minutes=1)), "source": "Example Shop <news@example.com>",
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/news@example.com",
            "sendingAccountId": "123456789012", "messageId": message_id, "destination": [recipient],
            "headersTruncated": False,
            "commonHeaders": {"from": ["Example Shop <news@example.com>"], "to": [recipient],
                              "messageId": message_id, "subject": "Spring sale"}}
    if with_tags:
        tags = {"ses:configuration-set": ["valuemail"], "ses:source-ip": ["192.0.2.0"]}
        if delivery_id is not None:
            tags["valuemail_delivery"] = [str(delivery_id)]
        if run_id is not None:
            tags["valuemail_run"] = [str(run_id)]
        mail["tags"] = tags
    return mail


# -- SendGrid -----------------------------------------------------------------------------------------

class SendgridSigner:
    """A P-256 key like the one SendGrid signs with; `public_key` is what its settings page shows."""

    def __init__(self, key=None):
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, *, at: datetime = T0) -> dict:
        ts = stamp(at)
        signature = self.key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": ts, "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API"}


def sendgrid_event(event: str, email: str, *, delivery_id=None, run_id=None, at: datetime = T0,
                   sg_message_id="14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", **fields) -> dict:
    item = {"email": email, "timestamp": int(at.timestamp()), "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
            "event": event, "category": "cat facts", "sg_event_id": base64.b64encode(uuid.uuid4().bytes).decode(),
            "sg_message_id": sg_message_id, **fields}
    if delivery_id is not None:
        item["valuemail_delivery"] = str(delivery_id)
    if run_id is not None:
        item["valuemail_run"] = str(run_id)
    return item


# -- Mailgun ------------------------------------------------------------------------------------------

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def mailgun_body(event_data: dict, *, key: str = MAILGUN_KEY, at: datetime = T0, token: str | None = None) -> bytes:
    ts, token = stamp(at), token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": ts, "token": token, "signature": signature},
                       "event-data": event_data}).encode()


def mailgun_failed(recipient: str, *, delivery_id=None, run_id=None, severity="permanent", at: datetime = T0,
                   message_id="20130503182626.18666.16540@sandbox.mailgun.org") -> dict:
    data = {
        "event": "failed", "id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
        "timestamp": at.timestamp(), "log-level": "error", "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "envelope": {"sender": "bob@sandbox.mailgun.org", "transport": "smtp", "targets": recipient},
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        "delivery-status": {"attempt-no": 1, "message": "550 5.1.1 The email account that you tried to reach does not exist",
                            "code": 550 if severity == "permanent" else 452,
                            "description": "" if severity == "permanent" else "Mailbox full",
                            "session-seconds": 0.0},
        "message": {"headers": {"to": recipient, "message-id": message_id, "from": "Example Shop <news@example.com>",
                                "subject": "Spring sale"}, "attachments": [], "size": 111},
        "recipient": recipient, "recipient-domain": recipient.split("@")[-1],
        "storage": {"url": "https://se.api.mailgun.net/v3/domains/sandbox.mailgun.org/messages/message_key",
                    "key": "message_key"},
        "campaigns": [], "tags": ["spring-sale"], "user-variables": {},
    }
    _mailgun_vars(data, delivery_id, run_id)
    return data


def mailgun_event(event: str, recipient: str, *, delivery_id=None, run_id=None, at: datetime = T0) -> dict:
    data = {"event": event, "id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "timestamp": at.timestamp(), "log-level": "info" if event == "delivered" else "warn",
            "recipient": recipient, "recipient-domain": recipient.split("@")[-1],
            "message": {"headers": {"to": recipient, "message-id": "20130503182626.18666.16540@sandbox.mailgun.org",
                                    "from": "news@example.com", "subject": "Spring sale"}},
            "delivery-status": {"code": 250, "message": "OK", "description": ""}, "user-variables": {}}
    _mailgun_vars(data, delivery_id, run_id)
    return data


def _mailgun_vars(data, delivery_id, run_id):
    if delivery_id is not None:
        data["user-variables"]["valuemail_delivery"] = str(delivery_id)
    if run_id is not None:
        data["user-variables"]["valuemail_run"] = str(run_id)


# -- Postmark -----------------------------------------------------------------------------------------

POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "s3cret-Pässword"


def basic_auth(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json"}


def postmark_bounce(email: str, *, type_="HardBounce", type_code=1, delivery_id=None, run_id=None,
                    at: datetime = T0, message_id="883953f4-6105-42a2-a16a-77a8eac79483", bounce_id=None) -> dict:
    record = {"RecordType": "Bounce", "ID": bounce_id or uuid.uuid4().int % 10**15, "Type": type_,
              "TypeCode": type_code, "Name": "Hard bounce", "Tag": "spring-sale", "MessageID": message_id,
              "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, "
                                             "mailbox not found).",
              "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
              "Email": email, "From": "news@example.com", "BouncedAt": at.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
              "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Spring sale",
              "Content": "Return-Path: <>", "MessageStream": "broadcast", "Metadata": {}}
    _postmark_meta(record, delivery_id, run_id)
    return record


def postmark_spam_complaint(email: str, *, delivery_id=None, run_id=None, at: datetime = T0) -> dict:
    record = postmark_bounce(email, type_="SpamComplaint", type_code=512, delivery_id=delivery_id, run_id=run_id,
                             at=at)
    record.update(RecordType="SpamComplaint", Name="Spam complaint",
                  Description="The subscriber explicitly marked this message as spam.", Details="Test spam complaint details")
    return record


def postmark_delivery(email: str, *, delivery_id=None, run_id=None, at: datetime = T0) -> dict:
    record = {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "broadcast",
              "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": email, "Tag": "spring-sale",
              "DeliveredAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "Details": "Test delivery webhook details",
              "Metadata": {}}
    _postmark_meta(record, delivery_id, run_id)
    return record


def _postmark_meta(record, delivery_id, run_id):
    if delivery_id is not None:
        record["Metadata"]["valuemail_delivery"] = str(delivery_id)
    if run_id is not None:
        record["Metadata"]["valuemail_run"] = str(run_id)


# -- Resend (Svix) ------------------------------------------------------------------------------------

RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-test-signing-secret-32byt").decode()


def svix_headers(body: bytes, *, secret: str = RESEND_SECRET, msg_id: str | None = None, at: datetime = T0) -> dict:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
    ts = stamp(at)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return {"svix-id": msg_id, "svix-timestamp": ts, "svix-signature": f"v1,{signature}",
            "Content-Type": "application/json"}


def resend_event(kind: str, to: str, *, delivery_id=None, run_id=None, bounce_type="Permanent", at: datetime = T0,
                 email_id="56761188-7520-42d8-8898-ff6fc54ce618") -> dict:
    data = {"broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216", "created_at": at.isoformat(),
            "email_id": email_id, "from": "Example Shop <news@example.com>", "to": [to], "subject": "Spring sale",
            "tags": {"category": "spring-sale"}}
    if kind == "email.bounced":
        data["bounce"] = {"message": "The recipient's email address is on the suppression list because it has a "
                                     "recent history of producing hard bounces." if bounce_type == "Permanent"
                                     else "The recipient's mailbox is full.",
                          "subType": "Suppressed" if bounce_type == "Permanent" else "MailboxFull",
                          "type": bounce_type}
    if delivery_id is not None:
        data["tags"]["valuemail_delivery"] = str(delivery_id)
    if run_id is not None:
        data["tags"]["valuemail_run"] = str(run_id)
    return {"type": kind, "created_at": iso(at), "data": copy.deepcopy(data)}
