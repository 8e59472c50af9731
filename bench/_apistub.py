"""A fast loopback stub of the HTTP mail APIs for bench/send.py: every request answered after a fixed delay.

Run: .venv/bin/python bench/_apistub.py [--port 0] [--delay 0.08] [--token T] [--aws-access-key K]
                                         [--mailgun-domain D]

It prints `listening on http://127.0.0.1:PORT` once ready, then serves until killed. One asyncio
event loop holds any number of keep-alive connections, each request waiting its `--delay` (what a real
API costs from Europe) without holding a thread, so the stub is never what limits the sender.

Endpoints, answered as each provider documents success (the answers tests/providers/stubs.py replays),
after checking the provider's authentication header (401/403 otherwise):

    Postmark  POST /email, POST /email/batch (a JSON array; answered with one result per message)
    Resend    POST /emails, POST /emails/batch (a JSON array; answered {"data": [{"id": ...}, ...]})
    SendGrid  POST /v3/mail/send (every personalization's `to`; 202 with X-Message-Id)
    Mailgun   POST /v3/<domain>/messages (form-encoded or multipart; every `to`)
    SES v2    POST /v2/email/outbound-emails (Destination.ToAddresses; the SigV4 header's key id only)

It counts the messages received per recipient address. GET /_stub/stats answers the counts as JSON
(requests, messages, rejected and why, the most requests in flight at once, messages per recipient)
and POST /_stub/reset zeroes them; neither waits the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import uuid
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from urllib.parse import parse_qsl, urlsplit

JSON = {"Content-Type": "application/json"}


class Reject(Exception):
    """A request the real API would refuse: answered with `status` and `body`, and counted."""

    def __init__(self, status: int, reason: str, body: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body or {"message": reason}


def addresses(values) -> list[str]:
    """Bare lower-cased addresses from `Name <addr>` strings, lists of them, or comma-separated lists."""
    if isinstance(values, str):
        values = [values]
    return [addr.lower() for _, addr in getaddresses([str(v) for v in values or []]) if addr]


def form_fields(headers: dict[str, str], body: bytes) -> list[tuple[str, str]]:
    """The fields of an application/x-www-form-urlencoded or multipart/form-data body."""
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
                                                             + body)
        return [(part.get_param("name", header="content-disposition") or "", part.get_content())
                for part in message.iter_parts() if not part.get_filename()]
    return parse_qsl(body.decode(), keep_blank_values=True)


class Stub:
    """The APIs' state: credentials to expect, and what was received."""

    def __init__(self, *, delay: float, token: str, aws_access_key: str, mailgun_domain: str):
        self.delay, self.token, self.aws_access_key = delay, token, aws_access_key
        self.mailgun_path = f"/v3/{mailgun_domain}/messages"
        self.reset()

    def reset(self) -> None:
        self.requests = self.messages = self.in_flight = self.max_in_flight = 0
        self.recipients: collections.Counter[str] = collections.Counter()
        self.endpoints: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict:
        return {"requests": self.requests, "messages": self.messages, "max_in_flight": self.max_in_flight,
                "endpoints": dict(self.endpoints), "rejected": dict(self.rejected),
                "recipients": dict(self.recipients)}

    # -- authentication, as each provider requires it

    def _bearer(self, headers):
        if headers.get("authorization") != f"Bearer {self.token}":
            raise Reject(401, "Authorization is not Bearer <token>")

    def _postmark_auth(self, headers):
        if headers.get("x-postmark-server-token") != self.token:
            raise Reject(401, "X-Postmark-Server-Token missing or wrong", {"ErrorCode": 10, "Message": "Invalid token"})

    def _mailgun_auth(self, headers):
        if headers.get("authorization") != "Basic " + base64.b64encode(f"api:{self.token}".encode()).decode():
            raise Reject(401, "Authorization is not Basic api:<key>")

    def _ses_auth(self, headers):
        auth = headers.get("authorization", "")
        if not auth.startswith(f"AWS4-HMAC-SHA256 Credential={self.aws_access_key}/") or "x-amz-date" not in headers:
            raise Reject(403, "no SigV4 Authorization with the access key, or no X-Amz-Date")

    # -- one handler per endpoint: (recipients of each message, status, headers, answer body)

    def postmark(self, headers, body, *, batch: bool):
        self._postmark_auth(headers)
        data = json.loads(body)
        messages = data if batch else [data]
        if batch and not isinstance(data, list):
            raise Reject(422, "/email/batch takes a JSON array")
        now = datetime.now(timezone.utc).isoformat()
        answers = [{"To": m.get("To", ""), "SubmittedAt": now, "MessageID": str(uuid.uuid4()), "ErrorCode": 0,
                    "Message": "OK"} for m in messages]
        rcpts = [addresses([m.get("To", ""), m.get("Cc", ""), m.get("Bcc", "")]) for m in messages]
        return rcpts, 200, JSON, answers if batch else answers[0]

    def resend(self, headers, body, *, batch: bool):
        self._bearer(headers)
        data = json.loads(body)
        messages = data if batch else [data]
        if batch and not isinstance(data, list):
            raise Reject(422, "/emails/batch takes a JSON array")
        rcpts = [addresses(m.get("to")) + addresses(m.get("cc")) + addresses(m.get("bcc")) for m in messages]
        ids = [{"id": str(uuid.uuid4())} for _ in messages]
        return rcpts, 200, JSON, {"data": ids} if batch else ids[0]

    def sendgrid(self, headers, body):
        self._bearer(headers)
        data = json.loads(body)
        rcpts = [addresses([t.get("email", "") for kind in ("to", "cc", "bcc") for t in p.get(kind, [])])
                 for p in data.get("personalizations", [])]
        return rcpts, 202, {"X-Message-Id": uuid.uuid4().hex[:22]}, None

    def mailgun(self, headers, body):
        self._mailgun_auth(headers)
        fields = form_fields(headers, body)
        # Several `to` make a batch send (with recipient-variables): one message to each of them.
        rcpts = [[addr] for addr in addresses([v for k, v in fields if k in ("to", "cc", "bcc")])]
        domain = self.mailgun_path.split("/")[2]
        return rcpts, 200, JSON, {"id": f"<{uuid.uuid4().hex}@{domain}>", "message": "Queued. Thank you."}

    def ses(self, headers, body):
        self._ses_auth(headers)
        destination = json.loads(body).get("Destination", {})
        rcpts = [addresses(destination.get("ToAddresses", []) + destination.get("CcAddresses", [])
                           + destination.get("BccAddresses", []))]
        return rcpts, 200, JSON, {"MessageId": f"0102018e{uuid.uuid4().hex[:16]}-000000"}

    def route(self, method: str, path: str):
        """The handler for a request, or None."""
        if method != "POST":
            return None
        return {
            "/email": lambda h, b: self.postmark(h, b, batch=False),
            "/email/batch": lambda h, b: self.postmark(h, b, batch=True),
            "/emails": lambda h, b: self.resend(h, b, batch=False),
            "/emails/batch": lambda h, b: self.resend(h, b, batch=True),
            "/v3/mail/send": self.sendgrid,
            self.mailgun_path: self.mailgun,
            "/v2/email/outbound-emails": self.ses,
        }.get(path)

    async def answer(self, method: str, target: str, headers: dict[str, str], body: bytes):
        """(status, headers, body bytes) for one request."""
        path = urlsplit(target).path
        if path == "/_stub/stats":
            return 200, JSON, json.dumps(self.stats()).encode()
        if path == "/_stub/reset" and method == "POST":
            self.reset()
            return 204, {}, b""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            handler = self.route(method, path)
            try:
                if handler is None:
                    raise Reject(404, f"no such endpoint: {method} {path}")
                rcpts, status, extra, data = handler(headers, body)
            except Reject as exc:
                self.rejected[exc.reason] += 1
                status, extra, data = exc.status, JSON, exc.body
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.rejected[f"{path}: unreadable request: {type(exc).__name__}"] += 1
                status, extra, data = 400, JSON, {"message": f"unreadable request: {exc}"}
            else:
                self.requests += 1
                self.endpoints[path] += 1
                self.messages += len(rcpts)
                for message in rcpts:
                    self.recipients.update(message)
            await asyncio.sleep(self.delay)
            return status, extra, b"" if data is None else json.dumps(data).encode()
        finally:
            self.in_flight -= 1


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked request body (RFC 9112, 7.1), trailers skipped."""
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()).strip():
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readline()


REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 422: "Unprocessable Entity"}


async def connection(stub: Stub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: requests answered one after another until the client closes."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await read_chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get("content-length") or 0))
            status, extra, payload = await stub.answer(method, target, headers, body)
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            out = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Length: {len(payload)}",
                   *(f"{k}: {v}" for k, v in extra.items())] + (["Connection: close"] if close else [])
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(args) -> None:
    stub = Stub(delay=args.delay, token=args.token, aws_access_key=args.aws_access_key,
                mailgun_domain=args.mailgun_domain)
    server = await asyncio.start_server(lambda r, w: connection(stub, r, w), "127.0.0.1", args.port, backlog=4096,
                                        limit=1 << 20)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--delay", type=float, default=0.08, help="seconds before each answer")
    parser.add_argument("--token", default="bench-token", help="the API token/key every provider expects")
    parser.add_argument("--aws-access-key", default="AKIDBENCH", help="the access key id SES requests are signed with")
    parser.add_argument("--mailgun-domain", default="mg.example.com")
    try:
        asyncio.run(serve(parser.parse_args(argv)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
