"""A real SMTP server on loopback (aiosmtpd) that records what it receives and can misbehave.

Faults are set per recipient address in `Recorder.faults` (see `Fault`); they let one server
answer each recipient of a run differently, so a single send exercises every failure path.
`SmtpSink(pipelining=True)` also offers PIPELINING (aiosmtpd reads pipelined commands fine, it
just does not say so), and `Recorder.reads` keeps every read of every connection, so a test can
see which commands arrived together.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


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

    @property
    def message_id(self) -> str:
        return str(self.parse()["Message-ID"])


#: Fault actions. `rcpt:<reply>` and `data:<reply>` answer RCPT or the end of DATA with the reply
#: (the message is not stored). The `drop:` ones close the connection without a reply: at RCPT,
#: at the DATA command (after RCPT), during DATA (after 354, having read one line), and after the
#: final "." (`drop:after-dot` has stored the message, `drop:after-dot-lost` has not).
#: `drop:after-accept` accepts the message, then drops the connection, as a server closing an idle
#: connection does. `slow:<seconds>` waits that long before answering the end of DATA (the message
#: is stored); `slow-rcpt:<seconds>` before answering RCPT.
ACTIONS = ("rcpt:", "data:", "drop:rcpt", "drop:data-command", "drop:during-data", "drop:after-dot",
           "drop:after-dot-lost", "drop:after-accept", "slow:", "slow-rcpt:")


@dataclass(frozen=True)
class Fault:
    """What the server does to one recipient; `times` > 0 limits it to the first attempts."""

    action: str
    times: int = 0

    def __post_init__(self):
        if not self.action.startswith(ACTIONS):
            raise ValueError(f"unknown fault {self.action!r}")

    def arg(self) -> str:
        return self.action.split(":", 1)[1]


@dataclass
class Recorder:
    """aiosmtpd handler: stores messages; `replies` maps a recipient to a forced RCPT reply."""

    messages: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    reply_always: str | None = None
    delay: float = 0.0
    drop_mail: int = 0  # drop the connection at the next N MAIL commands (before MAIL is answered)
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: dict[str, int] = field(default_factory=dict)
    # Connection statistics, for the pool tests.
    connections: int = 0  # sessions that said EHLO
    open_now: int = 0
    max_open: int = 0
    quits: int = 0
    per_connection: list[int] = field(default_factory=list)  # messages accepted on each connection
    reads: list[list[bytes]] = field(default_factory=list)  # what each connection's reads brought, in order
    pipelining: bool = False  # offer PIPELINING in the EHLO reply
    # Recipients whose end of DATA is not answered until the test sets the event (the message is stored).
    holds: dict[str, threading.Event] = field(default_factory=dict)
    changed: threading.Condition = field(init=False)

    def __post_init__(self):
        self.changed = threading.Condition(self.lock)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Block until `predicate(recorder)` holds; it is checked whenever the server's statistics change."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)

    def fault(self, address: str) -> Fault | None:
        found = self.faults.get(address.lower())
        if found is None:
            return None
        with self.lock:
            attempt = self.attempts.get(address, 0)
        return found if not found.times or attempt <= found.times else None

    def count_at_server(self) -> dict[str, int]:
        """How many times each Message-ID arrived."""
        counts: dict[str, int] = {}
        for m in self.messages:
            counts[m.message_id] = counts.get(m.message_id, 0) + 1
        return counts

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname  # aiosmtpd leaves this to the hook once there is one
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            drop = self.drop_mail > 0
            self.drop_mail -= drop
        if drop:
            await _drop(server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
        fault = self.fault(address)
        if fault is not None:
            if fault.action == "drop:rcpt":
                await _drop(server)
            if fault.action.startswith("rcpt:"):
                return fault.arg()
            if fault.action.startswith("slow-rcpt:"):
                await asyncio.sleep(float(fault.arg()))
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
        fault = self.fault(envelope.rcpt_tos[0]) if envelope.rcpt_tos else None
        action = fault.action if fault else ""
        if action.startswith("data:"):
            return fault.arg()
        if action == "drop:after-dot-lost":
            await _drop(server)
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append(received)
            if hasattr(server, "index"):
                self.per_connection[server.index] += 1
            self.changed.notify_all()
        hold = self.holds.get(envelope.rcpt_tos[0]) if envelope.rcpt_tos else None
        if hold is not None:
            await asyncio.to_thread(hold.wait)
        if action == "drop:after-dot":
            await _drop(server)
        if action.startswith("slow:"):
            await asyncio.sleep(float(fault.arg()))
        if action == "drop:after-accept":
            await server.push("250 Message accepted")
            await _drop(server)
        return "250 Message accepted"


async def _drop(server: SMTP) -> None:
    """Close the connection without a reply; aiosmtpd then cancels this handler coroutine."""
    server.transport.abort()
    await asyncio.Event().wait()


class FaultySMTP(SMTP):
    """aiosmtpd's server with the DATA-stage drops and connection statistics of `Recorder`."""

    def connection_made(self, transport):
        handler: Recorder = self.event_handler
        self.reads: list[bytes] = []
        with handler.lock:
            handler.open_now += 1
            handler.max_open = max(handler.max_open, handler.open_now)
        super().connection_made(transport)

    def data_received(self, data):
        self.reads.append(bytes(data))
        super().data_received(data)

    def connection_lost(self, error):
        handler: Recorder = self.event_handler
        with handler.lock:
            handler.open_now -= 1
            handler.changed.notify_all()
        super().connection_lost(error)

    async def smtp_EHLO(self, hostname):
        if not getattr(self, "greeted", False):  # the controller's own start-up probe never says EHLO
            self.greeted = True
            with self.event_handler.lock:
                self.event_handler.connections += 1
                self.index = len(self.event_handler.per_connection)
                self.event_handler.per_connection.append(0)
                self.event_handler.reads.append(self.reads)
        await super().smtp_EHLO(hostname)

    async def smtp_QUIT(self, arg):
        with self.event_handler.lock:
            self.event_handler.quits += 1
            self.event_handler.changed.notify_all()
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg):
        handler: Recorder = self.event_handler
        rcpts = self.envelope.rcpt_tos if self.envelope is not None else []
        fault = handler.fault(rcpts[0]) if rcpts else None
        if fault is not None and fault.action == "drop:data-command":
            await _drop(self)
        if fault is not None and fault.action == "drop:during-data":
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            await _drop(self)
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def factory(self):
        return FaultySMTP(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """Start/stop a recording SMTP server on 127.0.0.1.

    Other keyword arguments go to aiosmtpd's Controller: `ssl_context` (implicit TLS),
    `tls_context` and `require_starttls`, `authenticator` and `auth_required`, ...
    """

    def __init__(self, port: int | None = None, handler: Recorder | None = None, *, pipelining: bool = False,
                 **controller):
        self.handler = handler or Recorder()
        self.handler.pipelining = pipelining
        self.port = port or free_port()
        self.controller = _Controller(self.handler, hostname="127.0.0.1", port=self.port, decode_data=False,
                                      **controller)

    def __enter__(self) -> "SmtpSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)


def authenticator(server, session, envelope, mechanism, auth_data):
    """A login check for `SmtpSink(authenticator=...)`: user `shop`, password `s3cret`."""
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"shop" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers a failure with 535
