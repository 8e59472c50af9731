"""A small asyncio SMTP client for the `smtp` provider; unlike aiosmtplib it can pipeline (RFC 2920).

`SmtpConnection.open` connects, reads the greeting, says EHLO, secures the channel (STARTTLS or
implicit TLS) and logs in (AUTH PLAIN or LOGIN). After that the caller writes commands and reads
replies itself, so it decides how many are in flight. Replies are parsed as they arrive: reading
one that is already here costs no wait. Connecting, every wait for a reply and a write that makes
no progress are each bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
from collections import deque
from dataclasses import dataclass

CRLF = b"\r\n"
#: A reply line longer than this is no SMTP server talking (RFC 5321 4.5.3.1.5 allows 512 octets).
_MAX_LINE = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply; the lines of a multi-line reply are joined with newlines."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class SmtpError(Exception):
    """The server refused a step of setting up the connection (greeting, EHLO, STARTTLS)."""

    def __init__(self, reason: Reply | str):
        self.reply = reason if isinstance(reason, Reply) else None
        super().__init__(str(reason))


class AuthenticationError(SmtpError):
    """The server refused our username and password, or offers no way we know to give them."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection, or sent something that is not SMTP."""


def describe(exc: BaseException) -> str:
    """`Type: message` for an error text, in the OS's words for a system error ("Connection refused")."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno and exc.errno > 0:
        # asyncio words a refused connection "Connect call failed (address)"; smtplib did not.
        return f"{type(exc).__name__}: [Errno {exc.errno}] {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {exc}"


def dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, leading dots doubled, then the final "."."""
    crlf = data.count(CRLF)
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:  # a bare CR or LF somewhere
        data = _LINE_END.sub(CRLF, data)
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(CRLF):
        data += CRLF
    return data + b".\r\n"


