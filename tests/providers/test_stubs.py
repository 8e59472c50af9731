"""The stubs' own SigV4 verifier: it must accept AWS's published example and refuse any tampering."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from engine.providers import Outcome
from tests.providers.http_support import HEADERS, message, provider
from tests.providers.stubs import Expect, SesApi, Seen, Stub, verify_sigv4

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
