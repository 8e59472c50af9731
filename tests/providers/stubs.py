"""Local HTTP servers playing each provider's API, written from the providers' public documentation.

Each stub checks the exact request (method, path, authentication, content type, headers, fields;
every entry of a batch request) and records every mismatch in `problems` (answering 400 so the
test fails loudly), then answers as the provider documents. What it answers depends on the
recipient's local part (in a batch, per entry where the provider answers per entry; ratelimit,
error500/503, hang and drop apply to the whole request):

    invalid...  the provider's invalid/inactive recipient error
    ratelimit   429 with Retry-After (or the provider's own rate-limit headers)
    error500    500          error503   503
    hang        reads the whole request and never answers (a read timeout: uncertain)
    drop        reads the whole request and closes the connection without an answer
    anything else: accepted, with a message id
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

#: Our headers every provider must pass through.
OUR_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID")
TAG_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


@dataclass
class Seen:
    """One request as the stub received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client_port: int = 0  # tells connections apart: keep-alive reuses one
    _parsed: object = field(default=None, init=False, repr=False, compare=False)

    def json(self):
        if self._parsed is None:  # parsed once: a batch body is read by several checks
            self._parsed = json.loads(self.body)
        return self._parsed

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True, strict_parsing=True)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False

    @classmethod
    def json(cls, status: int, data, **headers) -> "Answer":
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers})


@dataclass
class Expect:
    """What the stub expects of the requests: our message's headers and metadata, the credentials."""

    token: str = "test-token"
    headers: dict[str, str] = field(default_factory=dict)  # header name -> exact value (empty: just present)
    metadata_keys: tuple[str, ...] = ("valuemail_delivery", "valuemail_run")


class Api:
    """One provider's API: `check` lists what is wrong with a request, `answer` replies to a good one."""

    name = ""

    def __init__(self, expect: Expect | None = None):
        self.expect = expect or Expect()
        self.ids = itertools.count(1)
        # (metadata, provider id) of every message accepted and sent, in the id form the provider's
        # webhooks use; a replayed idempotent request sends nothing and adds nothing.
        self.sent: list[tuple[dict[str, str], str]] = []

    def check(self, seen: Seen) -> list[str]:
        raise NotImplementedError

    def recipient(self, seen: Seen) -> str:
        raise NotImplementedError

    def recipients(self, seen: Seen) -> list[str]:
        """Every message's recipient, in request order (one for a single-message endpoint)."""
        return [self.recipient(seen)]

    def respond(self, seen: Seen, behaviours: list[str]) -> Answer:
        """The answer to a good request whose messages behave as `behaviours` (hang and drop excluded)."""
        return self.answer(seen, behaviours[0])

    def authorized(self, seen: Seen) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Answer:
        raise NotImplementedError

    def answer(self, seen: Seen, behaviour: str) -> Answer:
        raise NotImplementedError

    def metadata(self, seen: Seen) -> dict[str, str]:
        """Our metadata as the provider will echo it in webhooks."""
        raise NotImplementedError

    def _our_headers(self, given: dict[str, str], where: str) -> list[str]:
        problems = []
        lowered = {k.lower(): v for k, v in given.items()}
        for name in OUR_HEADERS:
            if name.lower() not in lowered:
                problems.append(f"{where}: {name} missing")
            elif self.expect.headers.get(name) and lowered[name.lower()] != self.expect.headers[name]:
                problems.append(f"{where}: {name} is {lowered[name.lower()]!r}, expected {self.expect.headers[name]!r}")
        return problems

    def _metadata(self, given, where: str) -> list[str]:
        if not isinstance(given, dict):
            return [f"{where} is not an object: {given!r}"]
        problems = [f"{where}: {key} missing" for key in self.expect.metadata_keys if key not in given]
        problems += [f"{where}: {key} is not a string" for key, value in given.items() if not isinstance(value, str)]
        return problems


def _behaviour(recipient: str) -> str:
    local = recipient.rsplit("@", 1)[0].lower()
    for name in ("invalid", "ratelimit", "error500", "error503", "hang", "drop", "paused", "badrequest"):
        if local.startswith(name):
            return name
    return "ok"


