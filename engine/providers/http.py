"""The base of the HTTP API providers: one requests.Session per instance, timeouts, shared status mapping."""

from __future__ import annotations

import abc
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Mapping

import requests
from urllib3.exceptions import MaxRetryError

from ..errors import ProviderError
from .base import OutgoingMessage, SendResult

#: Longest error text we keep: the ledger shows it to a marketer, not a debugger.
MAX_ERROR = 300
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class HttpOptions:
    """Where the API is and how long to wait: `connect_timeout` to reach it, `read_timeout` for its answer."""

    base_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


@functools.cache
def user_agent() -> str:
    """`valuemail/<version>`, sent with every API request."""
    try:
        return f"valuemail/{version('valuemail')}"
    except PackageNotFoundError:
        return "valuemail"


def utc_now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(timezone.utc)


def mailbox(name: str, address: str) -> str:
    """`Name <address>` (the name quoted when it holds specials), or the bare address without a name."""
    if not name:
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def tag_value(value: str) -> str:
    """A tag name or value Resend and SES accept: ASCII letters, digits, `_` and `-`, 1 to 256 of them."""
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"


def required_env(env: Mapping[str, str], var: str, *, provider: str, what: str) -> str:
    """The value of environment variable `var`, or a ProviderError naming it."""
    value = env.get(var, "") if var else ""
    if not value:
        if not var:
            raise ProviderError(f"[provider.{provider}]: no environment variable named for the {what}")
        raise ProviderError(f"{provider}: environment variable {var} is not set (the {what}, "
                            f"named in [provider.{provider}])")
    return value


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def short(text: str) -> str:
    """One line, at most MAX_ERROR characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


def body_json(response: requests.Response) -> dict:
    """The response body as a JSON object, or {} when it is not one (an HTML error page, say)."""
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class HttpProvider(abc.ABC):
    """Sends one message per API request; subclasses build the request and read the provider's answers.

    Not thread-safe: the sender makes one instance per worker thread, and each has its own Session
    (and so its own keep-alive connection).
    """

    name = "http"
    #: What to check when the API refuses our credentials (401/403), e.g. "POSTMARK_TOKEN".
    credentials = ""

    def __init__(self, options: HttpOptions, *, now: Callable[[], datetime] = utc_now):
        self.options = options
        self._now = now
        self._session: requests.Session | None = None

    # --- for subclasses -------------------------------------------------------------------------

    @abc.abstractmethod
    def build_request(self, message: OutgoingMessage) -> requests.Request:
        """The API request that sends `message`."""

    def prepare(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """A last look at the exact bytes before they go out (SES signs them here)."""
        return request

    @abc.abstractmethod
    def interpret(self, response: requests.Response) -> SendResult | None:
        """The provider's own reading of a response (success, documented errors); None for the common mapping."""

    def error_text(self, response: requests.Response) -> str:
        """The provider's error code and message from a failed response."""
        return response.text or response.reason or ""

    def retry_after(self, response: requests.Response) -> float | None:
        """Seconds the provider asked us to wait (Retry-After, delta-seconds or HTTP-date)."""
        return retry_after_seconds(response.headers.get("Retry-After"), now=self._response_time(response))

    # --- the shared part --------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """The API endpoint at `path` under the configured base URL."""
        return self.options.base_url.rstrip("/") + path

    def session(self) -> requests.Session:
        """This instance's Session (and keep-alive connection), opened on first use."""
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = user_agent()
            self._session = session
        return self._session

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; network failures and provider errors come back as results."""
        session = self.session()
        try:
            prepared = self.prepare(session.prepare_request(self.build_request(message)))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return SendResult.temporary(f"{self.name}: bad API URL: {exc} (check base_url)", unavailable=True)
        try:
            response = session.send(prepared, timeout=(self.options.connect_timeout, self.options.read_timeout),
                                    allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            return self._network_failure(exc)
        return self.result_for(response)

    def _network_failure(self, exc: requests.exceptions.RequestException) -> SendResult:
        if isinstance(exc, requests.exceptions.ConnectTimeout) or (
                isinstance(exc, requests.exceptions.ConnectionError) and exc.args and isinstance(exc.args[0], MaxRetryError)):
            # Refused, unresolvable, connect timeout, TLS handshake: the request never reached the
            # provider, so another provider (or a later attempt) can safely take the message.
            reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else exc
            return SendResult.temporary(f"{self.name} unreachable: {_describe(reason)}", unavailable=True)
        # A read timeout, a reset or a truncated answer after the request went out: the provider may
        # have accepted the message. Resending could deliver it twice, so it is never resent.
        self.close()
        return SendResult.uncertain(f"{self.name}: no complete answer after the request was sent: {_describe(exc)}")

    def result_for(self, response: requests.Response) -> SendResult:
        """Our result for an API response: the provider's documented mapping first, then the common one."""
        result = self.interpret(response)
        if result is not None:
            return result
        status = response.status_code
        text = short(f"{self.name} HTTP {status}: {self.error_text(response)}")
        if status == 429:
            return SendResult.temporary(text, code=status, retry_after=self.retry_after(response), throttled=True)
        if status in (401, 403):
            return SendResult.temporary(short(f"{self.name} refused our credentials (HTTP {status}), check "
                                              f"{self.credentials}: {self.error_text(response)}"),
                                        code=status, unavailable=True)
        if status >= 500 or status in (404, 408) or 300 <= status < 400:
            # The provider is down, or our base_url/account setup is wrong: not this recipient's fault.
            return SendResult.temporary(text, code=status, retry_after=self.retry_after(response), unavailable=True)
        if 200 <= status < 300:
            return SendResult.ok(None)  # accepted, though the provider named no id
        return SendResult.permanent(text, code=status)

    def _response_time(self, response: requests.Response) -> datetime:
        """The provider's clock from its Date header (an HTTP-date Retry-After is on that clock), else ours."""
        try:
            when = parsedate_to_datetime(response.headers.get("Date", ""))
        except (TypeError, ValueError, IndexError):
            return self._now()
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

    def close(self) -> None:
        """Drop the keep-alive connection; the next send opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _describe(exc: BaseException) -> str:
    inner = exc
    # requests and urllib3 nest their exceptions; the innermost usually says what happened.
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    if isinstance(reason, BaseException):
        inner = reason
    # urllib3 puts the connection object first and the readable text last.
    text = inner.args[-1] if inner.args and isinstance(inner.args[-1], str) else str(inner)
    return short(f"{type(inner).__name__}: {text}")
