"""`send_batch` over pipelined SMTP against real servers on loopback: aiosmtpd and Postfix's smtp-sink.

Every test checks what the server saw or stored, by Message-ID, against the result of each
message: sent once, refused, uncertain (at the server at most once, never sent again), or not
sent at all (temporary, or throttled without an attempt).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from engine.providers import Outcome, OutgoingMessage
from engine.providers.smtp import SmtpOptions, SmtpPool, SmtpProvider
from tests.support.smtpd import Fault, SmtpSink, authenticator, free_port


def message(i: int, *, body: bytes = b"hello\r\n") -> OutgoingMessage:
    """Message number i, to u<i>@example.com, with its own Message-ID."""
    data = (f"From: a@example.com\r\nTo: u{i}@example.com\r\nSubject: number {i}\r\n"
            f"Message-ID: <{i}@test>\r\n\r\n").encode() + body
    return OutgoingMessage(envelope_from="a@example.com", recipient=f"u{i}@example.com", data=data,
                           message_id=f"<{i}@test>")


def provider_for(sink: SmtpSink, **options) -> SmtpProvider:
    options.setdefault("timeout", 5)
    return SmtpProvider(SmtpOptions(host="127.0.0.1", port=sink.port, **options))


def send(sink: SmtpSink, count: int, **options):
    """Send messages 0..count-1 as one batch and close; their results."""
    provider = provider_for(sink, **options)
    try:
        return provider.send_batch([message(i) for i in range(count)])
    finally:
        provider.close()


def at_server(sink: SmtpSink) -> dict[str, int]:
    return sink.handler.count_at_server()




# -- pipelined or lock-step: the EHLO answer decides ----------------------------------------------

def test_with_pipelining_each_message_is_one_write_behind_the_previous_final_dot():
    with SmtpSink(pipelining=True) as sink:
        results = send(sink, 10)
    assert [r.outcome for r in results] == [Outcome.sent] * 10
    assert [r.provider_message_id for r in results] == [f"<{i}@test>" for i in range(10)]
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(10)}
    [reads] = sink.handler.reads
    envelopes = [r for r in reads if b"MAIL FROM:" in r]
    # MAIL, RCPT and DATA of every message came in one read, with SIZE since aiosmtpd offers it...
    assert len(envelopes) == 10
    assert all(b"RCPT TO:" in r and r.endswith(b"DATA\r\n") and re.search(rb"SIZE=\d+", r) for r in envelopes)
    # ...and from the second on, right behind the previous message's final ".": one round trip each.
    assert sum(b"\r\n.\r\nMAIL FROM:" in r for r in envelopes) == 9


def test_without_pipelining_every_command_waits_for_its_reply():
    with SmtpSink(pipelining=False) as sink:
        results = send(sink, 10)
    assert [r.outcome for r in results] == [Outcome.sent] * 10
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(10)}
    [reads] = sink.handler.reads
    commands = [r for r in reads if re.match(rb"(MAIL FROM|RCPT TO|DATA\r\n)", r)]
    assert len(commands) == 30  # MAIL, RCPT, DATA: one read each
    assert not any(b"RCPT TO:" in r for r in reads if b"MAIL FROM:" in r)


def smtp_sink() -> str:
    """The path of Postfix's smtp-sink; the test is skipped without it."""
    binary = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin:/usr/bin")
    if binary is None:
        pytest.skip("Postfix's smtp-sink is not installed (Debian: apt-get install postfix)")
    return binary


def start_smtp_sink(port: int, *options: str, output=subprocess.DEVNULL) -> subprocess.Popen:
    as_root = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    process = subprocess.Popen([smtp_sink(), *as_root, *options, f"127.0.0.1:{port}", "100"], stdout=output,
                               stderr=subprocess.STDOUT)
    _wait_until_listening(port, process)
    return process


