"""Verified bounce and complaint webhooks, one module per provider; `bounces` applies the policy."""

from __future__ import annotations

from typing import Callable

from ..config import WebhookSettings
from . import mailgun, postmark, resend, sendgrid, ses
from .base import Verifier, WebhookDeps

#: The providers whose webhooks we accept, by the name in the URL (/webhooks/<name>).
BUILDERS: dict[str, Callable[..., Verifier]] = {
    "ses": ses.build,
    "sendgrid": sendgrid.build,
    "mailgun": mailgun.build,
    "postmark": postmark.build,
    "resend": resend.build,
}


def verifier(name: str, settings: WebhookSettings, *, deps: WebhookDeps) -> Verifier:
    """The verifier of provider `name` (KeyError when unknown); WebhookNotConfigured without its secret."""
    return BUILDERS[name](settings, deps=deps)
