"""The `smtp` provider: a pool of persistent connections shared by the sending threads.

Each transaction is done step by step (MAIL, RCPT, DATA, the data, the final ".") so that a
failure is known to have happened before the server could have accepted the message (safe to
retry) or while waiting for the answer to the final "." (maybe delivered: `uncertain`).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..config import SmtpSettings, secret_from_env
from .base import OutgoingMessage, ProviderContext, SendResult

CRLF = b"\r\n"


@dataclass(frozen=True)
class SmtpOptions:
    host: str
    port: int
    security: str = "none"  # none | starttls | tls
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    local_hostname: str | None = None
    ssl_context: ssl.SSLContext | None = None
    pool_size: int = 1
    idle_seconds: float = 30.0
    max_messages_per_connection: int = 0  # 0: no limit


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {text}".strip()


# "try again in 5 minutes", "retry after 30 s", "please wait 2 min", "try again later in 1 hour"
_RETRY_AFTER = re.compile(
    r"(?:again|retry|wait|after)\D{0,20}?(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def retry_after(text: str) -> float | None:
    """Seconds from a "try again in N seconds/minutes/hours" style reply text, if it has one."""
    match = _RETRY_AFTER.search(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]


def classify(code: int, message: bytes | str) -> SendResult:
    """Map an SMTP reply to our outcome.

    5xx is permanent except 552, which RFC 5321 (4.5.3.1.10) says to treat as the temporary 452;
    421 means the server is closing the connection because it wants us to slow down.
    """
    text = _reply(code, message)
    if 500 <= code <= 599 and code != 552:
        return SendResult.permanent(text, code=code)
    return SendResult.temporary(text, code=code, retry_after=retry_after(text), throttled=code == 421)


def _connect_failure(exc: BaseException) -> SendResult:
    """Opening a connection failed: nothing was sent, and the server (not the recipient) is the problem."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SendResult.temporary(f"authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}",
                                    code=exc.smtp_code, unavailable=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = _reply(exc.smtp_code, exc.smtp_error)
        return SendResult.temporary(f"connecting: {text}", code=exc.smtp_code, retry_after=retry_after(text),
                                    unavailable=True)
    return SendResult.temporary(f"connecting: {type(exc).__name__}: {exc}", unavailable=True)


class _BeforeData(Exception):
    """The connection failed before the final "." went out: the server cannot have the message."""

    def describe(self) -> str:
        cause = self.args[0]
        return f"connection lost before the message was complete: {type(cause).__name__}: {cause}"


@dataclass(eq=False)
class _Connection:
    smtp: smtplib.SMTP
    last_used: float
    messages: int = 0


@dataclass(eq=False)
class SmtpPool:
    """At most `options.pool_size` connections, shared by every instance of one provider factory.

    A send checks a connection out and back in; a thread waits while all are busy. A background
    thread closes connections idle longer than `idle_seconds`, and one that carried
    `max_messages_per_connection` messages is closed with QUIT. When the last instance that sent
    closes, the pool closes every connection.
    """

    options: SmtpOptions
    clock: Callable[[], float] = time.monotonic
    _slots: threading.BoundedSemaphore = field(init=False)
    _idle: list[_Connection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _reaper: threading.Thread | None = None
    _users: int = 0

    def __post_init__(self):
        self._slots = threading.BoundedSemaphore(self.options.pool_size)

    def checkout(self) -> _Connection | None:
        """Wait for a free slot; a pooled connection, or None when the caller must open one."""
        self._slots.acquire()
        with self._lock:
            stale = self._expire()
            conn = self._idle.pop() if self._idle else None
        _quit_all(stale)
        return conn

    def checkin(self, conn: _Connection | None) -> None:
        """Give the slot back, keeping `conn` for reuse unless it has carried its quota."""
        limit = self.options.max_messages_per_connection
        if conn is not None and limit and conn.messages >= limit:
            _quit(conn)  # before the slot is free, so the server never sees more than pool_size
        elif conn is not None:
            conn.last_used = self.clock()
            with self._lock:
                self._idle.append(conn)
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap, name="valuemail-smtp-idle", daemon=True)
                    self._reaper.start()
        self._slots.release()

    def open(self) -> _Connection:
        """A new connection, greeted, secured and logged in."""
        o = self.options
        context = o.ssl_context or ssl.create_default_context()
        if o.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(o.host, o.port, timeout=o.timeout,
                                                  local_hostname=o.local_hostname, context=context)
        else:
            smtp = smtplib.SMTP(o.host, o.port, timeout=o.timeout, local_hostname=o.local_hostname)
        try:
            smtp.ehlo()
            if o.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if o.username:
                smtp.login(o.username, o.password)
        except BaseException:
            smtp.close()
            raise
        return _Connection(smtp, last_used=self.clock())

    def join(self) -> None:
        """An instance starts using the pool."""
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        """An instance is done; the last one out closes every pooled connection."""
        with self._lock:
            self._users -= 1
            idle, self._idle = (self._idle, []) if self._users <= 0 else ([], self._idle)
        self._wake.set()
        _quit_all(idle)

    def _reap(self) -> None:
        """Close connections as they pass `idle_seconds` unused; ends when none is left idle."""
        while True:
            with self._lock:
                stale = self._expire()
                if not self._idle:
                    self._reaper = None
                    break
                wait = min(c.last_used for c in self._idle) + self.options.idle_seconds - self.clock()
            _quit_all(stale)
            self._wake.wait(max(wait, 0.01))
            self._wake.clear()
        _quit_all(stale)

    def _expire(self) -> list[_Connection]:
        """Remove (and return, to be closed outside the lock) connections idle too long."""
        cutoff = self.clock() - self.options.idle_seconds
        stale = [c for c in self._idle if c.last_used <= cutoff]
        if stale:
            self._idle = [c for c in self._idle if c.last_used > cutoff]
        return stale


