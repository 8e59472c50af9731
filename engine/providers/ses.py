"""The `ses` provider: Amazon SES v2 SendEmail (raw MIME), signed with AWS Signature Version 4."""

from __future__ import annotations

import base64
import json

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ..config import SesSettings
from .base import OutgoingMessage, ProviderContext, SendResult
from .http import HttpOptions, HttpProvider, body_json, http_options, required_env, short, tag_value

#: Throttling: the account's sending rate or an API quota.
THROTTLED = {"TooManyRequestsException", "LimitExceededException", "ThrottlingException"}
#: Our account or setup cannot send at all right now: another provider may take the message.
ACCOUNT = {"AccountSuspendedException", "SendingPausedException", "MailFromDomainNotVerifiedException",
           "NotFoundException"}
#: This message (its recipient or content) is refused: sending it again fails the same way.
REJECTED = {"MessageRejected", "BadRequestException"}


class SesProvider(HttpProvider):
    """Sends the full MIME message (every header as built) through SES v2; botocore signs the request."""

    name = "ses"
    sends_mime = True  # Content.Raw: the message exactly as we built it

    def __init__(self, options: HttpOptions, *, region: str, access_key: str, secret_key: str, session_token: str = "",
                 configuration_set: str = "", credentials_hint: str = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                 **kwargs):
        super().__init__(options, **kwargs)
        self.region = region
        self.configuration_set = configuration_set
        self.credentials = credentials_hint
        self._signer = SigV4Auth(Credentials(access_key, secret_key, session_token or None), "ses", region)

    @classmethod
    def from_settings(cls, settings: SesSettings, *, context: ProviderContext) -> "SesProvider":
        """Build from `[provider.ses]`; the credentials come from the environment variables it names."""
        access = required_env(context.env, settings.access_key_env, provider=cls.name, what="AWS access key id")
        secret = required_env(context.env, settings.secret_key_env, provider=cls.name, what="AWS secret access key")
        token = (required_env(context.env, settings.session_token_env, provider=cls.name, what="AWS session token")
                 if settings.session_token_env else "")
        base_url = settings.base_url or f"https://email.{settings.region}.amazonaws.com"
        return cls(http_options(settings, context, base_url=base_url), region=settings.region,
                   access_key=access, secret_key=secret, session_token=token,
                   configuration_set=settings.configuration_set,
                   credentials_hint=f"{settings.access_key_env}/{settings.secret_key_env}")

    def build_request(self, message: OutgoingMessage) -> requests.Request:
        payload: dict = {
            "FromEmailAddress": message.from_email or message.envelope_from,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(message.data).decode("ascii")}},
        }
        tags = [{"Name": tag_value(key), "Value": tag_value(value)} for key, value in message.metadata]
        if message.tag:
            tags.append({"Name": "campaign", "Value": tag_value(message.tag)})
        if tags:
            payload["EmailTags"] = tags
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(payload, separators=(",", ":")).encode()
        return requests.Request("POST", self.url("/v2/email/outbound-emails"), data=body,
                                headers={"Content-Type": "application/json"})

    def prepare(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        # Sign exactly the bytes, URL and headers that go out; requests adds only unsigned ones later.
        aws = AWSRequest(method=request.method, url=request.url, data=request.body,
                         headers={"Content-Type": request.headers["Content-Type"]})
        self._signer.add_auth(aws)
        for name, value in aws.headers.items():
            request.headers[name] = value
        return request

    def interpret(self, response: requests.Response) -> SendResult | None:
        status = response.status_code
        if status == 200:
            message_id = body_json(response).get("MessageId")
            return SendResult.ok(str(message_id)) if message_id else None
        kind = self.error_type(response)
        text = short(f"ses {kind or f'HTTP {status}'}: {self.error_message(response)}")
        if kind in THROTTLED:
            return SendResult.temporary(text, code=status, retry_after=self.retry_after(response), throttled=True)
        if kind in ACCOUNT:
            return SendResult.temporary(text, code=status, unavailable=True)
        if kind in REJECTED:
            return SendResult.permanent(text, code=status)
        return None

    @staticmethod
    def error_type(response: requests.Response) -> str:
        """The documented exception name, from x-amzn-ErrorType or the body's __type/code."""
        raw = response.headers.get("x-amzn-ErrorType") or ""
        if not raw:
            body = body_json(response)
            raw = str(body.get("__type") or body.get("code") or body.get("Code") or "")
        # "MessageRejected:http://internal.amazon.com/..." or "com.amazonaws...#MessageRejected"
        return raw.split(":", 1)[0].rsplit("#", 1)[-1]

    @staticmethod
    def error_message(response: requests.Response) -> str:
        """The human part of an SES error body."""
        body = body_json(response)
        return str(body.get("message") or body.get("Message") or response.text or response.reason or "")

    def error_text(self, response: requests.Response) -> str:
        kind = self.error_type(response)
        return f"{kind}: {self.error_message(response)}" if kind else self.error_message(response)