class _Wire(asyncio.Protocol):
    """The socket side of a connection: replies in, flow control out, and why it ended."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.replies: deque[Reply] = deque()
        self.error: BaseException | None = None  # set once the connection is gone
        self.paused = False  # the transport holds more unsent data than we allowed
        self.closed = False  # the transport is closed for good
        self._buffer = bytearray()
        self._lines: list[str] = []  # of a multi-line reply still arriving
        self._waiter: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if not self._line(bytes(buffer[start:end]).rstrip(b"\r")):
                return
            start = end + 1
        del buffer[:start]
        if len(buffer) > _MAX_LINE:
            self._garbled(b"a reply line longer than 64 KiB")
        self._wake()

    def _line(self, line: bytes) -> bool:
        code, more, text = line[:3], line[3:4], line[4:]
        if not code.isdigit() or more not in (b"", b" ", b"-"):
            self._garbled(line)
            return False
        self._lines.append(text.decode("utf-8", "replace"))
        if more != b"-":
            self.replies.append(Reply(int(code), "\n".join(self._lines)))
            self._lines = []
        return True

    def _garbled(self, line: bytes) -> None:
        self.end(ConnectionClosed(f"not an SMTP reply: {line[:80]!r}"))
        self.transport.abort()

    def eof_received(self) -> bool:
        self.end(ConnectionClosed("the server closed the connection"))
        if self.transport.get_write_buffer_size():
            # Abort rather than close, which would go on writing what is buffered: the caller
            # decides now, from what was written so far, whether the server can have a message.
            self.transport.abort()
        return False  # the transport closes itself (TLS: once it answered the server's close_notify)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.end(exc or ConnectionClosed("the connection was closed"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def end(self, error: BaseException) -> None:
        """The connection is gone (or going) because of `error`; the first reason counts."""
        if self.error is None:
            self.error = error
        self._wake()

    async def changed(self) -> None:
        """Wait for the next reply, room to write, or the end of the connection."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class SmtpConnection:
    """An open, greeted (and secured, logged-in) SMTP connection."""

    def __init__(self, wire: _Wire, host: str, timeout: float):
        self._wire = wire
        self.host = host
        self.timeout = timeout
        self.extensions: dict[str, str] = {}  # from EHLO: keyword (upper case) -> parameters

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float, security: str = "none",
                   ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None,
                   username: str = "", password: str = "") -> "SmtpConnection":
        """Connect, read the greeting, EHLO, STARTTLS or implicit TLS, AUTH; raises when a step fails.

        `local_hostname` None says EHLO with our address literal, e.g. `[192.0.2.1]`.
        """
        loop = asyncio.get_running_loop()
        implicit = ssl_context if security == "tls" else None
        async with _timeout(timeout):
            _, wire = await loop.create_connection(_Wire, host, port, ssl=implicit,
                                                   server_hostname=host if implicit else None)
        conn = cls(wire, host, timeout)
        try:
            greeting = await conn.reply()
            if greeting.code != 220:
                raise SmtpError(greeting)
            name = local_hostname or _address_literal(wire.transport.get_extra_info("sockname"))
            await conn._ehlo(name)
            if security == "starttls":
                await conn._starttls(ssl_context)
                await conn._ehlo(name)
            if username:
                await conn._login(username, password)
        except BaseException:
            conn.abort()
            raise
        return conn

    @property
    def pipelining(self) -> bool:
        """The server offers PIPELINING (RFC 2920)."""
        return "PIPELINING" in self.extensions

    @property
    def size(self) -> bool:
        """The server offers SIZE (RFC 1870), so MAIL may say how big the message is."""
        return "SIZE" in self.extensions

    @property
    def alive(self) -> bool:
        """Nothing has ended the connection yet (as far as we have heard)."""
        return self._wire.error is None

    async def reply(self) -> Reply:
        """The next reply; raises the connection's end, or TimeoutError after `timeout` without one."""
        wire = self._wire
        while not wire.replies:
            if wire.error is not None:
                raise wire.error
            async with _timeout(self.timeout):
                await wire.changed()
        return wire.replies.popleft()

    async def write(self, data: bytes, *, may_remain: int = 0) -> None:
        """Send `data`; return once at most its last `may_remain` bytes are still in our buffer.

        Everything before those is then with the kernel (or the TLS layer): when `data` ends in
        the next message's commands, returning means this message's final "." went out, and an
        exception means it did not. Raises the connection's end, or TimeoutError when nothing
        could be written for `timeout` seconds.
        """
        wire = self._wire
        transport = wire.transport
        if wire.error is not None or transport.is_closing():  # asyncio would drop the data silently
            raise wire.error or ConnectionClosed("the connection is closing")
        transport.write(data)
        if transport.get_write_buffer_size() <= may_remain:
            return
        # Have the transport pause us until at most `may_remain` bytes wait: its resume_writing then
        # says the rest went, even when the connection breaks right after. (asyncio's TLS transport
        # pauses at the high-water mark, its TCP transport only above it.)
        tls = transport.get_extra_info("ssl_object") is not None
        transport.set_write_buffer_limits(high=may_remain + tls, low=may_remain)
        while wire.paused:
            if wire.error is not None:
                raise wire.error
            unsent = transport.get_write_buffer_size()
            try:
                async with _timeout(self.timeout):
                    await wire.changed()
            except TimeoutError:
                if transport.get_write_buffer_size() >= unsent:
                    raise  # not a byte went in `timeout` seconds

    async def command(self, line: bytes) -> Reply:
        """Send one command line (with its CRLF) and read its reply."""
        await self.write(line)
        return await self.reply()

    async def quit(self) -> None:
        """QUIT politely and wait until the server hung up; closed afterwards whatever happened."""
        try:
            await self.command(b"QUIT\r\n")
            await self._ended()
        except (OSError, TimeoutError):
            pass
        finally:
            self.abort()

    async def hang_up(self) -> None:
        """Close without QUIT (the server said 421) and wait until the server has let go of it too."""
        transport = self._wire.transport
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()  # TLS: sends close_notify; the server answers with its own
        try:
            await self._ended()
        except TimeoutError:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (if it is not closed already)."""
        self._wire.end(ConnectionClosed("closed by us"))
        if not self._wire.closed:
            self._wire.transport.abort()

    async def _ended(self) -> None:
        """Wait until the transport is closed (the server hung up, and over TLS said so)."""
        wire = self._wire
        async with _timeout(self.timeout):
            while not wire.closed:
                await wire.changed()

    async def _ehlo(self, name: str) -> None:
        reply = await self.command(f"EHLO {name}\r\n".encode("ascii"))
        if reply.code != 250:
            reply = await self.command(f"HELO {name}\r\n".encode("ascii"))
            if reply.code != 250:
                raise SmtpError(reply)
            self.extensions = {}
            return
        lines = (line.strip().partition(" ") for line in reply.text.split("\n")[1:])
        self.extensions = {keyword.upper(): params for keyword, _, params in lines if keyword}

    async def _starttls(self, context: ssl.SSLContext) -> None:
        if "STARTTLS" not in self.extensions:
            raise SmtpError("the server does not offer STARTTLS")
        reply = await self.command(b"STARTTLS\r\n")
        if reply.code != 220:
            raise SmtpError(reply)
        wire = self._wire
        async with _timeout(self.timeout):
            wire.transport = await asyncio.get_running_loop().start_tls(wire.transport, wire, context,
                                                                        server_hostname=self.host)

    async def _login(self, username: str, password: str) -> None:
        offered = self.extensions.get("AUTH", "").upper().split()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if "PLAIN" in offered:
            reply = await self.command(b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + secret) + CRLF)
        elif "LOGIN" in offered:
            reply = await self.command(b"AUTH LOGIN\r\n")
            for answer in (user, secret):
                if reply.code == 334:
                    reply = await self.command(base64.b64encode(answer) + CRLF)
        else:
            raise AuthenticationError(f"the server offers no AUTH PLAIN or LOGIN (it offers: "
                                      f"{' '.join(offered) or 'no AUTH at all'})")
        if reply.code != 235:
            raise AuthenticationError(reply)


def _address_literal(sockname) -> str:
    """RFC 5321 4.1.3: our address as an EHLO name, for a machine without a dotted name."""
    address = sockname[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


class _timeout:
    """`asyncio.timeout` whose TimeoutError says "timed out" (the error text a delivery keeps)."""

    def __init__(self, seconds: float):
        self._inner = asyncio.timeout(seconds)

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        try:
            return await self._inner.__aexit__(*exc)
        except TimeoutError:
            raise TimeoutError("timed out") from None
