"""The `resend` provider: Resend's Email API (POST /emails), idempotent per message."""

from __future__ import annotations

import requests

from ..config import ResendSettings
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, mailbox, required_env, short, tag_value

#: Error names (422 and 400) that say this request cannot be sent as it is.
INVALID = {"validation_error", "missing_required_field", "invalid_parameter", "invalid_attachment",
           "invalid_idempotency_key", "invalid_idempotent_request"}


class ResendProvider(HttpProvider):
    """Sends through Resend with a Bearer API key; our Message-ID is the Idempotency-Key."""

    name = "resend"

    def __init__(self, options: HttpOptions, *, api_key: str, token_env: str = "RESEND_API_KEY", **kwargs):
        super().__init__(options, **kwargs)
        self.api_key = api_key
        self.credentials = token_env

    @classmethod
    def from_settings(cls, settings: ResendSettings, *, context: ProviderContext) -> "ResendProvider":
        """Build from `[provider.resend]`; the API key comes from the environment variable it names."""
        key = required_env(context.env, settings.token_env, provider=cls.name, what="Resend API key")
        return cls(HttpOptions(settings.base_url, settings.connect_timeout, settings.read_timeout), api_key=key,
                   token_env=settings.token_env)

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        payload: dict = {
            "from": mailbox(message.from_name, message.from_email or message.envelope_from),
            "to": [message.recipient],
            "subject": message.subject,
        }
        if message.html:
            payload["html"] = message.html
        if message.text:
            payload["text"] = message.text
        if message.reply_to:
            payload["reply_to"] = message.reply_to
        if message.headers:
            payload["headers"] = dict(message.headers)
        tags = [{"name": tag_value(key), "value": tag_value(value)} for key, value in message.metadata]
        if message.tag:
            tags.append({"name": "campaign", "value": tag_value(message.tag)})
        if tags:
            payload["tags"] = tags
        return requests.Request("POST", self.url("/emails"), json=payload, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json",
            # Resend sends a request with a key it saw in the last 24 hours only once.
            "Idempotency-Key": message.message_id[:256]})

    def interpret(self, response: requests.Response) -> SendResult | None:
        body = body_json(response)
        status = response.status_code
        if status == 200 and body.get("id"):
            return SendResult.ok(str(body["id"]))
        name = body.get("name")
        text = short(f"resend HTTP {status}: {self.error_text(response)}")
        if status in (400, 422) and name in INVALID:
            return SendResult.permanent(text, code=status)
        if status == 403 and name in ("validation_error", "invalid_from_address"):
            # Our domain is not verified (or a test key may only mail its owner): an account setup
            # problem, not this recipient's, and not the API key's.
            return SendResult.temporary(text, code=status, unavailable=True)
        if status == 409 and name == "concurrent_idempotent_requests":
            # The same message is being sent by another request right now: look again shortly.
            return SendResult.temporary(text, code=status, retry_after=self.retry_after(response) or 1.0)
        if status == 409:
            return SendResult.permanent(text, code=status)
        return None

    def error_text(self, response: requests.Response) -> str:
        body = body_json(response)
        if body.get("name") or body.get("message"):
            return f"{body.get('name', '')}: {body.get('message', '')}"
        return response.text or response.reason or ""