def test_postfix_smtp_sink_takes_a_pipelined_batch_of_200(tmp_path):
    port = free_port()
    with open(tmp_path / "counters", "wb") as counters:  # a file: an unread pipe would stall the sink
        sink = start_smtp_sink(port, "-c", output=counters)
    try:
        provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, timeout=10, pool_size=4))
        results = provider.send_batch([message(i, body=b"x" * 76 + b"\r\n") for i in range(200)])
        provider.close()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    output = (tmp_path / "counters").read_text()
    assert [r.outcome for r in results] == [Outcome.sent] * 200, {r.error for r in results}
    # -c prints "sess=N quit=N mesg=N" whenever a session ends, a QUIT is answered or a "." arrives.
    counters = re.findall(r"sess=(\d+) quit=(\d+) mesg=(\d+)", output)
    assert counters and int(counters[-1][2]) == 200, output[-200:]
    assert int(counters[-1][1]) <= 4  # one QUIT per pooled connection


def _wait_until_listening(port: int, process: subprocess.Popen) -> None:
    """Connect until the external server accepts (its start-up gives no other sign)."""
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, "smtp-sink exited at start-up"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# -- refusals and lost connections in the middle of a pipelined batch ------------------------------

def test_a_refused_recipient_inside_a_pipelined_group_fails_that_message_only():
    with SmtpSink(pipelining=True) as sink:
        sink.handler.faults.update({
            "u3@example.com": Fault("rcpt:550 5.1.1 no such user"),
            "u6@example.com": Fault("rcpt:452 4.2.2 mailbox full"),
            "u8@example.com": Fault("data:554 5.7.1 looks like spam"),
        })
        results = send(sink, 10)
    outcomes = {i: (r.outcome, r.code) for i, r in enumerate(results)}
    assert outcomes.pop(3) == (Outcome.permanent, 550)
    assert outcomes.pop(6) == (Outcome.temporary, 452)
    assert outcomes.pop(8) == (Outcome.permanent, 554)
    assert set(outcomes.values()) == {(Outcome.sent, None)}
    assert results[3].error == "550 5.1.1 no such user"
    assert at_server(sink) == {f"<{i}@test>": 1 for i in outcomes}
    # The refused transactions were reset and the connection carried on.
    assert sink.handler.connections == 1
    assert sum(r.count(b"RSET\r\n") for r in sink.handler.reads[0]) == 2


# recipient number -> (fault, outcome, error fragment, copies at the server, RCPTs the server saw)
DROPS = {
    2: (Fault("drop:after-dot"), Outcome.uncertain, "no reply to the end of the message", 1, 1),
    5: (Fault("drop:after-dot-lost"), Outcome.uncertain, "no reply to the end of the message", 0, 1),
    9: (Fault("drop:rcpt", times=1), Outcome.sent, None, 1, 2),
    13: (Fault("drop:data-command"), Outcome.temporary, "connection lost before the message was complete", 0, 2),
    16: (Fault("drop:during-data"), Outcome.uncertain, "no reply to the end of the message", 0, 1),
    18: (Fault("drop:after-accept"), Outcome.sent, None, 1, 1),
}


def test_dropped_connections_with_messages_in_flight_across_the_pool():
    with SmtpSink(pipelining=True) as sink:
        for i, (fault, *_) in DROPS.items():
            sink.handler.faults[f"u{i}@example.com"] = fault
        results = send(sink, 20, pool_size=4)
    copies = at_server(sink)
    for i, result in enumerate(results):
        _, outcome, error, stored, rcpts = DROPS.get(i, (None, Outcome.sent, None, 1, 1))
        assert result.outcome is outcome, (i, result)
        assert copies.get(f"<{i}@test>", 0) == stored, i
        assert sink.handler.attempts[f"u{i}@example.com"] == rcpts, i
        if error:
            assert error in result.error and not result.unavailable, (i, result)
    # The messages pipelined behind a drop were not the server's: they went again, once, elsewhere.
    assert max(copies.values()) == 1 and len(copies) == 17
    assert sink.handler.connections > 4 and sink.handler.max_open <= 4


