"""Mailgun: HMAC-SHA256 of timestamp + token, timestamp tolerance, the token handed back as a nonce."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engine.webhooks.base import BounceKind, EventType, WebhookNotConfigured, WebhookRefused

from .signing import MAILGUN_KEY, T0, mailgun_body, mailgun_event, mailgun_failed

HEADERS = {"Content-Type": "application/json"}


def test_a_permanent_failure_is_a_hard_bounce(verify):
    data = mailgun_failed("alice@example.com", delivery_id=9, run_id=4)
    body = mailgun_body(data, token="a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0")
    parsed = verify("mailgun", body, HEADERS)
    [event] = parsed.events
    assert event.type is EventType.bounced and event.kind is BounceKind.hard
    assert (event.delivery_id, event.run_id, event.key) == ("9", "4", data["id"])
    assert event.code == "550" and "does not exist" in event.diagnostic
    assert event.provider_message_ids == ("<20130503182626.18666.16540@sandbox.mailgun.org>",
                                          "20130503182626.18666.16540@sandbox.mailgun.org")
    assert parsed.nonces == ("token:a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",)


def test_temporary_complained_delivered_and_others(verify):
    assert verify("mailgun", mailgun_body(mailgun_failed("a@example.com", severity="temporary")),
                  HEADERS).events[0].kind is BounceKind.soft
    assert verify("mailgun", mailgun_body(mailgun_event("complained", "a@example.com")),
                  HEADERS).events[0].type is EventType.complained
    assert verify("mailgun", mailgun_body(mailgun_event("delivered", "a@example.com")),
                  HEADERS).events[0].type is EventType.delivered
    opened = verify("mailgun", mailgun_body(mailgun_event("opened", "a@example.com")), HEADERS)
    assert opened.events == () and opened.ignored == 1


def test_a_forged_signature_is_refused(verify):
    body = json.loads(mailgun_body(mailgun_failed("a@example.com")))
    body["signature"]["signature"] = "0" * 64
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("mailgun", json.dumps(body).encode(), HEADERS)


def test_a_signature_with_another_key_is_refused(verify):
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("mailgun", mailgun_body(mailgun_failed("a@example.com"), key="key-someone-else"), HEADERS)


def test_the_token_is_signed(verify):
    body = json.loads(mailgun_body(mailgun_failed("a@example.com")))
    body["signature"]["token"] += "x"
    with pytest.raises(WebhookRefused, match="does not verify"):
        verify("mailgun", json.dumps(body).encode(), HEADERS)


@pytest.mark.parametrize("offset, accepted", [(-290, True), (-310, False), (310, False)])
def test_timestamp_tolerance(verify, offset, accepted):
    body = mailgun_body(mailgun_failed("a@example.com"), at=T0 + timedelta(seconds=offset))
    if accepted:
        assert verify("mailgun", body, HEADERS).events
    else:
        with pytest.raises(WebhookRefused, match="tolerance"):
            verify("mailgun", body, HEADERS)


def test_a_body_without_a_signature_is_401(verify):
    with pytest.raises(WebhookRefused) as exc:
        verify("mailgun", json.dumps({"event-data": mailgun_failed("a@example.com")}).encode(), HEADERS)
    assert exc.value.status == 401


def test_not_configured(verify, env):
    env.pop("MAILGUN_WEBHOOK_SIGNING_KEY")
    with pytest.raises(WebhookNotConfigured, match="MAILGUN_WEBHOOK_SIGNING_KEY"):
        verify("mailgun", mailgun_body(mailgun_failed("a@example.com"), key=MAILGUN_KEY), HEADERS)
