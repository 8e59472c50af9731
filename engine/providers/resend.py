"""The `resend` provider: Resend's Email API (POST /emails, and POST /emails/batch for many), idempotent."""

from __future__ import annotations

import hashlib
from typing import Sequence

import requests

from ..config import ResendSettings
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, http_options, mailbox, required_env, short, tag_value

#: Error names (422 and 400) that say this request cannot be sent as it is.
INVALID = {"validation_error", "missing_required_field", "invalid_parameter", "invalid_attachment",
           "invalid_idempotency_key"}


class ResendProvider(HttpProvider):
    """Sends through Resend with a Bearer API key; every request carries an Idempotency-Key."""

    name = "resend"
    batch_size = 100  # /emails/batch takes at most 100 emails per request

    def __init__(self, options: HttpOptions, *, api_key: str, token_env: str = "RESEND_API_KEY", **kwargs):
        super().__init__(options, **kwargs)
        self.api_key = api_key
        self.credentials = token_env

    @classmethod
    def from_settings(cls, settings: ResendSettings, *, context: ProviderContext) -> "ResendProvider":
        """Build from `[provider.resend]`; the API key comes from the environment variable it names."""
        key = required_env(context.env, settings.token_env, provider=cls.name, what="Resend API key")
        return cls(http_options(settings, context), api_key=key, token_env=settings.token_env)

    @staticmethod
    def payload(message: OutgoingMessage) -> dict:
        """One email as Resend's JSON: the /emails body, and one entry of a /emails/batch array."""
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
        # The batch endpoint takes tags too (since September 2025); not attachments or scheduled_at,
        # which we never send.
        tags = [{"name": tag_value(key), "value": tag_value(value)} for key, value in message.metadata]
        if message.tag:
            tags.append({"name": "campaign", "value": tag_value(message.tag)})
        if tags:
            payload["tags"] = tags
        return payload

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        # Resend sends a request with a key it saw in the last 24 hours only once.
        return self._post("/emails", self.payload(message), {"Idempotency-Key": message.message_id[:256]})

    def build_batch_request(self, messages: Sequence[OutgoingMessage]) -> requests.Request:
        return self._post("/emails/batch", [self.payload(m) for m in messages], {
            "Idempotency-Key": batch_key(messages),
            # Permissive: an invalid email fails alone (listed in `errors`), the others are sent;
            # strict (the default) would refuse the whole batch for it.
            "x-batch-validation": "permissive"})

    def _post(self, path: str, body, headers: dict[str, str]) -> requests.Request:
        return requests.Request("POST", self.url(path), json=body, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json", **headers})

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
        if status == 409 and name == "invalid_idempotent_request":
            # Resend already took a request with this key (this message, or this very batch, sent
            # before a crash) and its content differs now: it may well have been delivered.
            return SendResult.uncertain(text, code=status)
        if status == 409:
            return SendResult.permanent(text, code=status)
        return None

    def batch_results(self, response: requests.Response, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if response.status_code != 200:
            return super().batch_results(response, messages)  # the whole request failed
        # Permissive mode: `errors` names the emails not created by their index in our array;
        # `data` holds the ids of the created ones, in the order we sent them.
        body = body_json(response)
        data, errors = body.get("data"), body.get("errors") or []
        failed: dict[int, str] = {}
        if isinstance(errors, list):
            for error in errors:
                if isinstance(error, dict) and isinstance(error.get("index"), int):
                    failed[error["index"]] = str(error.get("message", ""))
        if (not isinstance(data, list) or not isinstance(errors, list) or len(failed) != len(errors)
                or not all(0 <= i < len(messages) for i in failed) or len(data) != len(messages) - len(failed)):
            # Accepted, but we cannot tell which emails: maybe delivered, so never resent.
            return [SendResult.uncertain(short(f"resend HTTP 200 without one result per email: "
                                               f"{response.text[:200]}"))] * len(messages)
        ids = iter(data)
        results = []
        for index in range(len(messages)):
            if index in failed:
                results.append(SendResult.permanent(short(f"resend: validation_error: {failed[index]}")))
            else:
                entry = next(ids)
                results.append(SendResult.ok(str(entry["id"]) if isinstance(entry, dict) and entry.get("id")
                                             else None))
        return results

    def error_text(self, response: requests.Response) -> str:
        body = body_json(response)
        if body.get("name") or body.get("message"):
            return f"{body.get('name', '')}: {body.get('message', '')}"
        return response.text or response.reason or ""


def batch_key(messages: Sequence[OutgoingMessage]) -> str:
    """The Idempotency-Key of a batch: the same for exactly the same Message-IDs in the same order."""
    digest = hashlib.sha256("\n".join(m.message_id for m in messages).encode()).hexdigest()
    return f"valuemail-batch-{digest}"