def test_a_drop_while_a_big_message_is_written_is_not_uncertain():
    # The server hangs up after one line of the data; 32 MB cannot all have been written by
    # then, so the final "." never went: sent again once on a fresh connection, then temporary.
    line = b"x" * 998 + b"\r\n"
    big = message(1, body=line * (32 * 1024 * 1024 // len(line)))
    with SmtpSink(pipelining=True) as sink:
        sink.handler.faults["u1@example.com"] = Fault("drop:during-data")
        provider = provider_for(sink)
        small, result = provider.send_batch([message(0), big])
        provider.close()
    assert small.outcome is Outcome.sent
    assert result.outcome is Outcome.temporary and "before the message was complete" in result.error
    assert at_server(sink) == {"<0@test>": 1} and sink.handler.attempts["u1@example.com"] == 2


THROTTLE = "421 4.7.0 too fast, try again in 30 seconds"


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_421_mid_batch_sends_nothing_after_it(stage):
    # One connection: what was behind the 421'd message, in flight or queued, is not tried.
    with SmtpSink(pipelining=True) as sink:
        sink.handler.faults["u7@example.com"] = Fault(f"{stage}:{THROTTLE}")
        results = send(sink, 20)
    assert [r.outcome for r in results[:7]] == [Outcome.sent] * 7
    throttled = results[7]
    assert (throttled.outcome, throttled.code, throttled.retry_after, throttled.throttled) == \
        (Outcome.temporary, 421, 30, True)
    assert throttled.error == THROTTLE
    for result in results[8:]:
        assert (result.outcome, result.throttled, result.unavailable, result.retry_after) == \
            (Outcome.temporary, True, False, 30)
        assert result.error == f"not sent: {THROTTLE}"
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(7)}
    # A 421 to the "." finds u8's commands pipelined behind it (never its data); a 421 to RCPT, nothing.
    seen = 9 if stage == "data" else 8
    assert sink.handler.attempts.keys() == {f"u{i}@example.com" for i in range(seen)}


def test_a_421_on_one_connection_of_the_pool_throttles_the_rest_of_the_batch():
    with SmtpSink(pipelining=True) as sink:
        sink.handler.faults["u7@example.com"] = Fault(f"rcpt:{THROTTLE}")
        provider = provider_for(sink, pool_size=2)
        results = provider.send_batch([message(i) for i in range(20)])
        copies = at_server(sink)
        sent = {i for i, r in enumerate(results) if r.outcome is Outcome.sent}
        unsent = {i for i, r in enumerate(results) if r.outcome is Outcome.temporary and r.throttled}
        # Messages in flight on the other connection finish; nothing else is started.
        assert sent | unsent == set(range(20)) and 7 in unsent and results[7].code == 421
        assert copies == {f"<{i}@test>": 1 for i in sent}
        # Once the wait is over the sender sends them again; each arrives once.
        sink.handler.faults.clear()
        again = provider.send_batch([message(i) for i in sorted(unsent)])
        provider.close()
    assert [r.outcome for r in again] == [Outcome.sent] * len(unsent)
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(20)}
    assert sink.handler.max_open <= 2


def test_a_server_that_closes_after_421_throttles_the_batch():
    # Postfix's smtp-sink -Q: a 421 and a closed connection, as a real server does it.
    port = free_port()
    sink = start_smtp_sink(port, "-Q", "RCPT")
    try:
        provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, timeout=5, pool_size=2))
        results = provider.send_batch([message(i) for i in range(10)])
        provider.close()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    assert all(r.outcome is Outcome.temporary and r.throttled and not r.unavailable for r in results)
    refused = [r for r in results if r.code == 421]
    assert 1 <= len(refused) <= 2  # the first message of each connection; the rest were not tried
    assert all(r.error.startswith("not sent: 421") for r in results if r.code is None)


# -- TLS, STARTTLS, AUTH --------------------------------------------------------------------------



