"""The `postmark` provider: Postmark's Email API (POST /email, and POST /email/batch for many)."""

from __future__ import annotations

from typing import Sequence

import requests

from ..config import PostmarkSettings
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, http_options, mailbox, required_env, short

#: 422 ErrorCodes about this recipient: 300 invalid email request, 406 inactive recipient (bounced,
#: complained or suppressed at Postmark).
RECIPIENT_CODES = {300, 406}
#: 422 ErrorCodes about our account, not the message: sender signature missing or unconfirmed, not
#: allowed to send (no credits), account pending, account may not send. Another provider may take it.
ACCOUNT_CODES = {400, 401, 405, 412, 413}


class PostmarkProvider(HttpProvider):
    """Sends through Postmark with the Server API token; Postmark's tracking off (we track ourselves)."""

    name = "postmark"
    batch_size = 500  # /email/batch takes at most 500 messages (and 50 MB) per request

    def __init__(self, options: HttpOptions, *, token: str, token_env: str = "POSTMARK_TOKEN",
                 message_stream: str = "broadcast", **kwargs):
        super().__init__(options, **kwargs)
        self.token = token
        self.credentials = token_env
        self.message_stream = message_stream

    @classmethod
    def from_settings(cls, settings: PostmarkSettings, *, context: ProviderContext) -> "PostmarkProvider":
        """Build from `[provider.postmark]`; the token comes from the environment variable it names."""
        token = required_env(context.env, settings.token_env, provider=cls.name, what="Postmark Server API token")
        return cls(http_options(settings, context), token=token, token_env=settings.token_env,
                   message_stream=settings.message_stream)

    def payload(self, message: OutgoingMessage) -> dict:
        """One message as Postmark's JSON: the /email body, and one entry of a /email/batch array."""
        payload: dict = {
            "From": mailbox(message.from_name, message.from_email or message.envelope_from),
            "To": mailbox(message.to_name, message.recipient),
            "Subject": message.subject,
            "Headers": [{"Name": name, "Value": value} for name, value in message.headers],
            "Metadata": dict(message.metadata),
            "MessageStream": self.message_stream,
            "TrackOpens": False,
            "TrackLinks": "None",
        }
        if message.html:
            payload["HtmlBody"] = message.html
        if message.text:
            payload["TextBody"] = message.text
        if message.reply_to:
            payload["ReplyTo"] = message.reply_to
        if message.tag:
            payload["Tag"] = message.tag
        return payload

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        return self._post("/email", self.payload(message))

    def build_batch_request(self, messages: Sequence[OutgoingMessage]) -> requests.Request:
        return self._post("/email/batch", [self.payload(m) for m in messages])

    def _post(self, path: str, body) -> requests.Request:
        return requests.Request("POST", self.url(path), json=body, headers={
            "Accept": "application/json", "Content-Type": "application/json", "X-Postmark-Server-Token": self.token})

    def interpret(self, response: requests.Response) -> SendResult | None:
        body = body_json(response)
        code = body.get("ErrorCode")
        if response.status_code == 200 and code == 0 and body.get("MessageID"):
            return SendResult.ok(str(body["MessageID"]))
        if response.status_code != 422 or not isinstance(code, int):
            return None
        return _refused(body)

    def batch_results(self, response: requests.Response, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if response.status_code != 200:
            return super().batch_results(response, messages)  # the whole request failed: 401, 422, 429, 5xx...
        # A 200 answers with one entry per message, in order; each entry reads like a single answer.
        try:
            entries = response.json()
        except ValueError:
            entries = None
        if not isinstance(entries, list) or len(entries) != len(messages) or not all(
                isinstance(e, dict) and isinstance(e.get("ErrorCode"), int) for e in entries):
            # Accepted, but we cannot tell which messages: maybe delivered, so never resent.
            return [SendResult.uncertain(short(f"postmark HTTP 200 without one result per message: "
                                               f"{response.text[:200]}"))] * len(messages)
        return [SendResult.ok(str(e["MessageID"]) if e.get("MessageID") else None) if e["ErrorCode"] == 0
                else _refused(e) for e in entries]

    def error_text(self, response: requests.Response) -> str:
        body = body_json(response)
        if "ErrorCode" in body:
            return f"ErrorCode {body['ErrorCode']}: {body.get('Message', '')}"
        return response.text or response.reason or ""


def _refused(answer: dict) -> SendResult:
    """Postmark's ErrorCode (a 422, or one entry of a batch answer) as our result."""
    code = answer["ErrorCode"]
    text = short(f"postmark ErrorCode {code}: {answer.get('Message', '')}")
    if code in ACCOUNT_CODES:
        return SendResult.temporary(text, code=422, unavailable=True)
    # 300, 406 (this recipient) and the request-format codes (402 invalid JSON, 403 incompatible
    # JSON, 409, 410, 411...): sending the same message again cannot succeed.
    return SendResult.permanent(text, code=422)
