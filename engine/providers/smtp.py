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
        try:
            if self._conn is None:
                self._conn = self._connect()
            refused = self._conn.sendmail(message.envelope_from, [message.recipient], message.data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(message.recipient, (550, b"recipient refused"))
            self._reset()
            return classify(code, reply)
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            return SendResult.temporary(f"authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}", code=exc.smtp_code)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            self._reset()
            return classify(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            self.close()
            return classify(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            # The connection is in an unknown state: drop it, reconnect on the next message.
            self.close()
            return SendResult.temporary(f"{type(exc).__name__}: {exc}")
        if refused:
            code, reply = refused.get(message.recipient, (550, b"refused"))
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
