"""The `sendgrid` provider: Twilio SendGrid's v3 Mail Send API (POST /v3/mail/send)."""

from __future__ import annotations

import requests

from ..config import SendgridSettings
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, http_options, required_env, short

#: Headers SendGrid refuses in `headers` (it sets them itself, or they come from other fields).
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding",
                    "to", "from", "subject", "reply-to", "cc", "bcc"}


class SendgridProvider(HttpProvider):
    """Sends through SendGrid with a Bearer API key; click and open tracking off (we track ourselves)."""

    name = "sendgrid"

    def __init__(self, options: HttpOptions, *, api_key: str, token_env: str = "SENDGRID_API_KEY", **kwargs):
        super().__init__(options, **kwargs)
        self.api_key = api_key
        self.credentials = token_env

    @classmethod
    def from_settings(cls, settings: SendgridSettings, *, context: ProviderContext) -> "SendgridProvider":
        """Build from `[provider.sendgrid]`; the API key comes from the environment variable it names."""
        key = required_env(context.env, settings.token_env, provider=cls.name, what="SendGrid API key")
        return cls(http_options(settings, context), api_key=key, token_env=settings.token_env)

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        to = {"email": message.recipient}
        if message.to_name:
            to["name"] = message.to_name
        sender = {"email": message.from_email or message.envelope_from}
        if message.from_name:
            sender["name"] = message.from_name
        personalization: dict = {"to": [to]}
        if message.metadata:
            personalization["custom_args"] = dict(message.metadata)
        # text/plain must come first when both are given; SendGrid refuses empty values.
        content = [{"type": kind, "value": value}
                   for kind, value in (("text/plain", message.text), ("text/html", message.html)) if value]
        payload: dict = {
            "personalizations": [personalization],
            "from": sender,
            "subject": message.subject,
            "content": content,
            "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                                  "open_tracking": {"enable": False}},
        }
        headers = {name: value for name, value in message.headers if name.lower() not in RESERVED_HEADERS}
        if headers:
            payload["headers"] = headers
        if message.reply_to:
            payload["reply_to"] = {"email": message.reply_to}
        if message.tag:
            payload["categories"] = [message.tag]
        return requests.Request("POST", self.url("/v3/mail/send"), json=payload, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})

    def interpret(self, response: requests.Response) -> SendResult | None:
        if response.status_code == 202:
            return SendResult.ok(response.headers.get("X-Message-Id"))
        if response.status_code in (400, 413):
            # A 400 names what is wrong with this request (the recipient address, a field's value):
            # sending the same request again fails the same way.
            return SendResult.permanent(short(f"sendgrid HTTP {response.status_code}: {self.error_text(response)}"),
                                        code=response.status_code)
        return None

    def error_text(self, response: requests.Response) -> str:
        errors = body_json(response).get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors:
                if isinstance(error, dict):
                    field = error.get("field")
                    parts.append(f"{field}: {error.get('message', '')}" if field else str(error.get("message", "")))
            return "; ".join(parts)
        return response.text or response.reason or ""

    def retry_after(self, response: requests.Response) -> float | None:
        # SendGrid documents X-RateLimit-Reset (a Unix time) on 429 rather than Retry-After.
        given = super().retry_after(response)
        reset = response.headers.get("X-RateLimit-Reset", "")
        if given is None and reset.isdigit():
            return max(0.0, int(reset) - self._response_time(response).timestamp())
        return given