def _content_type(seen: Seen, expected: str) -> list[str]:
    given = seen.headers.get("content-type", "")
    return [] if given.split(";")[0].strip() == expected else [f"Content-Type is {given!r}, expected {expected}"]


def _only(keys, allowed: set[str], where: str) -> list[str]:
    return [f"{where}: undocumented field {key!r}" for key in keys if key not in allowed]


class PostmarkApi(Api):
    """POST /email (https://postmarkapp.com/developer/api/email-api) and POST /email/batch
    (https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails)."""

    name = "postmark"
    FIELDS = {"From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo", "Metadata", "Headers",
              "TrackOpens", "TrackLinks", "Attachments", "MessageStream"}
    BATCH_LIMIT = 500

    def __init__(self, expect: Expect | None = None, *, message_stream: str = "broadcast"):
        super().__init__(expect)
        self.message_stream = message_stream

    def authorized(self, seen):
        return seen.headers.get("x-postmark-server-token") == self.expect.token

    def unauthorized(self):
        return Answer.json(401, {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                 "X-Postmark-Server-Token request header was invalid."})

    @staticmethod
    def _entries(seen) -> list[dict]:
        return seen.json() if seen.path == "/email/batch" else [seen.json()]

    def metadata(self, seen):
        return seen.json()["Metadata"]

    def recipient(self, seen):
        return self.recipients(seen)[0]

    def recipients(self, seen):
        return [re.sub(r".*<(.*)>", r"\1", entry.get("To", "")) for entry in self._entries(seen)]

    def check(self, seen):
        problems = []
        if seen.method != "POST" or seen.path not in ("/email", "/email/batch"):
            problems.append(f"{seen.method} {seen.path}, expected POST /email or /email/batch")
        if seen.headers.get("accept") != "application/json":
            problems.append(f"Accept is {seen.headers.get('accept')!r}")
        problems += _content_type(seen, "application/json")
        data = seen.json()
        if seen.path != "/email/batch":
            return problems + self._check_message(data)
        if not isinstance(data, list) or not 1 <= len(data) <= self.BATCH_LIMIT:
            return problems + [f"batch body is not an array of 1 to {self.BATCH_LIMIT} messages"]
        for index, entry in enumerate(data):
            problems += self._check_message(entry, f"[{index}]")
        return problems

    def _check_message(self, data, where: str = "") -> list[str]:
        """What is wrong with one message: the /email body, or the batch entry `where` ("[3]")."""
        if not isinstance(data, dict):
            return [f"{where or 'body'} is not an object"]
        at = f"{where} " if where else ""
        problems = _only(data, self.FIELDS, where or "body")
        for key in ("From", "To", "Subject"):
            if not isinstance(data.get(key), str) or not data[key]:
                problems.append(f"{at}{key} missing")
        if not data.get("HtmlBody") and not data.get("TextBody"):
            problems.append(f"{at}neither HtmlBody nor TextBody")
        headers = data.get("Headers", [])
        if not isinstance(headers, list) or any(set(h) != {"Name", "Value"} for h in headers):
            problems.append(f"{at}Headers is not a list of {{Name, Value}}: {headers!r}")
        else:
            problems += self._our_headers({h["Name"]: h["Value"] for h in headers}, f"{at}Headers")
        problems += self._metadata(data.get("Metadata"), f"{at}Metadata")
        if data.get("TrackOpens") is not False:
            problems.append(f"{at}TrackOpens is {data.get('TrackOpens')!r}, expected false")
        if data.get("TrackLinks") != "None":
            problems.append(f"{at}TrackLinks is {data.get('TrackLinks')!r}, expected 'None'")
        if data.get("MessageStream") != self.message_stream:
            problems.append(f"{at}MessageStream is {data.get('MessageStream')!r}")
        return problems

    @staticmethod
    def _refusal(behaviour: str, entry: dict, recipient: str) -> dict | None:
        """The ErrorCode and Message for a refused message (a 422 alone, an entry in a batch answer)."""
        if behaviour == "invalid":
            return {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as "
                                                 f"inactive. Found inactive addresses: {recipient}."}
        if behaviour == "badrequest":
            return {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{entry['To']}'."}
        if behaviour == "paused":
            return {"ErrorCode": 412, "Message": "Your account is pending approval."}
        return None

    def _accepted(self, entry: dict) -> dict:
        self.last_id = str(uuid.uuid4())
        self.sent.append((entry["Metadata"], self.last_id))
        return {"To": entry["To"], "SubmittedAt": datetime.now(timezone.utc).isoformat(), "MessageID": self.last_id,
                "ErrorCode": 0, "Message": "OK"}

    def _whole_request(self, behaviours: list[str]) -> Answer | None:
        if "ratelimit" in behaviours:
            return Answer.json(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}, **{"Retry-After": "7"})
        for behaviour in behaviours:
            if behaviour.startswith("error"):
                return Answer.json(int(behaviour[5:]), {"ErrorCode": 100, "Message": "Maintenance"})
        return None

    def answer(self, seen, behaviour):
        entry = seen.json()
        refusal = self._refusal(behaviour, entry, self.recipient(seen))
        if refusal is not None:
            return Answer.json(422, refusal)
        return self._whole_request([behaviour]) or Answer.json(200, self._accepted(entry))

    def respond(self, seen, behaviours):
        if seen.path != "/email/batch":
            return self.answer(seen, behaviours[0])
        failed = self._whole_request(behaviours)
        if failed is not None:
            return failed
        # One result per message, in order, with a 200 even when some were refused.
        results = []
        for entry, recipient, behaviour in zip(seen.json(), self.recipients(seen), behaviours):
            results.append(self._refusal(behaviour, entry, recipient) or self._accepted(entry))
        return Answer.json(200, results)


