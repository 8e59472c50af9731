"""SNS verification (signature versions 1 and 2, certificate URL, topic allowlist) and SES event parsing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.config import WebhookSettings
from engine.webhooks.base import BounceKind, EventType, WebhookMalformed, WebhookNotConfigured, WebhookRefused

from .signing import (CERT_URL, REGION, T0, SnsSigner, rsa_certificate, ses_bounce, ses_complaint,
                      ses_delivery, sns_headers)


def post(verify, message, **kw):
    return verify("ses", json.dumps(message).encode(), sns_headers(message), **kw)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_bounce_notification_becomes_one_hard_bounce(verify, sns, http, version):
    message = sns.notification(ses_bounce("alice@example.com", delivery_id=7, run_id=3), version=version)
    parsed = post(verify, message)
    [event] = parsed.events
    assert event.type is EventType.bounced and event.kind is BounceKind.hard
    assert (event.recipient, event.delivery_id, event.run_id) == ("alice@example.com", "7", "3")
    assert event.code == "5.1.1" and event.diagnostic == "smtp; 550 5.1.1 user unknown"
    assert event.occurred_at == T0
    assert event.provider_message_ids == ("EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",)
    assert http.calls == [CERT_URL]


def test_the_certificate_is_fetched_once_and_cached(verify, sns, http):
    for _ in range(3):
        post(verify, sns.notification(ses_bounce("alice@example.com")))
    assert http.calls == [CERT_URL]


def test_a_subject_is_part_of_the_signed_string(verify, sns):
    message = sns.notification(ses_bounce("alice@example.com"), Subject="Amazon SES Email Event Notification")
    assert len(post(verify, message).events) == 1
    message["Subject"] = "Something else"
    with pytest.raises(WebhookRefused, match="does not verify"):
        post(verify, message)


@pytest.mark.parametrize("bounce_type, kind", [("Permanent", BounceKind.hard), ("Transient", BounceKind.soft),
                                               ("Undetermined", BounceKind.soft)])
def test_bounce_types(verify, sns, bounce_type, kind):
    message = sns.notification(ses_bounce("alice@example.com", bounce_type=bounce_type, sub_type="General"))
    assert post(verify, message).events[0].kind is kind


def test_ses_notifications_without_tags_carry_the_ses_message_id(verify, sns):
    body = ses_bounce("alice@example.com", event_publishing=False, message_id="0102017f-ses-id")
    [event] = post(verify, sns.notification(body)).events
    assert event.delivery_id == "" and event.provider_message_ids == ("0102017f-ses-id",)
    assert event.message_id == "0102017f-ses-id"


def test_one_event_per_bounced_recipient(verify, sns):
    body = ses_bounce("a@example.com")
    body["bounce"]["bouncedRecipients"].append({"emailAddress": "b@example.com", "status": "5.1.1",
                                                "action": "failed", "diagnosticCode": "smtp; 550 no such user"})
    events = post(verify, sns.notification(body)).events
    assert [e.recipient for e in events] == ["a@example.com", "b@example.com"]
    assert len({e.key for e in events}) == 2


def test_complaints_and_deliveries(verify, sns):
    [complaint] = post(verify, sns.notification(ses_complaint("alice@example.com", delivery_id=4))).events
    assert complaint.type is EventType.complained and complaint.diagnostic == "abuse"
    [delivered] = post(verify, sns.notification(ses_delivery("alice@example.com", delivery_id=4))).events
    assert delivered.type is EventType.delivered and delivered.delivery_id == "4"


def test_other_ses_events_are_ignored(verify, sns):
    parsed = post(verify, sns.notification({"eventType": "Open", "mail": {}, "open": {}}))
    assert parsed.events == () and parsed.ignored == 1


def test_a_changed_message_is_refused(verify, sns):
    message = sns.notification(ses_bounce("alice@example.com"))
    message["Message"] = json.dumps(ses_bounce("bob@example.com"))
    with pytest.raises(WebhookRefused, match="does not verify"):
        post(verify, message)


def test_a_signature_by_another_key_is_refused(verify, sns):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = SnsSigner(other).notification(ses_bounce("alice@example.com"))
    with pytest.raises(WebhookRefused, match="does not verify"):
        post(verify, message)


def test_a_v1_signature_claimed_as_v2_is_refused(verify, sns):
    message = sns.notification(ses_bounce("alice@example.com"), version="1")
    message["SignatureVersion"] = "2"
    with pytest.raises(WebhookRefused):
        post(verify, message)


def test_an_unknown_signature_version_is_refused(verify, sns):
    message = sns.notification(ses_bounce("alice@example.com"))
    message["SignatureVersion"] = "3"
    with pytest.raises(WebhookRefused, match="SignatureVersion"):
        post(verify, message)


def test_a_topic_not_allowed_is_refused_before_any_fetch(verify, sns, http):
    message = sns.notification(ses_bounce("alice@example.com"), topic=f"arn:aws:sns:{REGION}:999999999999:other")
    with pytest.raises(WebhookRefused, match="not in \\[webhooks.ses\\] topics"):
        post(verify, message)
    assert http.calls == []


@pytest.mark.parametrize("url", [
    f"http://sns.{REGION}.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem",
    "https://evil.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://s3.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
    "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.txt",
    "https://sns.eu-west-1.amazonaws.com/other/path/cert.pem/..",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
    "not a url",
])
def test_certificate_urls_off_the_sns_hosts_are_refused_without_fetching(verify, sns, http, url):
    message = sns.notification(ses_bounce("alice@example.com"), SigningCertURL=url)
    with pytest.raises(WebhookRefused, match="SigningCertURL"):
        post(verify, message)
    assert http.calls == []


def test_china_regions_are_sns_hosts_too(verify, sns_key, http, sns_pem):
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242342098.pem"
    http.pages[url] = sns_pem
    message = SnsSigner(sns_key, cert_url=url).notification(ses_bounce("alice@example.com"))
    assert len(post(verify, message).events) == 1
    assert http.calls == [url]


def test_an_expired_certificate_is_refused(verify, sns_key, http):
    url = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-expired.pem"
    http.pages[url] = rsa_certificate(sns_key, not_before=T0 - timedelta(days=400), not_after=T0 - timedelta(days=1))[1]
    message = SnsSigner(sns_key, cert_url=url).notification(ses_bounce("alice@example.com"))
    with pytest.raises(WebhookRefused, match="not valid now"):
        post(verify, message)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_valid_subscription_confirmation_gets_the_subscribe_url_once(verify, sns, http, version):
    message = sns.subscription(version=version)
    http.pages[message["SubscribeURL"]] = b"<ConfirmSubscriptionResponse/>"
    parsed = post(verify, message)
    assert parsed.events == () and "confirmed" in parsed.note
    assert http.calls == [CERT_URL, message["SubscribeURL"]]


def test_a_forged_subscription_confirmation_is_never_confirmed(verify, sns, http):
    message = sns.subscription()
    message["SubscribeURL"] = message["SubscribeURL"].replace("Token=", "Token=forged")
    with pytest.raises(WebhookRefused):
        post(verify, message)
    assert message["SubscribeURL"] not in http.calls and len(http.calls) <= 1


def test_a_signed_subscription_to_a_foreign_url_is_not_followed(verify, sns, http):
    message = sns.subscription(subscribe_url="https://attacker.example/?Action=ConfirmSubscription")
    with pytest.raises(WebhookRefused, match="SubscribeURL"):
        post(verify, message)
    assert http.calls == [CERT_URL]


def test_a_subscription_for_a_topic_not_allowed_is_not_confirmed(verify, sns, http):
    message = sns.subscription(topic=f"arn:aws:sns:{REGION}:999999999999:other")
    with pytest.raises(WebhookRefused):
        post(verify, message)
    assert http.calls == []


def test_malformed_bodies(verify, sns):
    with pytest.raises(WebhookMalformed, match="not valid JSON"):
        verify("ses", b"{not json", {})
    with pytest.raises(WebhookMalformed, match="JSON object"):
        verify("ses", b"[1, 2]", {})
    with pytest.raises(WebhookMalformed, match="Type"):
        verify("ses", b'{"Type": "Surprise"}', {})
    message = sns.notification({"eventType": "Bounce"})  # signed, but no bounce object
    with pytest.raises(WebhookMalformed, match="bounce"):
        post(verify, message)


def test_no_topics_means_not_configured(verify, sns):
    with pytest.raises(WebhookNotConfigured, match="topics"):
        post(verify, sns.notification(ses_bounce("a@example.com")), settings=WebhookSettings())


def test_the_message_type_header_must_match(verify, sns):
    message = sns.notification(ses_bounce("alice@example.com"))
    headers = dict(sns_headers(message), **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
    with pytest.raises(WebhookRefused, match="x-amz-sns-message-type"):
        verify("ses", json.dumps(message).encode(), headers)
