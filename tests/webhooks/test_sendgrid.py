"""SendGrid's Signed Event Webhook: ECDSA P-256 over timestamp + body, timestamp tolerance, event mapping."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engine.webhooks.base import BounceKind, EventType, WebhookNotConfigured, WebhookMalformed, WebhookRefused

from .signing import T0, SendgridSigner, sendgrid_event


def signed(signer, events, *, at=T0):
    body = json.dumps(events).encode()
    return body, signer.headers(body, at=at)


def test_a_signed_batch_maps_each_event(verify, sendgrid_signer):
    events = [
        sendgrid_event("processed", "a@example.com"),
        sendgrid_event("deferred", "a@example.com", response="400 try again later", attempt="5"),
        sendgrid_event("delivered", "a@example.com", delivery_id=5, run_id=2, response="250 OK"),
        sendgrid_event("bounce", "b@example.com", delivery_id=6, type="bounce", status="5.0.0",
                       reason="500 unknown recipient", bounce_classification="Invalid Address"),
        sendgrid_event("bounce", "c@example.com", type="blocked", status="4.0.0", reason="blocked by the receiver"),
        sendgrid_event("dropped", "d@example.com", reason="Bounced Address", status="5.0.0"),
        sendgrid_event("dropped", "e@example.com", reason="Spam Reporting Address", status="5.0.0"),
        sendgrid_event("dropped", "f@example.com", reason="Unsubscribed Address", status="5.0.0"),
        sendgrid_event("spamreport", "g@example.com"),
        sendgrid_event("open", "a@example.com", useragent="Mozilla/4.0", ip="255.255.255.255"),
    ]
    parsed = verify("sendgrid", *signed(sendgrid_signer, events))
    got = [(e.type, e.kind, e.recipient) for e in parsed.events]
    assert got == [(EventType.delivered, None, "a@example.com"), (EventType.bounced, BounceKind.hard, "b@example.com"),
                   (EventType.bounced, BounceKind.soft, "c@example.com"),
                   (EventType.bounced, BounceKind.hard, "d@example.com"),
                   (EventType.bounced, BounceKind.hard, "e@example.com"), (EventType.complained, None, "g@example.com")]
    assert parsed.ignored == 4  # processed, deferred, the unsubscribed drop, open
    delivered, bounce = parsed.events[:2]
    assert (delivered.delivery_id, delivered.run_id) == ("5", "2")
    assert bounce.key == events[3]["sg_event_id"] and bounce.code == "5.0.0"
    assert bounce.diagnostic == "500 unknown recipient"
    # sg_message_id is the X-Message-Id we stored plus filter parts: every dotted prefix is a candidate.
    assert "14c5d75ce93.dfd.64b469" in bounce.provider_message_ids
    assert bounce.occurred_at == T0


def test_a_changed_body_is_refused(verify, sendgrid_signer):
    body, headers = signed(sendgrid_signer, [sendgrid_event("bounce", "b@example.com", type="bounce")])
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("sendgrid", body.replace(b"b@example.com", b"x@example.com"), headers)


def test_a_signature_by_another_key_is_refused(verify):
    body, headers = signed(SendgridSigner(), [sendgrid_event("spamreport", "g@example.com")])
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("sendgrid", body, headers)


def test_the_timestamp_is_signed_too(verify, sendgrid_signer):
    body, headers = signed(sendgrid_signer, [sendgrid_event("spamreport", "g@example.com")])
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(T0.timestamp()) + 1)
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("sendgrid", body, headers)


@pytest.mark.parametrize("offset, accepted", [(-299, True), (299, True), (-301, False), (301, False)])
def test_timestamp_tolerance(verify, sendgrid_signer, offset, accepted):
    body, headers = signed(sendgrid_signer, [sendgrid_event("spamreport", "g@example.com")],
                           at=T0 + timedelta(seconds=offset))
    if accepted:
        assert len(verify("sendgrid", body, headers).events) == 1
    else:
        with pytest.raises(WebhookRefused, match="tolerance"):
            verify("sendgrid", body, headers)


def test_missing_headers_are_401(verify, sendgrid_signer):
    body, headers = signed(sendgrid_signer, [])
    del headers["X-Twilio-Email-Event-Webhook-Signature"]
    with pytest.raises(WebhookRefused) as exc:
        verify("sendgrid", body, headers)
    assert exc.value.status == 401


def test_a_verified_body_that_is_not_a_list_is_malformed(verify, sendgrid_signer):
    body = b'{"event": "bounce"}'
    with pytest.raises(WebhookMalformed, match="list"):
        verify("sendgrid", body, sendgrid_signer.headers(body))


def test_not_configured_and_bad_keys(verify, sendgrid_signer, env):
    body, headers = signed(sendgrid_signer, [])
    env.pop("SENDGRID_WEBHOOK_PUBLIC_KEY")
    with pytest.raises(WebhookNotConfigured, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        verify("sendgrid", body, headers)
    env["SENDGRID_WEBHOOK_PUBLIC_KEY"] = "not base64!"
    with pytest.raises(WebhookNotConfigured, match="base64 DER"):
        verify("sendgrid", body, headers)