class SendgridApi(Api):
    """POST /v3/mail/send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send)."""

    name = "sendgrid"
    FIELDS = {"personalizations", "from", "reply_to", "reply_to_list", "subject", "content", "attachments",
              "template_id", "headers", "categories", "custom_args", "send_at", "batch_id", "asm", "ip_pool_name",
              "mail_settings", "tracking_settings"}
    RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding",
                "to", "from", "subject", "reply-to", "cc", "bcc"}

    def authorized(self, seen):
        return seen.headers.get("authorization") == f"Bearer {self.expect.token}"

    def unauthorized(self):
        return Answer.json(401, {"errors": [{"field": None, "message": "The provided authorization grant is invalid, "
                                             "expired, or revoked"}]})

    def metadata(self, seen):
        return seen.json()["personalizations"][0]["custom_args"]

    def recipient(self, seen):
        return seen.json()["personalizations"][0]["to"][0]["email"]

    def check(self, seen):
        problems = []
        if (seen.method, seen.path) != ("POST", "/v3/mail/send"):
            problems.append(f"{seen.method} {seen.path}, expected POST /v3/mail/send")
        problems += _content_type(seen, "application/json")
        data = seen.json()
        problems += _only(data, self.FIELDS, "body")
        ps = data.get("personalizations")
        if not isinstance(ps, list) or len(ps) != 1:
            return problems + [f"personalizations is {ps!r}"]
        to = ps[0].get("to")
        if not isinstance(to, list) or len(to) != 1 or "email" not in to[0] or set(to[0]) - {"email", "name"}:
            problems.append(f"personalizations[0].to is {to!r}")
        problems += _only(ps[0], {"to", "cc", "bcc", "from", "subject", "headers", "substitutions",
                                  "dynamic_template_data", "custom_args", "send_at"}, "personalizations[0]")
        problems += self._metadata(ps[0].get("custom_args"), "custom_args")
        if not isinstance(data.get("from"), dict) or "email" not in data["from"]:
            problems.append(f"from is {data.get('from')!r}")
        if not data.get("subject"):
            problems.append("subject missing")
        content = data.get("content", [])
        types = [c.get("type") for c in content]
        if not content or any(not c.get("value") for c in content) or (
                "text/plain" in types and types.index("text/plain") != 0):
            problems.append(f"content is {[(c.get('type'), len(c.get('value') or '')) for c in content]}")
        headers = data.get("headers", {})
        problems += self._our_headers(headers, "headers")
        problems += [f"headers: reserved {k!r}" for k in headers if k.lower() in self.RESERVED]
        if any(not isinstance(v, str) for v in headers.values()):
            problems.append("headers: values must be strings")
        categories = data.get("categories", [])
        if not isinstance(categories, list) or len(categories) > 10 or any(len(c) > 255 for c in categories):
            problems.append(f"categories is {categories!r}")
        tracking = data.get("tracking_settings", {})
        if tracking.get("click_tracking", {}).get("enable") is not False:
            problems.append("click tracking not disabled")
        if tracking.get("open_tracking", {}).get("enable") is not False:
            problems.append("open tracking not disabled")
        return problems

    def answer(self, seen, behaviour):
        if behaviour in ("invalid", "badrequest"):
            return Answer.json(400, {"errors": [{"message": "Does not contain a valid address.",
                                                 "field": "personalizations.0.to.0.email",
                                                 "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/"
                                                         "errors.html#message.personalizations.to"}]})
        if behaviour == "ratelimit":
            reset = int(datetime.now(timezone.utc).timestamp()) + 30
            return Answer.json(429, {"errors": [{"field": None, "message": "too many requests"}]},
                               **{"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                                  "X-RateLimit-Reset": str(reset)})
        if behaviour.startswith("error"):
            return Answer.json(int(behaviour[5:]), {"errors": [{"field": None, "message": "internal error"}]})
        message_id = f"sg{next(self.ids)}AbCdEfGhIjKlMn"
        self.sent.append((self.metadata(seen), message_id))
        return Answer(202, b"", {"X-Message-Id": message_id})


class MailgunApi(Api):
    """POST /v3/<domain>/messages (https://documentation.mailgun.com/docs/mailgun/api-reference/)."""

    name = "mailgun"

    def __init__(self, expect: Expect | None = None, *, domain: str = "mg.example.com"):
        super().__init__(expect)
        self.domain = domain

    def authorized(self, seen):
        expected = "Basic " + base64.b64encode(f"api:{self.expect.token}".encode()).decode()
        return seen.headers.get("authorization") == expected

    def unauthorized(self):
        return Answer(401, b"Forbidden", {"Content-Type": "text/plain"})

    def metadata(self, seen):
        return {k[2:]: v for k, v in seen.form() if k.startswith("v:")}

    def recipient(self, seen):
        to = dict(seen.form()).get("to", "")
        return re.sub(r".*<(.*)>", r"\1", to)

    def check(self, seen):
        problems = []
        if (seen.method, seen.path) != ("POST", f"/v3/{self.domain}/messages"):
            problems.append(f"{seen.method} {seen.path}, expected POST /v3/{self.domain}/messages")
        problems += _content_type(seen, "application/x-www-form-urlencoded")
        fields = seen.form()
        names = [k for k, _ in fields]
        known = {"from", "to", "cc", "bcc", "subject", "text", "html", "amp-html", "template", "recipient-variables"}
        problems += [f"undocumented field {k!r}" for k in names if k not in known and not k.startswith(("h:", "o:", "v:"))]
        form = dict(fields)
        for key in ("from", "to", "subject"):
            if not form.get(key):
                problems.append(f"{key} missing")
        if not form.get("text") and not form.get("html"):
            problems.append("neither text nor html")
        problems += self._our_headers({k[2:]: v for k, v in fields if k.startswith("h:")}, "h: fields")
        if not re.fullmatch(r"<[^<>@]+@[^<>@]+>", form.get("h:Message-Id", "")):
            problems.append(f"h:Message-Id is {form.get('h:Message-Id')!r}")
        if form.get("o:tracking") != "no":
            problems.append(f"o:tracking is {form.get('o:tracking')!r}, expected 'no'")
        problems += self._metadata({k[2:]: v for k, v in fields if k.startswith("v:")}, "v: variables")
        return problems

    def answer(self, seen, behaviour):
        if behaviour in ("invalid", "badrequest"):
            return Answer.json(400, {"message": "to parameter is not a valid address. please check documentation"})
        if behaviour == "ratelimit":
            return Answer.json(429, {"message": "Too many requests"}, **{"Retry-After": "5"})
        if behaviour.startswith("error"):
            return Answer(int(behaviour[5:]), b"Internal Server Error", {"Content-Type": "text/plain"})
        message_id = f"20270320090000.{next(self.ids)}.abcdef@{self.domain}"
        self.sent.append((self.metadata(seen), message_id))  # its events name it without the brackets
        return Answer.json(200, {"id": f"<{message_id}>", "message": "Queued. Thank you."})


class ResendApi(Api):
    """POST /emails (https://resend.com/docs/api-reference/emails/send-email) and POST /emails/batch
    (https://resend.com/docs/api-reference/emails/send-batch-emails), with Idempotency-Key, and
    the batch's permissive validation (https://resend.com/docs/dashboard/emails/batch-validation-modes)."""

    name = "resend"
    FIELDS = {"from", "to", "subject", "bcc", "cc", "reply_to", "html", "text", "react", "headers", "attachments",
              "tags", "scheduled_at"}
    BATCH_FIELDS = FIELDS - {"attachments", "scheduled_at"}  # "not supported yet" on the batch endpoint
    BATCH_LIMIT = 100
    INVALID_TO = ("Invalid `to` field. The email address needs to follow the `email@example.com` or "
                  "`Name <email@example.com>` format.")

    def __init__(self, expect: Expect | None = None):
        super().__init__(expect)
        self.by_key: dict[str, str] = {}  # Idempotency-Key -> the id first answered
        self.batches: dict[str, tuple[bytes, Answer]] = {}  # a batch's Idempotency-Key -> its body and answer
        self.delivered: list[str] = []  # ids of emails actually sent

    def authorized(self, seen):
        return seen.headers.get("authorization") == f"Bearer {self.expect.token}"

    def unauthorized(self):
        return Answer.json(403, {"statusCode": 403, "message": "API key is invalid", "name": "invalid_api_key"})

    @staticmethod
    def _entries(seen) -> list[dict]:
        return seen.json() if seen.path == "/emails/batch" else [seen.json()]

    def metadata(self, seen):
        return self._tags(seen.json())

    @staticmethod
    def _tags(entry: dict) -> dict[str, str]:
        return {t["name"]: t["value"] for t in entry["tags"]}

    def recipient(self, seen):
        return self.recipients(seen)[0]

    def recipients(self, seen):
        return [to[0] if isinstance(to, list) and to else str(to) for to in (e.get("to") for e in self._entries(seen))]

    def check(self, seen):
        problems = []
        batch = seen.path == "/emails/batch"
        if seen.method != "POST" or seen.path not in ("/emails", "/emails/batch"):
            problems.append(f"{seen.method} {seen.path}, expected POST /emails or /emails/batch")
        problems += _content_type(seen, "application/json")
        key = seen.headers.get("idempotency-key", "")
        if not key or len(key) > 256:
            problems.append(f"Idempotency-Key is {key!r}")
        data = seen.json()
        if not batch:
            return problems + self._check_email(data, "", self.FIELDS)
        if seen.headers.get("x-batch-validation") != "permissive":
            problems.append(f"x-batch-validation is {seen.headers.get('x-batch-validation')!r}, expected permissive")
        if not isinstance(data, list) or not 1 <= len(data) <= self.BATCH_LIMIT:
            return problems + [f"batch body is not an array of 1 to {self.BATCH_LIMIT} emails"]
        for index, entry in enumerate(data):
            problems += self._check_email(entry, f"[{index}]", self.BATCH_FIELDS)
        return problems

    def _check_email(self, data, where: str, fields: set[str]) -> list[str]:
        """What is wrong with one email: the /emails body (`where` ""), or the batch entry `where` ("[3]")."""
        if not isinstance(data, dict):
            return [f"{where or 'body'} is not an object"]
        at = f"{where} " if where else ""
        problems = _only(data, fields, where or "body")
        if not isinstance(data.get("to"), list) or not data.get("from") or not data.get("subject"):
            problems.append(f"{at}from, to (a list) and subject are required")
        if not data.get("html") and not data.get("text"):
            problems.append(f"{at}neither html nor text")
        problems += self._our_headers(data.get("headers", {}), f"{at}headers")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or any(set(t) != {"name", "value"} for t in tags):
            problems.append(f"{at}tags is {tags!r}")
        else:
            problems += [f"{at}tag {t!r}: only ASCII letters, numbers, _ and -" for t in tags
                         if not TAG_SAFE.match(t["name"]) or not TAG_SAFE.match(t["value"])]
            problems += self._metadata({t["name"]: t["value"] for t in tags}, f"{at}tags")
        return problems

    @staticmethod
    def _whole_request(behaviours: list[str]) -> Answer | None:
        if "ratelimit" in behaviours:
            return Answer.json(429, {"statusCode": 429, "name": "rate_limit_exceeded",
                                     "message": "Too many requests. You can only make 2 requests per second."},
                               **{"retry-after": "1", "ratelimit-limit": "2", "ratelimit-remaining": "0",
                                  "ratelimit-reset": "1"})
        for behaviour in behaviours:
            if behaviour.startswith("error"):
                return Answer.json(int(behaviour[5:]), {"statusCode": int(behaviour[5:]), "name": "application_error",
                                                        "message": "An unexpected error occurred."})
        return None

    def _send(self, entry: dict) -> str:
        email_id = str(uuid.uuid4())
        self.delivered.append(email_id)
        self.sent.append((self._tags(entry), email_id))
        return email_id

    def answer(self, seen, behaviour):
        if behaviour in ("invalid", "badrequest"):
            return Answer.json(422, {"statusCode": 422, "name": "validation_error", "message": self.INVALID_TO})
        failed = self._whole_request([behaviour])
        if failed is not None:
            return failed
        key = seen.headers["idempotency-key"]
        if key not in self.by_key:
            self.by_key[key] = self._send(seen.json())
        return Answer.json(200, {"id": self.by_key[key]})

    def respond(self, seen, behaviours):
        if seen.path != "/emails/batch":
            return self.answer(seen, behaviours[0])
        failed = self._whole_request(behaviours)
        if failed is not None:
            return failed
        key = seen.headers["idempotency-key"]
        if key in self.batches:
            # The same key within 24 hours: the first answer again and nothing sent, or a 409 when
            # the payload differs.
            body, answer = self.batches[key]
            if body == seen.body:
                return answer
            return Answer.json(409, {"statusCode": 409, "name": "invalid_idempotent_request",
                                     "message": "Same idempotency key used with a different request payload."})
        # Permissive: the invalid emails are listed by index and not created; the others are sent.
        data, errors = [], []
        for index, (entry, behaviour) in enumerate(zip(seen.json(), behaviours)):
            if behaviour in ("invalid", "badrequest"):
                errors.append({"index": index, "message": self.INVALID_TO})
            else:
                data.append({"id": self._send(entry)})
        answer = Answer.json(200, {"data": data, "errors": errors})
        self.batches[key] = (seen.body, answer)
        return answer


class SesApi(Api):
    """SES v2 SendEmail, POST /v2/email/outbound-emails, checking the SigV4 signature independently."""

    name = "ses"
    FIELDS = {"FromEmailAddress", "FromEmailAddressIdentityArn", "Destination", "ReplyToAddresses",
              "FeedbackForwardingEmailAddress", "FeedbackForwardingEmailAddressIdentityArn", "Content", "EmailTags",
              "ConfigurationSetName", "EndpointId", "TenantName", "ListManagementOptions"}

    def __init__(self, expect: Expect | None = None, *, secret: str = "test-secret", region: str = "eu-west-1",
                 session_token: str = "", configuration_set: str = ""):
        super().__init__(expect)
        self.secret, self.region = secret, region
        self.session_token, self.configuration_set = session_token, configuration_set
        self.signature_problems: list[str] = []

    def authorized(self, seen):
        self.signature_problems = verify_sigv4(seen, access_key=self.expect.token, secret=self.secret,
                                               region=self.region, service="ses", session_token=self.session_token)
        return not self.signature_problems

    def unauthorized(self):
        return Answer.json(403, {"message": "The request signature we calculated does not match the signature you "
                                            "provided. " + "; ".join(self.signature_problems)},
                           **{"x-amzn-ErrorType": "SignatureDoesNotMatch:http://internal.amazon.com/coral/"})

    def metadata(self, seen):
        return {t["Name"]: t["Value"] for t in seen.json()["EmailTags"]}

    def recipient(self, seen):
        return seen.json()["Destination"]["ToAddresses"][0]

    def check(self, seen):
        problems = []
        if (seen.method, seen.path) != ("POST", "/v2/email/outbound-emails"):
            problems.append(f"{seen.method} {seen.path}, expected POST /v2/email/outbound-emails")
        problems += _content_type(seen, "application/json")
        data = seen.json()
        problems += _only(data, self.FIELDS, "body")
        if not isinstance(data.get("Destination", {}).get("ToAddresses"), list):
            problems.append("Destination.ToAddresses missing")
        raw = data.get("Content", {}).get("Raw", {}).get("Data")
        if set(data.get("Content", {})) != {"Raw"} or not isinstance(raw, str):
            problems.append("Content.Raw.Data missing")
        else:
            message = BytesParser(policy=policy.default).parsebytes(base64.b64decode(raw, validate=True))
            problems += self._our_headers({k: str(v) for k, v in message.items()}, "raw message")
        tags = data.get("EmailTags", [])
        if not isinstance(tags, list) or any(set(t) != {"Name", "Value"} for t in tags):
            problems.append(f"EmailTags is {tags!r}")
        else:
            problems += [f"tag {t!r}: only ASCII letters, numbers, _ and -" for t in tags
                         if not TAG_SAFE.match(t["Name"]) or not TAG_SAFE.match(t["Value"])]
            problems += self._metadata({t["Name"]: t["Value"] for t in tags}, "EmailTags")
        if data.get("ConfigurationSetName", "") != self.configuration_set:
            problems.append(f"ConfigurationSetName is {data.get('ConfigurationSetName')!r}")
        return problems

    def _error(self, status: int, kind: str, message: str, **headers) -> Answer:
        return Answer.json(status, {"message": message},
                           **{"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/",
                              **headers})

    def answer(self, seen, behaviour):
        if behaviour == "invalid":
            return self._error(400, "MessageRejected", "Email address is not verified. The following identities "
                                                       f"failed the check in region EU-WEST-1: {self.recipient(seen)}")
        if behaviour == "badrequest":
            return self._error(400, "BadRequestException", "Missing final '@domain'")
        if behaviour == "paused":
            return self._error(400, "SendingPausedException", "Sending is paused for this account.")
        if behaviour == "ratelimit":
            return self._error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", **{"Retry-After": "2"})
        if behaviour == "error500":
            return self._error(500, "InternalFailure", "The request processing has failed.")
        if behaviour == "error503":
            return self._error(503, "ServiceUnavailable", "Service is unavailable.")
        message_id = f"0102018e{next(self.ids):08x}-abcdef-000000"
        self.sent.append((self.metadata(seen), message_id))
        return Answer.json(200, {"MessageId": message_id})


def verify_sigv4(seen: Seen, *, access_key: str, secret: str, region: str, service: str,
                 session_token: str = "", now: datetime | None = None) -> list[str]:
    """Check an AWS Signature Version 4 Authorization header, step by step as AWS documents it.

    https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
    """
    auth = seen.headers.get("authorization", "")
    match = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
    if not match:
        return [f"Authorization header malformed: {auth!r}"]
    key_id, day, scope_region, scope_service, signed_headers, signature = match.groups()
    problems = []
    if key_id != access_key:
        problems.append(f"unknown access key {key_id!r}")
    if (scope_region, scope_service) != (region, service):
        problems.append(f"scope {scope_region}/{scope_service}, expected {region}/{service}")
    amz_date = seen.headers.get("x-amz-date", "")
    try:
        at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return problems + [f"X-Amz-Date is {amz_date!r}"]
    if abs(at - (now or datetime.now(timezone.utc))) > timedelta(minutes=5):
        problems.append(f"X-Amz-Date {amz_date} is more than 5 minutes off")
    if at.strftime("%Y%m%d") != day:
        problems.append("credential scope date differs from X-Amz-Date")
    names = signed_headers.split(";")
    required = {"host", "x-amz-date"} | ({"x-amz-security-token"} if session_token else set())
    if not required <= set(names):
        problems.append(f"SignedHeaders {signed_headers} lacks {sorted(required - set(names))}")
    if session_token and seen.headers.get("x-amz-security-token") != session_token:
        problems.append("X-Amz-Security-Token missing or wrong")
    if names != sorted(names) or any(n not in seen.headers for n in names):
        problems.append(f"SignedHeaders {signed_headers} not sorted or not all sent")
        return problems
    # Step 1: the canonical request.
    canonical_uri = quote(seen.path, safe="/-_.~")
    query = sorted(parse_qsl(seen.query, keep_blank_values=True))
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    canonical_headers = "".join(f"{n}:{' '.join(seen.headers[n].strip().split())}\n" for n in names)
    payload_hash = hashlib.sha256(seen.body).hexdigest()
    canonical = "\n".join([seen.method, canonical_uri, canonical_query, canonical_headers, signed_headers, payload_hash])
    # Step 2: the string to sign.
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    # Step 3: the signing key, derived from the secret through date, region, service.
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        problems.append("signature does not match")
    return problems


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many connections at once from one provider's request pool


class Stub:
    """A threaded HTTP/1.1 server on 127.0.0.1 playing `api`; use as a context manager.

    `hold_until=n` holds every answer until n requests are waiting for one at once (then answers
    them all, and everything after at once): a provider that cannot keep n in flight times out.
    `max_in_flight` is the most requests that were waiting for an answer at the same moment.
    """

    def __init__(self, api: Api, *, close_after_answer: bool = False, hold_until: int = 0):
        self.api = api
        self.close_after_answer = close_after_answer
        self.seen: list[Seen] = []
        self.problems: list[str] = []
        self.accepted: list[tuple[Seen, Answer]] = []  # requests answered with success, and the answers
        self.unanswered: list[str] = []  # recipients of the requests left without an answer (hang, drop)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._hold_until = hold_until
        self._flight = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                seen = Seen(self.command, parts.path, parts.query,
                            {k.lower(): v for k, v in self.headers.items()}, body, self.client_address[1])
                with stub.lock:
                    stub.seen.append(seen)
                stub._arrive()
                try:
                    answer = stub.handle(seen)
                    if answer.hang:
                        stub.release.wait(30)
                finally:
                    # Counted out before the answer is written: the client cannot start another
                    # request on this connection before it has read this answer.
                    stub._leave()
                if answer.hang or answer.drop:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                if stub.close_after_answer:
                    # Like a provider closing an idle keep-alive connection (without saying so).
                    self.close_connection = True

            do_GET = do_PUT = do_POST

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> list[str]:
        """The recipient of every message in every request received, in arrival order (repeats included)."""
        with self.lock:
            seen = list(self.seen)
        return [r for s in seen for r in self.api.recipients(s)]

    def _arrive(self) -> None:
        with self._flight:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.in_flight >= self._hold_until:
                self._hold_until = 0
                self._flight.notify_all()
            # Bounded only so that a provider that never gets there fails instead of hanging the test.
            self._flight.wait_for(lambda: self._hold_until == 0, timeout=10)

    def _leave(self) -> None:
        with self._flight:
            self.in_flight -= 1

    def handle(self, seen: Seen) -> Answer:
        if not self.api.authorized(seen):
            return self.api.unauthorized()
        try:
            problems = self.api.check(seen)
            recipients = self.api.recipients(seen)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            problems, recipients = [f"unreadable request: {type(exc).__name__}: {exc}"], []
        if problems:
            with self.lock:
                self.problems += problems
            return Answer.json(400, {"stub_problems": problems})
        behaviours = [_behaviour(r) for r in recipients]
        for lost in ("hang", "drop"):
            if lost in behaviours:
                with self.lock:
                    self.unanswered += recipients
                return Answer(0, hang=lost == "hang", drop=lost == "drop")
        with self.lock:
            answer = self.api.respond(seen, behaviours)
            if 200 <= answer.status < 300:
                self.accepted.append((seen, answer))
            return answer

    def __enter__(self) -> "Stub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


#: Every HTTP API, by provider name.
APIS = {"postmark": PostmarkApi, "sendgrid": SendgridApi, "mailgun": MailgunApi, "resend": ResendApi, "ses": SesApi}
