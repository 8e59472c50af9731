"""A real SMTP server on loopback (aiosmtpd) that records what it receives and can misbehave."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    data: bytes

    def parse(self):
        return BytesParser(policy=policy.default).parsebytes(self.data)


@dataclass
class Recorder:
    """aiosmtpd handler: stores messages; `replies` maps a recipient to a forced reply."""

    messages: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    reply_always: str | None = None
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: dict[str, int] = field(default_factory=dict)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
        forced = self.reply_always or self.replies.get(address)
        if forced:
            if forced.startswith("4") and forced.endswith("!once"):
                # A temporary failure on the first attempt only.
                if self.attempts[address] == 1:
                    return forced[:-5]
            else:
                return forced
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)  # deliberately blocking: a slow server
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 Message accepted"


class SmtpSink:
    """Start/stop a recording SMTP server on 127.0.0.1."""

    def __init__(self, port: int | None = None):
        self.handler = Recorder()
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, decode_data=False)

    def __enter__(self) -> "SmtpSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)