def test_implicit_tls_pipelines_a_batch_including_a_message_bigger_than_the_socket_buffers(tls):
    server_ctx, client_ctx = tls
    big = message(5, body=(b"y" * 998 + b"\r\n") * 4096)  # 4 MB: written in many goes over TLS
    with SmtpSink(pipelining=True, ssl_context=server_ctx) as sink:
        provider = provider_for(sink, security="tls", ssl_context=client_ctx, pool_size=2)
        batch = [message(i) for i in range(20)]
        batch[5] = big
        results = provider.send_batch(batch)
        provider.close()
    assert [r.outcome for r in results] == [Outcome.sent] * 20
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(20)}
    assert [m.data for m in sink.messages if m.message_id == "<5@test>"] == [big.data]
    assert sum(b"\r\n.\r\nMAIL FROM:" in r for reads in sink.handler.reads for r in reads) > 0


def test_starttls_and_auth_then_a_pipelined_batch(tls):
    server_ctx, client_ctx = tls
    with SmtpSink(pipelining=True, tls_context=server_ctx, require_starttls=True, authenticator=authenticator,
                  auth_required=True) as sink:
        good = send(sink, 20, security="starttls", username="shop", password="s3cret", ssl_context=client_ctx,
                    pool_size=3)
        bad = send(sink, 3, security="starttls", username="shop", password="wrong", ssl_context=client_ctx)
    assert [r.outcome for r in good] == [Outcome.sent] * 20
    # A refused login is the sender's problem: every message temporary, the provider unavailable.
    assert all(r.outcome is Outcome.temporary and r.unavailable and r.code == 535 for r in bad)
    assert bad[0].error.startswith("authentication failed: 535")
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(20)}


def test_no_ssl_context_is_made_for_plain_connections(monkeypatch):
    with SmtpSink(pipelining=True) as sink:
        def refuse(*args, **kwargs):
            raise AssertionError("an SSL context was made for a plain connection")

        monkeypatch.setattr(ssl, "create_default_context", refuse)
        assert [r.outcome for r in send(sink, 10, pool_size=3)] == [Outcome.sent] * 10


def test_one_ssl_context_serves_every_connection_of_a_pool(tls, monkeypatch):
    server_ctx, client_ctx = tls
    made = []

    def counted(*args, **kwargs):
        made.append(args)
        return client_ctx

    with SmtpSink(pipelining=True, ssl_context=server_ctx) as sink:  # (its start-up probe makes one)
        monkeypatch.setattr(ssl, "create_default_context", counted)
        results = send(sink, 12, security="tls", pool_size=3, max_messages_per_connection=2)
    assert [r.outcome for r in results] == [Outcome.sent] * 12
    assert sink.handler.connections >= 6 and len(made) == 1


# -- the pool ---------------------------------------------------------------------------------------

def test_a_batch_is_spread_over_the_connections_while_one_is_held_up():
    with SmtpSink(pipelining=True) as sink:
        held = sink.handler.holds["u0@example.com"] = threading.Event()
        provider = provider_for(sink, pool_size=3)
        results = []
        sender = threading.Thread(target=lambda: results.extend(provider.send_batch([message(i) for i in range(40)])))
        sender.start()
        try:
            # u0's connection waits for the answer to its "." with one more message behind it; the
            # other two connections carry everything else meanwhile.
            assert sink.handler.wait_for(lambda h: len(h.messages) == 39)
        finally:
            held.set()
            sender.join()
        provider.close()
    assert [r.outcome for r in results] == [Outcome.sent] * 40
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(40)}
    assert sink.handler.connections == sink.handler.max_open == 3
    # The held connection carried u0 and the one message behind it; the others, the 38 left.
    assert sorted(sink.handler.per_connection)[0] == 2 and len(sink.handler.per_connection) == 3
    assert sink.handler.quits == 3


def test_pool_size_and_max_messages_per_connection_hold_for_a_pipelined_batch():
    with SmtpSink(pipelining=True) as sink:
        results = send(sink, 50, pool_size=2, max_messages_per_connection=5)
    assert [r.outcome for r in results] == [Outcome.sent] * 50
    # Connections retired with QUIT after 5 messages (the last ones shared the tail); never more
    # than 2 at once, and every one ended with QUIT.
    carried = sink.handler.per_connection
    assert max(carried) == 5 and sum(carried) == 50 and carried.count(5) >= 8
    assert sink.handler.quits == len(carried) and sink.handler.max_open == 2 and sink.handler.open_now == 0


