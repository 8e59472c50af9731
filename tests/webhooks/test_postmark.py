"""Postmark: basic auth compared in constant time; bounce types classified per Postmark's list."""

from __future__ import annotations

import json

import pytest

from engine.webhooks.base import BounceKind, EventType, WebhookNotConfigured, WebhookRefused

from .signing import T0, basic_auth, postmark_bounce, postmark_delivery, postmark_spam_complaint


@pytest.mark.parametrize("type_, code, expected", [
    ("HardBounce", 1, (EventType.bounced, BounceKind.hard)),
    ("BadEmailAddress", 100000, (EventType.bounced, BounceKind.hard)),
    ("ManuallyDeactivated", 100002, (EventType.bounced, BounceKind.hard)),
    ("Transient", 2, (EventType.bounced, BounceKind.soft)),
    ("SoftBounce", 4096, (EventType.bounced, BounceKind.soft)),
    ("DnsError", 256, (EventType.bounced, BounceKind.soft)),
    ("SpamComplaint", 100001, (EventType.complained, None)),
    ("AutoResponder", 64, None),
    ("Unsubscribe", 16, None),
    ("AddressChange", 128, None),
])
def test_bounce_types(verify, type_, code, expected):
    record = postmark_bounce("alice@example.com", type_=type_, type_code=code, delivery_id=3, run_id=1,
                             bounce_id=4323372036854775807)
    parsed = verify("postmark", record, basic_auth())
    if expected is None:
        assert parsed.events == () and parsed.ignored == 1
        return
    [event] = parsed.events
    assert (event.type, event.kind) == expected
    assert (event.recipient, event.delivery_id, event.run_id) == ("alice@example.com", "3", "1")
    assert event.provider_message_ids == ("883953f4-6105-42a2-a16a-77a8eac79483",)
    assert event.occurred_at == T0 and event.key.endswith("4323372036854775807")


def test_a_hard_bounce_keeps_postmarks_details(verify):
    [event] = verify("postmark", postmark_bounce("alice@example.com"), basic_auth()).events
    assert event.diagnostic == "smtp;550 5.1.1 The email account that you tried to reach does not exist."
    assert event.code == "HardBounce (1)"


def test_spam_complaint_and_delivery_records(verify):
    [complaint] = verify("postmark", postmark_spam_complaint("bob@example.com", delivery_id=4), basic_auth()).events
    assert complaint.type is EventType.complained and complaint.delivery_id == "4"
    [delivered] = verify("postmark", postmark_delivery("bob@example.com", delivery_id=4), basic_auth()).events
    assert delivered.type is EventType.delivered and delivered.recipient == "bob@example.com"


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    (basic_auth(password="wrong"), 401),
    (basic_auth(user="someone"), 401),
    ({"Authorization": "Bearer abc"}, 401),
    ({"Authorization": "Basic !!!"}, 401),
])
def test_wrong_or_missing_credentials_are_refused(verify, headers, status):
    with pytest.raises(WebhookRefused) as exc:
        verify("postmark", json.dumps(postmark_bounce("a@example.com")).encode(), headers)
    assert exc.value.status == status


def test_not_configured(verify, env):
    env.pop("POSTMARK_WEBHOOK_PASSWORD")
    with pytest.raises(WebhookNotConfigured, match="POSTMARK_WEBHOOK_PASSWORD"):
        verify("postmark", postmark_bounce("a@example.com"), basic_auth())