def _quit_all(conns: list[_Connection]) -> None:
    for conn in conns:
        _quit(conn)


def _quit(conn: _Connection) -> None:
    try:
        conn.smtp.quit()
    except (smtplib.SMTPException, OSError):
        conn.smtp.close()


class SmtpProvider:
    """Sends over SMTP (STARTTLS or implicit TLS, AUTH) through a shared connection pool."""

    name = "smtp"

    def __init__(self, options: SmtpOptions, *, pool: SmtpPool | None = None,
                 sign: Callable[[bytes], bytes] | None = None):
        self.options = options
        self.pool = pool or SmtpPool(options)
        self.sign = sign
        self._joined = False

    @classmethod
    def from_settings(cls, settings: SmtpSettings, *, context: ProviderContext) -> "SmtpProvider":
        """Build from `[provider.smtp]`; the password comes from the environment variable it names."""
        password = secret_from_env(settings.password_env, env=context.env or None)
        options = SmtpOptions(
            host=settings.host, port=settings.port, security=settings.security, username=settings.username,
            password=password, timeout=settings.timeout, local_hostname=settings.local_hostname or None,
            pool_size=settings.pool_size, idle_seconds=settings.idle_seconds,
            max_messages_per_connection=settings.max_messages_per_connection,
        )
        pool = context.shared("smtp.pool", lambda: SmtpPool(options))
        return cls(options, pool=pool, sign=context.dkim.sign if context.dkim else None)

    def send(self, message: OutgoingMessage) -> SendResult:
        """Sign (with `[dkim]` keys) and send one message on a pooled connection."""
        if not self._joined:
            self.pool.join()
            self._joined = True
        data = self.sign(message.data) if self.sign else message.data
        conn = self.pool.checkout()
        try:
            while True:
                reused = conn is not None
                if conn is None:
                    try:
                        conn = self.pool.open()
                    except (smtplib.SMTPException, OSError) as exc:
                        return _connect_failure(exc)
                conn.messages += 1
                try:
                    result, keep = self._transaction(conn.smtp, message, data)
                except _BeforeData as exc:
                    conn.smtp.close()
                    conn = None
                    if reused:
                        # The server dropped the connection while it sat idle; nothing of this
                        # message reached it, so a fresh connection may try straight away.
                        continue
                    return SendResult.temporary(exc.describe())
                except BaseException:
                    # Never give a connection in the middle of a transaction back to the pool.
                    conn.smtp.close()
                    conn = None
                    raise
                if not keep:
                    conn.smtp.close()
                    conn = None
                return result
        finally:
            self.pool.checkin(conn)

    def _transaction(self, smtp: smtplib.SMTP, message: OutgoingMessage, data: bytes) -> tuple[SendResult, bool]:
        """MAIL, RCPT, DATA by hand; returns the result and whether the connection is still usable."""
        try:
            options = ["SIZE=%d" % len(data)] if smtp.has_extn("size") else []
            code, reply = smtp.mail(message.envelope_from, options)
            if code == 250:
                code, reply = smtp.rcpt(message.recipient)
            if code in (250, 251):
                code, reply = smtp.docmd("DATA")
            if code != 354:
                return classify(code, reply), code != 421 and self._reset(smtp)
            smtp.send(_dot_stuffed(data) + b"." + CRLF)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _BeforeData(exc) from exc
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The whole message went out; the answer did not come back. The server may have
            # taken it, so it must not be resent automatically.
            return SendResult.uncertain(f"no reply to the end of the message: {type(exc).__name__}: {exc}"), False
        if code == 250:
            return SendResult.ok(message.message_id), True
        return classify(code, reply), code != 421

    @staticmethod
    def _reset(smtp: smtplib.SMTP) -> bool:
        """RSET after a refused MAIL, RCPT or DATA; False when the connection is no longer usable."""
        try:
            return smtp.rset()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def close(self) -> None:
        """Leave the pool; the last instance to leave closes its connections."""
        if self._joined:
            self._joined = False
            self.pool.leave()


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, leading dots doubled, ending in CRLF."""
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", CRLF, data)
    data = re.sub(rb"(?m)^\.", b"..", data)
    return data if data.endswith(CRLF) else data + CRLF