def test_one_pool_serves_batches_from_several_threads_at_once():
    with SmtpSink(pipelining=True) as sink:
        options = SmtpOptions(host="127.0.0.1", port=sink.port, timeout=5, pool_size=2)
        pool = SmtpPool(options)
        results: dict[int, list] = {}

        def batch(n):
            provider = SmtpProvider(options, pool=pool)
            results[n] = provider.send_batch([message(n * 25 + i) for i in range(25)])
            provider.close()

        threads = [threading.Thread(target=batch, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(r.outcome is Outcome.sent for rs in results.values() for r in rs)
    assert [r.provider_message_id for r in results[2]] == [f"<{50 + i}@test>" for i in range(25)]
    assert at_server(sink) == {f"<{i}@test>": 1 for i in range(100)}
    assert sink.handler.max_open <= 2 and sink.handler.open_now == 0


def test_an_idle_pooled_connection_the_server_closed_is_not_used():
    with SmtpSink(pipelining=True) as sink:
        sink.handler.faults["u0@example.com"] = Fault("drop:after-accept")
        provider = provider_for(sink)
        first = provider.send_batch([message(0)])
        assert sink.handler.wait_for(lambda h: h.open_now == 0)  # the server hung up on the idle connection
        second = provider.send_batch([message(i) for i in range(1, 4)])
        provider.close()
    assert [r.outcome for r in first + second] == [Outcome.sent] * 4
    assert sink.handler.connections == 2 and sink.handler.attempts == {f"u{i}@example.com": 1 for i in range(4)}


# -- the message itself -------------------------------------------------------------------------------

def test_dots_and_bare_line_ends_arrive_as_written_and_each_message_is_signed():
    body = b".starts with a dot\r\n..two dots\nbare LF\r\n.\r\nalone\rbare CR\r\nlast line without end"
    with SmtpSink(pipelining=True) as sink:
        provider = provider_for(sink)
        provider.sign = lambda data: b"X-Signed: yes\r\n" + data
        results = provider.send_batch([message(i, body=body) for i in range(3)])
        provider.close()
    assert [r.outcome for r in results] == [Outcome.sent] * 3
    expected = b"X-Signed: yes\r\n" + re.sub(rb"\r\n|\n|\r", b"\r\n", message(0, body=body).data) + b"\r\n"
    assert sink.messages[0].data == expected


def test_an_address_that_would_inject_commands_is_refused_before_the_wire():
    evil = OutgoingMessage(envelope_from="a@example.com", recipient="u1@example.com>\r\nRCPT TO:<u2@example.com",
                           data=message(1).data, message_id="<1@test>")
    with SmtpSink(pipelining=True) as sink:
        provider = provider_for(sink)
        refused, fine = provider.send_batch([evil, message(3)])
        provider.close()
    assert refused.outcome is Outcome.permanent and "not a plain ASCII address" in refused.error
    assert fine.outcome is Outcome.sent and at_server(sink) == {"<3@test>": 1}
    assert "u2@example.com" not in sink.handler.attempts


def test_a_message_the_signer_fails_on_fails_alone():
    def sign(data):
        if b"<3@test>" in data:
            raise ValueError("no DKIM for you")
        return data

    with SmtpSink(pipelining=True) as sink:
        provider = provider_for(sink, pool_size=2)
        provider.sign = sign
        results = provider.send_batch([message(i) for i in range(6)])
        provider.close()
    assert [r.outcome for r in results] == [Outcome.sent] * 3 + [Outcome.temporary] + [Outcome.sent] * 2
    assert results[3].error == "cannot be prepared for sending: ValueError: no DKIM for you"
    assert at_server(sink) == {f"<{i}@test>": 1 for i in (0, 1, 2, 4, 5)}
