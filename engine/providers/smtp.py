"""The `smtp` provider: pipelined SMTP over a pool of persistent connections.

`send_batch` hands its messages to the pool's event loop (one background thread per pool). The
pool's connections take them from one queue, so a batch is spread over up to `pool_size`
connections, each carrying many messages. When the server offers PIPELINING (RFC 2920) a message
costs one round trip: MAIL, RCPT and DATA go out in one write, and the next message's commands
go out in the same write as this one's final ".".

Every message's progress is tracked (commands out, final "." out), so a lost connection is known
to have happened before the server could have accepted it (safe to send again) or while waiting
for the answer to its final "." (maybe delivered: `uncertain`, never resent).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..config import SmtpSettings, secret_from_env
from .base import OutgoingMessage, ProviderContext, SendResult
from .smtp_client import AuthenticationError, Reply, SmtpConnection, SmtpError, describe, dot_stuffed

log = logging.getLogger(__name__)


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
    reply = exc.reply if isinstance(exc, SmtpError) else None
    if isinstance(exc, AuthenticationError):
        return SendResult.temporary(f"authentication failed: {reply or exc}", code=reply and reply.code,
                                    unavailable=True)
    if reply is not None:
        return SendResult.temporary(f"connecting: {reply}", code=reply.code, retry_after=retry_after(str(reply)),
                                    unavailable=True)
    return SendResult.temporary(f"connecting: {describe(exc)}", unavailable=True)


def _envelope_problem(message: OutgoingMessage) -> str | None:
    """Why an address cannot go into MAIL FROM / RCPT TO as it is (which would also let it inject commands)."""
    for address in (message.envelope_from, message.recipient):
        if not address.isascii() or any(c in address for c in "\r\n<>"):
            return f"cannot be sent over SMTP: {address!r} is not a plain ASCII address"
    return None


class _Batch:
    """The results of one `send_batch`, filled in as its messages finish, in any order."""

    def __init__(self, size: int):
        self.results: list[SendResult | None] = [None] * size
        self.left = size
        self.done = asyncio.get_running_loop().create_future()

    def settle(self, index: int, result: SendResult) -> None:
        self.results[index] = result
        self.left -= 1
        if not self.left:
            self.done.set_result(None)


class _Stage(enum.Enum):
    """How far a message got on the connection carrying it."""

    taken = "taken"  # nothing of it was written yet
    envelope = "envelope"  # MAIL, RCPT and DATA (may have) gone out: the server cannot have it yet
    data = "data"  # its final "." went out: the server may have it


@dataclass(eq=False)
class _Job:
    message: OutgoingMessage
    sign: Callable[[bytes], bytes] | None
    batch: _Batch
    index: int
    stage: _Stage = _Stage.taken
    losses: int = 0  # connections that broke on it before its final "." went out
    payload: bytes = b""  # the DATA section, ending in the final "."
    size: int = 0  # the message's size, for MAIL ... SIZE=

    def prepare(self) -> None:
        """Sign and dot-stuff, once, when a connection first takes the message.

        On the loop rather than in the calling thread: that way it overlaps with the server
        working on the messages already sent, instead of holding up the start of the batch.
        """
        if not self.payload:
            data = self.sign(self.message.data) if self.sign else self.message.data
            self.size = len(data)
            self.payload = dot_stuffed(data)


#: The replies that let MAIL, RCPT and DATA go on.
_ACCEPTED = ((250,), (250, 251), (354,))


class _End(enum.Enum):
    """What becomes of a connection once it stops taking messages."""

    park = "park"  # idle, kept for the next messages
    quit = "quit"  # QUIT: it carried max_messages_per_connection
    hang_up = "hang up"  # the server said 421: close, and let it close its end
    abort = "abort"  # broken, or in a state we cannot trust: drop it


@dataclass(eq=False)
class _Connection:
    client: SmtpConnection
    messages: int = 0  # taken so far, whatever became of them
    inflight: list[_Job] = field(default_factory=list)  # taken and not settled, oldest first
    idle_since: float = 0.0

    def finish(self, job: _Job, result: SendResult) -> None:
        self.inflight.remove(job)
        job.batch.settle(job.index, result)


class SmtpPool:
    """At most `options.pool_size` connections, shared by every instance of one provider factory.

    The connections live on an event loop in one background thread, started when a batch comes
    and ended once no connection is left open. They take messages from one queue: an idle
    connection first, then new ones while messages wait. A connection unused for `idle_seconds`
    is closed with QUIT, so is one that carried `max_messages_per_connection` messages, and when
    the last instance that sent closes, the pool closes every connection with QUIT.
    """

    def __init__(self, options: SmtpOptions, *, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self.clock = clock
        # Shared with the calling threads, under _lock.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0  # calls waiting for the loop
        self._users = 0
        # The loop's own state, only touched on the loop.
        self._queue: deque[_Job] = deque()
        self._idle: list[_Connection] = []
        self._open = 0  # connections open, opening or closing: never more than pool_size
        self._connecting = 0
        self._tasks: set[asyncio.Task] = set()
        self._reaper: asyncio.TimerHandle | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._hostname: str | None = None  # for EHLO; "" once we know this machine has no dotted name

    # --- called from the sending threads ----------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage], *,
             sign: Callable[[bytes], bytes] | None = None) -> list[SendResult]:
        """Send the messages (signed with `sign`) over the pool's connections; one result each, in order."""
        if not messages:
            return []
        return self._call(self._send(messages, sign))

    def join(self) -> None:
        """An instance starts using the pool."""
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        """An instance is done; the last one out closes every connection with QUIT."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0 and self._loop is not None
        if last:
            self._call(self._close_all())

    def _call(self, coro):
        """Run `coro` on the pool's loop (starting one if none runs) and wait for its result."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=_run_forever, args=(self._loop,), name="valuemail-smtp", daemon=True).start()
            loop = self._loop
            self._active += 1
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        finally:
            with self._lock:
                self._active -= 1
                if self._loop is loop:
                    loop.call_soon_threadsafe(self._maybe_stop)

    # --- on the loop --------------------------------------------------------------------------------

    async def _send(self, messages: Sequence[OutgoingMessage], sign) -> list[SendResult]:
        batch = _Batch(len(messages))
        self._queue.extend(_Job(message, sign, batch, i) for i, message in enumerate(messages))
        self._dispatch()
        await batch.done
        return batch.results

    def _dispatch(self) -> None:
        """Put idle connections to work on the queue, and open new ones while messages wait for one."""
        self._close_expired()
        while self._queue and self._idle:
            self._spawn(self._carry(self._idle.pop()))
        while len(self._queue) > self._connecting and self._open < self.options.pool_size:
            self._open += 1
            self._connecting += 1
            self._spawn(self._connect_and_carry())

    async def _connect_and_carry(self) -> None:
        try:
            client = await self._connect()
        except (SmtpError, OSError, TimeoutError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._connecting -= 1
            self._open -= 1
            if not self._open:  # no other connection will take the queue
                self._fail_queue(_connect_failure(exc))
            return
        self._connecting -= 1
        await self._carry(_Connection(client))

    async def _connect(self) -> SmtpConnection:
        o = self.options
        if o.security != "none" and self._ssl_context is None:
            self._ssl_context = o.ssl_context or ssl.create_default_context()
        return await SmtpConnection.open(o.host, o.port, timeout=o.timeout, security=o.security,
                                         ssl_context=self._ssl_context, local_hostname=await self._ehlo_name(),
                                         username=o.username, password=o.password)

    async def _ehlo_name(self) -> str | None:
        """`local_hostname`, else this machine's dotted name (looked up once); None: our address literal."""
        if self.options.local_hostname:
            return self.options.local_hostname
        if self._hostname is None:
            fqdn = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)  # may ask DNS
            self._hostname = fqdn if "." in fqdn else ""
        return self._hostname or None

    async def _carry(self, conn: _Connection) -> None:
        """Send queued messages on `conn` until the queue is empty, or it retires or breaks."""
        try:
            end = await (self._pipelined(conn) if conn.client.pipelining else self._lockstep(conn))
        except (OSError, TimeoutError) as exc:  # the connection broke (ConnectionClosed is an OSError)
            self._lost(conn, exc)
            end = _End.abort
        except Exception as exc:
            log.exception("smtp: unexpected error on a connection to %s", self.options.host)
            self._lost(conn, exc, send_again=False)
            end = _End.abort
        if end is _End.park:
            conn.idle_since = self.clock()
            self._idle.append(conn)
            if self._reaper is None:
                self._reaper = asyncio.get_running_loop().call_later(self.options.idle_seconds, self._reap)
            self._dispatch()  # messages may have come while the last reply was awaited
        else:
            await self._close(conn, end)

    async def _lockstep(self, conn: _Connection) -> _End:
        """One command at a time, each waiting for its reply (the server does not offer PIPELINING)."""
        client = conn.client
        while (job := self._take(conn)) is not None:
            job.stage = _Stage.envelope
            if refusal := await self._envelope(conn, job, pipelined=False):
                if (end := await self._after_refusal(conn, refusal)) is not None:
                    return end
                continue
            await client.write(job.payload)
            job.stage = _Stage.data
            if (end := self._settle(conn, job, await client.reply())) is not None:
                return end
        return self._spent(conn)

    async def _pipelined(self, conn: _Connection) -> _End:
        """MAIL, RCPT and DATA in one write; the next message's go in the same write as each final "."."""
        client = conn.client
        job = await self._start_pipelined(conn)
        while job is not None:
            if refusal := await self._envelope(conn, job, pipelined=True):
                if (end := await self._after_refusal(conn, refusal)) is not None:
                    return end
                job = await self._start_pipelined(conn)
                continue
            following = self._take(conn)
            behind = b"".join(self._commands(client, following)) if following else b""
            await client.write(job.payload + behind, may_remain=len(behind))
            job.stage = _Stage.data
            if following is not None:
                following.stage = _Stage.envelope
            if (end := self._settle(conn, job, await client.reply())) is not None:
                return end
            job = following
        return self._spent(conn)

    async def _start_pipelined(self, conn: _Connection) -> _Job | None:
        """Take the next message and send its MAIL, RCPT and DATA in one write."""
        job = self._take(conn)
        if job is not None:
            job.stage = _Stage.envelope
            await conn.client.write(b"".join(self._commands(conn.client, job)))
        return job

    async def _envelope(self, conn: _Connection, job: _Job, *, pipelined: bool) -> Reply | None:
        """The replies to MAIL, RCPT and DATA (lock-step: each sent after the reply before); None on 354.

        A refused message gets its result here; the refusal is returned.
        """
        client = conn.client
        refusal: Reply | None = None
        for command, accepted in zip(self._commands(client, job), _ACCEPTED):
            if not pipelined:
                await client.write(command)
            reply = await client.reply()
            if reply.code == 421:  # the server is closing the connection: no other reply will come
                refusal = reply
                break
            if reply.code not in accepted and refusal is None:
                refusal = reply
                if not pipelined:
                    break
            elif refusal is not None and reply.code == 354:
                # RFC 2920 3.1: DATA accepted although MAIL or RCPT failed; an empty message ends it.
                conn.finish(job, classify(refusal.code, refusal.text))
                await client.write(b".\r\n")
                await client.reply()
        if refusal is not None and job in conn.inflight:
            conn.finish(job, classify(refusal.code, refusal.text))
        return refusal

    async def _after_refusal(self, conn: _Connection, refusal: Reply) -> _End | None:
        """RSET after a refused MAIL, RCPT or DATA; None when the connection carries on."""
        if refusal.code == 421:
            return self._throttle(conn, refusal)
        reset = await conn.client.command(b"RSET\r\n")
        if reset.code == 421:
            return self._throttle(conn, reset)
        return None if reset.code == 250 else _End.abort

    def _settle(self, conn: _Connection, job: _Job, reply: Reply) -> _End | None:
        """The reply to a message's final "."; None when the connection carries on."""
        if reply.code == 250:
            conn.finish(job, SendResult.ok(job.message.message_id))
            return None
        conn.finish(job, classify(reply.code, reply.text))
        return self._throttle(conn, reply) if reply.code == 421 else None

    def _throttle(self, conn: _Connection, reply: Reply) -> _End:
        """421: the server wants us to slow down; what this connection and the queue still hold is not sent."""
        said = classify(reply.code, reply.text)
        unsent = SendResult.temporary(f"not sent: {said.error}", retry_after=said.retry_after, throttled=True)
        for job in list(conn.inflight):
            conn.finish(job, unsent)
        self._fail_queue(unsent)
        return _End.hang_up

    def _lost(self, conn: _Connection, exc: BaseException, *, send_again: bool = True) -> None:
        """The connection broke under its messages in flight: each gets what the server can have of it.

        Without `send_again` (our own error, which would only happen again) nothing goes back
        in the queue.
        """
        again = []
        for position, job in enumerate(list(conn.inflight)):
            if job.stage is _Stage.data:
                conn.finish(job, SendResult.uncertain(f"no reply to the end of the message: {describe(exc)}"))
                continue
            conn.inflight.remove(job)
            # Only the message the connection broke on counts a loss; those behind it only waited.
            job.losses += position == 0 and job.stage is _Stage.envelope
            if not send_again:
                job.batch.settle(job.index, SendResult.temporary(f"not sent: {describe(exc)}"))
            elif job.losses > 1:
                job.batch.settle(job.index, SendResult.temporary(
                    f"connection lost before the message was complete: {describe(exc)}"))
            else:
                again.append(job)  # the server cannot have any of it: another connection sends it
        self._queue.extendleft(reversed(again))

    def _take(self, conn: _Connection) -> _Job | None:
        """The next queued message for `conn`, unless the queue is empty or the connection has carried its share."""
        limit = self.options.max_messages_per_connection
        while self._queue and not (limit and conn.messages >= limit):
            job = self._queue.popleft()
            try:
                job.prepare()
            except Exception as exc:  # the signer failed on this message: it alone fails
                log.exception("smtp: cannot prepare %s", job.message.message_id)
                job.batch.settle(job.index, SendResult.temporary(f"cannot be prepared for sending: {describe(exc)}"))
                continue
            job.stage = _Stage.taken
            conn.messages += 1
            conn.inflight.append(job)
            return job
        return None

    def _spent(self, conn: _Connection) -> _End:
        """How a connection that took no more messages ends: QUIT once it carried its share."""
        limit = self.options.max_messages_per_connection
        return _End.quit if limit and conn.messages >= limit else _End.park

    @staticmethod
    def _commands(client: SmtpConnection, job: _Job) -> tuple[bytes, bytes, bytes]:
        message = job.message
        size = f" SIZE={job.size}" if client.size else ""
        return (f"MAIL FROM:<{message.envelope_from}>{size}\r\n".encode("ascii"),
                f"RCPT TO:<{message.recipient}>\r\n".encode("ascii"), b"DATA\r\n")

    def _fail_queue(self, result: SendResult) -> None:
        while self._queue:
            job = self._queue.popleft()
            job.batch.settle(job.index, result)

    async def _close(self, conn: _Connection, end: _End) -> None:
        try:
            if end is _End.quit:
                await conn.client.quit()
            elif end is _End.hang_up or conn.client.alive:
                # Dropping a live connection: half-close it and wait (at most `timeout`) for the
                # server to let go too, so it never counts more than pool_size of ours at once.
                await conn.client.hang_up()
            else:
                conn.client.abort()
        finally:
            # Only now is the slot free, so the server never sees more than pool_size connections.
            self._open -= 1
            self._dispatch()

    def _close_expired(self) -> None:
        """QUIT idle connections unused for idle_seconds; forget those the server closed meanwhile."""
        cutoff = self.clock() - self.options.idle_seconds
        keep = []
        for conn in self._idle:
            if not conn.client.alive:
                self._spawn(self._close(conn, _End.abort))
            elif conn.idle_since <= cutoff:
                self._spawn(self._close(conn, _End.quit))
            else:
                keep.append(conn)
        self._idle = keep

    def _reap(self) -> None:
        """The idle timer: close what expired and wait for the next one to."""
        self._reaper = None
        self._close_expired()
        if self._idle:
            due = min(c.idle_since for c in self._idle) + self.options.idle_seconds - self.clock()
            self._reaper = asyncio.get_running_loop().call_later(max(due, 0.0), self._reap)

    async def _close_all(self) -> None:
        """QUIT every connection, once those still busy (retiring, finishing a reply) are done."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._close(conn, _End.quit) for conn in idle))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        """End the loop's thread when it has nothing left: no connection, no message, no caller."""
        if self._open or self._queue or self._tasks:
            return
        with self._lock:
            if self._active:
                return
            self._loop = None  # the next call starts a fresh loop
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        asyncio.get_running_loop().stop()


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:
        loop.close()


class SmtpProvider:
    """Sends over SMTP (STARTTLS or implicit TLS, AUTH) through a shared, pipelining connection pool."""

    name = "smtp"
    sends_mime = True

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
        """Sign (with `[dkim]` keys) and send one message."""
        return self.send_batch([message])[0]

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Sign and send the messages over the pool's connections; one result per message, in order."""
        if not self._joined:
            self.pool.join()
            self._joined = True
        results: list[SendResult | None] = [None] * len(messages)
        going = []
        for i, message in enumerate(messages):
            problem = _envelope_problem(message)
            if problem:
                results[i] = SendResult.permanent(problem)
            else:
                going.append(i)
        for i, result in zip(going, self.pool.send([messages[i] for i in going], sign=self.sign)):
            results[i] = result
        return results

    def close(self) -> None:
        """Leave the pool; the last instance to leave closes its connections."""
        if self._joined:
            self._joined = False
            self.pool.leave()
