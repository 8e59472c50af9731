"""The base of the HTTP API providers: a keep-alive connection pool, requests in flight, shared status mapping."""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Mapping, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError

from ..errors import ProviderError
from .base import OutgoingMessage, SendResult

log = logging.getLogger(__name__)

#: Longest error text we keep: the ledger shows it to a marketer, not a debugger.
MAX_ERROR = 300
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class HttpOptions:
    """Where the API is, how long to wait for it, and how many requests may be in flight at once."""

    base_url: str
    connect_timeout: float = 10.0  # seconds to reach the API (nothing sent yet)
    read_timeout: float = 30.0  # seconds to wait for its answer once the request went out
    concurrency: int = 4  # `[sending] concurrency`: requests in flight at once in send_batch


def http_options(settings, context, *, base_url: str | None = None) -> HttpOptions:
    """HttpOptions from a provider's settings section (URL, timeouts) and its context (concurrency)."""
    return HttpOptions(base_url or settings.base_url, settings.connect_timeout, settings.read_timeout,
                       context.concurrency)


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


class _Halt:
    """The first answer of a batch saying the provider takes nothing now: throttled, down or refusing us."""

    def __init__(self):
        self.result: SendResult | None = None
        self._lock = threading.Lock()

    def note(self, results: list[SendResult]) -> None:
        for result in results:
            if result.throttled or result.unavailable:
                with self._lock:
                    if self.result is None:
                        self.result = dataclasses.replace(result, error=short(f"not sent: {result.error}"))
                return


class HttpProvider(abc.ABC):
    """Sends through an HTTP API; subclasses build the requests and read the provider's answers.

    `send_batch` keeps up to `options.concurrency` requests in flight on its own worker threads,
    over one Session whose pool keeps that many keep-alive connections. A provider with a batch
    endpoint (`batch_size` > 1) puts up to `batch_size` messages in one request; the others send
    one request per message. `send` is one request on the caller's thread. One caller at a time.
    """

    name = "http"
    sends_mime = False  # the API's JSON or form fields (SES sends the built MIME)
    #: What to check when the API refuses our credentials (401/403), e.g. "POSTMARK_TOKEN".
    credentials = ""
    #: Most messages one request may carry (the batch endpoint's limit); 1: one request per message.
    batch_size = 1

    def __init__(self, options: HttpOptions, *, now: Callable[[], datetime] = utc_now):
        self.options = options
        self._now = now
        self._session: requests.Session | None = None
        self._workers: ThreadPoolExecutor | None = None

    # --- for subclasses -------------------------------------------------------------------------

    @abc.abstractmethod
    def build_request(self, message: OutgoingMessage) -> requests.Request:
        """The API request that sends `message` alone."""

    def build_batch_request(self, messages: Sequence[OutgoingMessage]) -> requests.Request:
        """The batch endpoint's request for up to `batch_size` messages (providers with one)."""
        # Called only when a subclass sets batch_size > 1, which it does together with this method.
        raise TypeError(f"{type(self).__name__} sets batch_size = {self.batch_size} but has no build_batch_request")

    def prepare(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """A last look at the exact bytes before they go out (SES signs them here)."""
        return request

    @abc.abstractmethod
    def interpret(self, response: requests.Response) -> SendResult | None:
        """The provider's own reading of a response (success, documented errors); None for the common mapping."""

    def batch_results(self, response: requests.Response, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message of a batch request; by default the request's own result for each."""
        return [self.result_for(response)] * len(messages)

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
        """This instance's Session, opened on first use; its pool keeps `concurrency` keep-alive connections."""
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = user_agent()
            # Every request goes to one host: its proxy from the environment (HTTPS_PROXY, NO_PROXY)
            # is looked up once here, not at each request, and ~/.netrc is not read (its credentials
            # would replace the API's own Authorization header).
            session.proxies = requests.utils.resolve_proxies(requests.Request("POST", self.options.base_url), {})
            session.trust_env = False
            # No retries (the default): a request that may have gone out is never sent again by us.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.options.concurrency)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
        return self._session

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message in one request; network failures and provider errors come back as results."""
        answer = self._exchange(self.session(), self.build_request(message))
        return answer if isinstance(answer, SendResult) else self.result_for(answer)

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send many messages, many requests at once; one result per message, in order, never raising."""
        messages = list(messages)
        if not messages:
            return []
        session = self.session()
        if self._workers is None:
            self._workers = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix=f"{self.name}-http")
        size = self.batch_size
        chunks = [messages[i:i + size] for i in range(0, len(messages), size)]
        halt = _Halt()
        futures = [self._workers.submit(self._send_chunk, session, chunk, halt) for chunk in chunks]
        return [result for future in futures for result in future.result()]

    def _send_chunk(self, session: requests.Session, chunk: list[OutgoingMessage], halt: _Halt) -> list[SendResult]:
        """One request for `chunk` (on a worker thread), unless an earlier answer halted the batch."""
        if halt.result is not None:
            # Throttled, down or refusing us: the rest of the batch is not tried, so it is safe to
            # requeue (throttled) or hand to a fallback provider (unavailable).
            return [halt.result] * len(chunk)
        answered = False
        try:
            request = self.build_request(chunk[0]) if self.batch_size == 1 else self.build_batch_request(chunk)
            answer = self._exchange(session, request)
            if isinstance(answer, SendResult):
                results = [answer] * len(chunk)
            else:
                answered = True
                results = [self.result_for(answer)] if self.batch_size == 1 else self.batch_results(answer, chunk)
        except Exception as exc:  # a bug must not lose the results of the batch's other requests
            log.exception("%s: sending %d message(s) failed", self.name, len(chunk))
            text = short(f"{self.name}: internal error: {type(exc).__name__}: {exc}")
            # After an answer came, the provider may have taken the messages: never resend them.
            results = [SendResult.uncertain(text) if answered else SendResult.temporary(text)] * len(chunk)
        halt.note(results)
        return results

    def _exchange(self, session: requests.Session, request: requests.Request) -> requests.Response | SendResult:
        """The response to one API request, or the result for a request that got no answer."""
        try:
            prepared = self.prepare(session.prepare_request(request))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return SendResult.temporary(f"{self.name}: bad API URL: {exc} (check base_url)", unavailable=True)
        try:
            return session.send(prepared, timeout=(self.options.connect_timeout, self.options.read_timeout),
                                allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            return self._network_failure(exc)

    def _network_failure(self, exc: requests.exceptions.RequestException) -> SendResult:
        if isinstance(exc, requests.exceptions.ConnectTimeout) or (
                isinstance(exc, requests.exceptions.ConnectionError) and exc.args and isinstance(exc.args[0], MaxRetryError)):
            # Refused, unresolvable, connect timeout, TLS handshake: the request never reached the
            # provider, so another provider (or a later attempt) can safely take the message.
            reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else exc
            return SendResult.temporary(f"{self.name} unreachable: {_describe(reason)}", unavailable=True)
        # A read timeout, a reset or a truncated answer after the request went out: the provider may
        # have accepted the message. Resending could deliver it twice, so it is never resent.
        # (urllib3 has already discarded that connection; the pool's others are fine.)
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
        """Stop the worker threads and drop the keep-alive connections; the next send opens new ones."""
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=True)
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
