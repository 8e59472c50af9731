"""The stubs themselves: the SigV4 verifier (AWS's published example, tampering), batch checks, the in-flight gate."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import requests

from engine.providers import Outcome
from tests.providers.http_support import HEADERS, message, messages, provider
from tests.providers.stubs import APIS, Expect, SendgridApi, SesApi, Seen, Stub, verify_sigv4

# The "get-vanilla" case of AWS's Signature Version 4 test suite.
VANILLA = Seen("GET", "/", "", {
    "host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                     "SignedHeaders=host;x-amz-date, "
                     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"}, b"")
VANILLA_KEYS = {"access_key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "region": "us-east-1", "service": "service", "now": datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)}


def test_the_verifier_reproduces_aws_published_example():
    assert verify_sigv4(VANILLA, **VANILLA_KEYS) == []


def test_the_verifier_refuses_tampering_and_stale_requests():
    assert verify_sigv4(replace(VANILLA, body=b"x"), **VANILLA_KEYS) == ["signature does not match"]
    assert verify_sigv4(replace(VANILLA, path="/other"), **VANILLA_KEYS) == ["signature does not match"]
    assert verify_sigv4(VANILLA, **{**VANILLA_KEYS, "secret": "wrong"}) == ["signature does not match"]
    moved = replace(VANILLA, headers={**VANILLA.headers, "host": "evil.example.com"})
    assert verify_sigv4(moved, **VANILLA_KEYS) == ["signature does not match"]
    late = {**VANILLA_KEYS, "now": datetime(2015, 8, 30, 12, 42, tzinfo=timezone.utc)}
    assert verify_sigv4(VANILLA, **late) == ["X-Amz-Date 20150830T123600Z is more than 5 minutes off"]


def test_a_request_signed_by_the_ses_provider_verifies_only_unaltered():
    with Stub(SesApi(Expect(headers=dict(HEADERS)))) as stub:
        assert provider("ses", stub.url).send(message()).outcome is Outcome.sent
    seen = stub.seen[0]
    keys = {"access_key": "test-token", "secret": "test-secret", "region": "eu-west-1", "service": "ses"}
    assert verify_sigv4(seen, **keys) == []
    assert verify_sigv4(replace(seen, body=seen.body.replace(b"ann@example.net", b"bob@example.net")), **keys) == [
        "signature does not match"]
    assert verify_sigv4(seen, **{**keys, "secret": "other"}) == ["signature does not match"]


@pytest.mark.parametrize("name, problem", [("postmark", "[1] Headers: List-Unsubscribe missing"),
                                           ("resend", "[1] headers: List-Unsubscribe missing")])
def test_batch_checks_name_the_entry_that_is_wrong(name, problem):
    sent = messages(3)
    sent[1] = replace(sent[1], headers=())
    with Stub(APIS[name](Expect(headers=dict(HEADERS)))) as stub:
        results = provider(name, stub.url).send_batch(sent)
    assert problem in stub.problems and all(r.outcome is Outcome.permanent for r in results)


def test_the_resend_batch_stub_refuses_what_the_batch_endpoint_does_not_take():
    entry = {"from": "news@example.com", "to": ["ann@example.net"], "subject": "s", "text": "t",
             "headers": dict(HEADERS), "tags": [{"name": "valuemail_delivery", "value": "1"},
                                                {"name": "valuemail_run", "value": "2"}],
             "scheduled_at": "in 1 hour", "attachments": []}
    with Stub(APIS["resend"](Expect(headers=dict(HEADERS)))) as stub:
        answer = requests.post(f"{stub.url}/emails/batch", json=[entry], timeout=5, headers={
            "Authorization": "Bearer test-token", "Idempotency-Key": "k", "x-batch-validation": "permissive"})
    assert answer.status_code == 400
    assert stub.problems == ["[0]: undocumented field 'scheduled_at'", "[0]: undocumented field 'attachments'"]


def test_the_stub_holds_answers_until_enough_requests_wait_and_counts_them():
    answered = []
    with Stub(SendgridApi(Expect(headers=dict(HEADERS))), hold_until=3) as stub:
        def post(i):
            to = {"email": f"u{i}@example.net"}
            body = {"personalizations": [{"to": [to], "custom_args": {"valuemail_delivery": "1", "valuemail_run": "2"}}],
                    "from": {"email": "news@example.com"}, "subject": "s", "content": [{"type": "text/plain", "value": "t"}],
                    "headers": dict(HEADERS), "tracking_settings": {"click_tracking": {"enable": False},
                                                                     "open_tracking": {"enable": False}}}
            answered.append(requests.post(f"{stub.url}/v3/mail/send", json=body, timeout=15,
                                          headers={"Authorization": "Bearer test-token"}).status_code)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stub.in_flight == 0
        post(3)  # once open, the gate stays open
    assert stub.problems == [] and answered == [202] * 4 and stub.max_in_flight == 3
