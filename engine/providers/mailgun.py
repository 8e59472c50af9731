"""The `mailgun` provider: Mailgun's Messages API (POST /v3/<domain>/messages)."""

from __future__ import annotations

import requests

from ..config import MailgunSettings
from ..errors import ProviderError
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, http_options, mailbox, required_env, short


class MailgunProvider(HttpProvider):
    """Sends through Mailgun with HTTP Basic auth (api:<key>); tracking off (we track ourselves)."""

    name = "mailgun"

    def __init__(self, options: HttpOptions, *, api_key: str, domain: str, token_env: str = "MAILGUN_API_KEY",
                 **kwargs):
        super().__init__(options, **kwargs)
        self.api_key = api_key
        self.domain = domain
        self.credentials = token_env

    @classmethod
    def from_settings(cls, settings: MailgunSettings, *, context: ProviderContext) -> "MailgunProvider":
        """Build from `[provider.mailgun]`; the API key comes from the environment variable it names."""
        if not settings.domain:
            raise ProviderError("[provider.mailgun] domain is not set (your Mailgun sending domain, e.g. mg.example.com)")
        key = required_env(context.env, settings.token_env, provider=cls.name, what="Mailgun API key")
        return cls(http_options(settings, context), api_key=key, domain=settings.domain, token_env=settings.token_env)

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        fields = [
            ("from", mailbox(message.from_name, message.from_email or message.envelope_from)),
            ("to", mailbox(message.to_name, message.recipient)),
            ("subject", message.subject),
        ]
        if message.text:
            fields.append(("text", message.text))
        if message.html:
            fields.append(("html", message.html))
        if message.reply_to:
            fields.append(("h:Reply-To", message.reply_to))
        fields += [(f"h:{name}", value) for name, value in message.headers]
        fields.append(("h:Message-Id", message.message_id))
        if message.tag:
            fields.append(("o:tag", message.tag))
        fields.append(("o:tracking", "no"))
        fields += [(f"v:{key}", value) for key, value in message.metadata]
        return requests.Request("POST", self.url(f"/v3/{self.domain}/messages"), data=fields,
                                auth=("api", self.api_key))

    def interpret(self, response: requests.Response) -> SendResult | None:
        body = body_json(response)
        if response.status_code == 200 and body.get("id"):
            # Mailgun answers "<id@domain>"; its events carry the id without the angle brackets.
            return SendResult.ok(str(body["id"]).strip("<>"))
        if response.status_code in (400, 413):
            # e.g. "'to' parameter is not a valid address": the same request fails the same way again.
            return SendResult.permanent(short(f"mailgun HTTP {response.status_code}: {self.error_text(response)}"),
                                        code=response.status_code)
        if response.status_code == 404:
            return SendResult.temporary(short(f"mailgun HTTP 404: {self.error_text(response)} (check domain "
                                              f"{self.domain!r} and base_url)"), code=404, unavailable=True)
        return None

    def error_text(self, response: requests.Response) -> str:
        message = body_json(response).get("message")
        return str(message) if message else (response.text or response.reason or "")
