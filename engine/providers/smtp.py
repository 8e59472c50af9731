"""The `smtp` provider: one persistent connection, reused across messages."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from ..config import SmtpSettings, secret_from_env
from .base import OutgoingMessage, ProviderContext, SendResult


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


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {text}".strip()


class _BeforeData(Exception):
    """The connection failed before any message data was sent."""

    def describe(self) -> str:
        cause = self.args[0]
        return f"{type(cause).__name__}: {cause}"


def _connect_failure(exc: BaseException) -> SendResult:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SendResult.temporary(f"authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}", code=exc.smtp_code)
    if isinstance(exc, smtplib.SMTPResponseException):
        return classify(exc.smtp_code, exc.smtp_error)
    return SendResult.temporary(f"{type(exc).__name__}: {exc}")


def classify(code: int, message: bytes | str) -> SendResult:
    """Map an SMTP reply code to our outcome: 5xx permanent, 4xx (and anything else) temporary."""
    if 500 <= code <= 599:
        return SendResult.permanent(_reply(code, message), code=code)
    return SendResult.temporary(_reply(code, message), code=code)


class SmtpProvider:
    """Sends over SMTP with STARTTLS or implicit TLS and AUTH; reconnects lazily after a failure."""

    name = "smtp"

    def __init__(self, options: SmtpOptions):
        self.options = options
        self._conn: smtplib.SMTP | None = None

    @classmethod
    def from_settings(cls, settings: SmtpSettings, *, context: ProviderContext) -> "SmtpProvider":
        """Build from `[provider.smtp]`; the password comes from the environment variable it names."""
        password = secret_from_env(settings.password_env, env=context.env or None)
        return cls(SmtpOptions(
            host=settings.host, port=settings.port, security=settings.security, username=settings.username,
            password=password, timeout=settings.timeout, local_hostname=settings.local_hostname or None,
        ))

    def _connect(self) -> smtplib.SMTP:
        o = self.options
        context = o.ssl_context or ssl.create_default_context()
        if o.security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(o.host, o.port, timeout=o.timeout,
                                                  local_hostname=o.local_hostname, context=context)
        else:
            conn = smtplib.SMTP(o.host, o.port, timeout=o.timeout, local_hostname=o.local_hostname)
        try:
            conn.ehlo()
            if o.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if o.username:
                conn.login(o.username, o.password)
        except BaseException:
            conn.close()
            raise
        return conn

    def send(self, message: OutgoingMessage) -> SendResult:
        reused = self._conn is not None
        try:
            if self._conn is None:
                self._conn = self._connect()
            return self._transaction(self._conn, message)
        except _BeforeData as exc:
            self.close()
            if reused:
                # The server dropped an idle connection before we sent any data: nothing can have
                # been delivered, so reconnect once and try again straight away.
                try:
                    self._conn = self._connect()
                    return self._transaction(self._conn, message)
                except _BeforeData as again:
                    self.close()
                    return SendResult.temporary(again.describe())
                except (smtplib.SMTPException, OSError) as again:
                    self.close()
                    return _connect_failure(again)
            return SendResult.temporary(exc.describe())
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            return _connect_failure(exc)

    def _transaction(self, conn: smtplib.SMTP, message: OutgoingMessage) -> SendResult:
        """MAIL, RCPT, DATA step by step, so a failure is known to be before or after the data."""
        try:
            code, reply = conn.mail(message.envelope_from, ["SIZE=%d" % len(message.data)] if conn.has_extn("size") else [])
            if code != 250:
                self._reset()
                return classify(code, reply)
            code, reply = conn.rcpt(message.recipient)
            if code not in (250, 251):
                self._reset()
                return classify(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _BeforeData(exc) from exc
        try:
            code, reply = conn.data(message.data)
        except smtplib.SMTPDataError as exc:
            self._reset()
            return classify(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # After DATA the server may or may not have taken the message: report it as temporary
            # (a retry may duplicate it; the README lists this case).
            self.close()
            return SendResult.temporary(f"connection lost during DATA: {type(exc).__name__}: {exc}")
        if code != 250:
            return classify(code, reply)
        return SendResult.ok(message.message_id)

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
