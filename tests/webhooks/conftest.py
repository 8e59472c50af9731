"""Verifiers built from settings, with the test keys in an injected environment and a fake HTTP getter."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.config import WebhookSettings
from engine.webhooks import verifier
from engine.webhooks.base import WebhookDeps, WebhookRequest

from .signing import (CERT_URL, MAILGUN_KEY, POSTMARK_PASSWORD, POSTMARK_USER, RESEND_SECRET, T0, TOPIC, FakeHttp,
                      SendgridSigner, SnsSigner, rsa_certificate)


@pytest.fixture(scope="session")
def sns_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def sns_pem(sns_key):
    return rsa_certificate(sns_key)[1]


@pytest.fixture(scope="session")
def sendgrid_signer():
    return SendgridSigner()


@pytest.fixture
def sns(sns_key):
    return SnsSigner(sns_key)


@pytest.fixture
def http(sns_pem):
    return FakeHttp({CERT_URL: sns_pem})


@pytest.fixture
def env(sendgrid_signer):
    return {"SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_signer.public_key, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
            "POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD, "RESEND_WEBHOOK_SECRET": RESEND_SECRET}


@pytest.fixture
def hook_settings():
    return WebhookSettings.model_validate({"ses": {"topics": [TOPIC]}, "postmark": {"username": POSTMARK_USER}})


@pytest.fixture
def verify(hook_settings, env, http):
    """verify(provider, body, headers, now=T0) -> Parsed, through the provider's verifier."""
    deps = WebhookDeps(http_get=http, env=env)

    def run(provider, body, headers, *, now=T0, settings=None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        request = WebhookRequest(body=body, headers={k.lower(): v for k, v in headers.items()}, now=now)
        return verifier(provider, settings or hook_settings, deps=deps).parse(request)

    return run

