"""Resend (Svix): HMAC-SHA256 over "id.timestamp.body" with the whsec_ key, tolerance, id + timestamp as nonce."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from engine.webhooks.base import BounceKind, EventType, WebhookNotConfigured, WebhookRefused

from .signing import T0, resend_event, svix_headers


def signed(event, **kw):
    body = json.dumps(event).encode()
    return body, svix_headers(body, **kw)


def test_a_permanent_bounce_is_hard(verify):
    body, headers = signed(resend_event("email.bounced", "alice@example.com", delivery_id=12, run_id=5),
                           msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    parsed = verify("resend", body, headers)
    [event] = parsed.events
    assert event.type is EventType.bounced and event.kind is BounceKind.hard
    assert (event.recipient, event.delivery_id, event.run_id) == ("alice@example.com", "12", "5")
    assert event.key == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W" and "suppression list" in event.diagnostic
    assert event.provider_message_ids == ("56761188-7520-42d8-8898-ff6fc54ce618",)
    assert parsed.nonces == (f"svix:msg_2KWPBgLlAfxdpx2AI54pPJ85f4W:{int(T0.timestamp())}",)


def test_other_bounces_are_soft_and_complaints_and_deliveries_map(verify):
    assert verify("resend", *signed(resend_event("email.bounced", "a@example.com", bounce_type="Transient"))
                  ).events[0].kind is BounceKind.soft
    assert verify("resend", *signed(resend_event("email.complained", "a@example.com"))).events[0].type \
        is EventType.complained
    assert verify("resend", *signed(resend_event("email.delivered", "a@example.com"))).events[0].type \
        is EventType.delivered
    opened = verify("resend", *signed(resend_event("email.opened", "a@example.com")))
    assert opened.events == () and opened.ignored == 1


def test_tags_as_a_list_of_name_value_pairs(verify):
    event = resend_event("email.complained", "a@example.com")
    event["data"]["tags"] = [{"name": "valuemail_delivery", "value": "8"}]
    assert verify("resend", *signed(event)).events[0].delivery_id == "8"


def test_any_of_several_signatures_may_match(verify):
    body, headers = signed(resend_event("email.delivered", "a@example.com"))
    headers["svix-signature"] = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + headers["svix-signature"]
    assert verify("resend", body, headers).events


def test_forged_wrong_secret_and_tampered_bodies_are_refused(verify):
    body, headers = signed(resend_event("email.bounced", "a@example.com"))
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("resend", body.replace(b"a@example.com", b"b@example.com"), headers)
    other = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-byt").decode()
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("resend", *signed(resend_event("email.bounced", "a@example.com"), secret=other))
    headers["svix-signature"] = "v2," + headers["svix-signature"][3:]
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("resend", body, headers)


@pytest.mark.parametrize("offset, accepted", [(-250, True), (-301, False), (400, False)])
def test_timestamp_tolerance(verify, offset, accepted):
    body, headers = signed(resend_event("email.delivered", "a@example.com"), at=T0 + timedelta(seconds=offset))
    if accepted:
        assert verify("resend", body, headers).events
    else:
        with pytest.raises(WebhookRefused, match="tolerance"):
            verify("resend", body, headers)


def test_missing_headers_are_401(verify):
    body, headers = signed(resend_event("email.delivered", "a@example.com"))
    del headers["svix-id"]
    with pytest.raises(WebhookRefused) as exc:
        verify("resend", body, headers)
    assert exc.value.status == 401


def test_not_configured_or_not_a_whsec_secret(verify, env):
    body, headers = signed(resend_event("email.delivered", "a@example.com"))
    env.pop("RESEND_WEBHOOK_SECRET")
    with pytest.raises(WebhookNotConfigured, match="RESEND_WEBHOOK_SECRET"):
        verify("resend", body, headers)
    env["RESEND_WEBHOOK_SECRET"] = "whsec_***"
    with pytest.raises(WebhookNotConfigured, match="whsec_"):
        verify("resend", body, headers)
