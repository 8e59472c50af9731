"""The smtp provider against a real aiosmtpd server: plain, STARTTLS, implicit TLS, AUTH, failures."""

from __future__ import annotations

import socket
import threading

import pytest
from aiosmtpd.controller import Controller

from engine.config import load_settings
from engine.errors import ConfigError
from engine.providers import Outcome, OutgoingMessage, ProviderContext
from engine.providers.smtp import SmtpOptions, SmtpPool, SmtpProvider, classify, retry_after
from tests.support.smtpd import Fault, Recorder, SmtpSink, authenticator, free_port

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n"


def message(to="b@example.com") -> OutgoingMessage:
    return OutgoingMessage(envelope_from="a@example.com", recipient=to, data=MESSAGE, message_id="<1@x>")






def test_one_connection_is_reused_for_many_messages():
    with SmtpSink() as sink:
        provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=sink.port))
        results = [provider.send(message(f"u{i}@example.com")) for i in range(20)]
        provider.close()
    assert all(r.outcome is Outcome.sent for r in results)
    assert sink.handler.connections == 1 and len(sink.messages) == 20


def test_starttls_with_auth(tls):
    server_ctx, client_ctx = tls
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_ctx, require_starttls=True,
                            authenticator=authenticator, auth_required=True)
    controller.start()
    try:
        good = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, security="starttls", username="shop",
                                        password="s3cret", ssl_context=client_ctx))
        assert good.send(message()).outcome is Outcome.sent
        good.close()
        bad = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, security="starttls", username="shop",
                                       password="wrong", ssl_context=client_ctx, timeout=3))
        result = bad.send(message())
        # A wrong password is the sender's problem, not the recipient's: retried, never "failed".
        assert (result.outcome, result.unavailable, result.code) == (Outcome.temporary, True, 535)
        assert result.error == "authentication failed: 535 5.7.8 Authentication credentials invalid"
        plain = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, security="none"))
        assert plain.send(message()).outcome is not Outcome.sent  # the server requires STARTTLS
    finally:
        controller.stop()
    assert len(handler.messages) == 1


def test_implicit_tls(tls):
    server_ctx, client_ctx = tls
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_ctx)
    controller.start()
    try:
        provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, security="tls", ssl_context=client_ctx))
        assert provider.send(message()).outcome is Outcome.sent
        provider.close()
        untrusting = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, security="tls"))
        result = untrusting.send(message())
        assert result.outcome is Outcome.temporary and "SSL" in result.error  # certificate not trusted
    finally:
        controller.stop()
    assert len(handler.messages) == 1


def test_reply_codes_map_to_outcomes():
    with SmtpSink() as sink:
        sink.handler.replies.update({"perm@example.com": "550 5.1.1 unknown user", "temp@example.com": "452 4.2.2 mailbox full"})
        provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=sink.port))
        perm, temp, ok = (provider.send(message(to)) for to in ("perm@example.com", "temp@example.com", "ok@example.com"))
        provider.close()
    assert (perm.outcome, perm.code) == (Outcome.permanent, 550)
    assert (temp.outcome, temp.code) == (Outcome.temporary, 452)
    assert ok.outcome is Outcome.sent and len(sink.messages) == 1


def test_a_refused_connection_is_temporary_and_the_next_send_reconnects():
    port = free_port()
    provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, timeout=2))
    down = provider.send(message())
    assert down.outcome is Outcome.temporary and "Connection refused" in down.error
    with SmtpSink(port=port) as sink:
        assert provider.send(message()).outcome is Outcome.sent
        provider.close()
    assert len(sink.messages) == 1


def test_an_idle_connection_the_server_dropped_is_reopened_at_once():
    port = free_port()
    provider = SmtpProvider(SmtpOptions(host="127.0.0.1", port=port, timeout=2))
    with SmtpSink(port=port) as first:
        assert provider.send(message()).outcome is Outcome.sent
    with SmtpSink(port=port) as second:  # the old connection is gone with the old server
        assert provider.send(message()).outcome is Outcome.sent
        provider.close()
    assert len(first.messages) == 1 and len(second.messages) == 1


# -- replies and faults, one stage at a time --------------------------------------------------------

def provider_for(sink, **options) -> SmtpProvider:
    return SmtpProvider(SmtpOptions(host="127.0.0.1", port=sink.port, timeout=options.pop("timeout", 2), **options))


@pytest.mark.parametrize("stage", ["rcpt", "data"])
@pytest.mark.parametrize("reply, outcome, throttled", [
    ("421 4.7.0 too many connections, try again in 2 minutes", Outcome.temporary, True),
    ("450 4.2.1 mailbox busy", Outcome.temporary, False),
    ("451 4.7.1 greylisted, please try again in 300 seconds", Outcome.temporary, False),
    ("452 4.2.2 mailbox full", Outcome.temporary, False),
    ("550 5.1.1 no such user", Outcome.permanent, False),
    ("552 5.2.2 mailbox full", Outcome.temporary, False),  # RFC 5321 4.5.3.1.10: treat as 452
    ("554 5.7.1 rejected as spam", Outcome.permanent, False),
])
def test_each_reply_maps_to_its_outcome_at_rcpt_and_at_the_end_of_data(stage, reply, outcome, throttled):
    with SmtpSink() as sink:
        sink.handler.faults["bad@example.com"] = Fault(f"{stage}:{reply}")
        provider = provider_for(sink)
        result = provider.send(message("bad@example.com"))
        after = provider.send(message("good@example.com"))
        provider.close()
    code = int(reply[:3])
    assert (result.outcome, result.code, result.throttled, result.unavailable) == (outcome, code, throttled, False)
    assert result.error == reply
    assert result.retry_after == {421: 120.0, 451: 300.0}.get(code)
    assert after.outcome is Outcome.sent
    assert [m.recipients for m in sink.messages] == [["good@example.com"]]
    # 421 closes the connection; after any other reply the same connection carries on.
    assert sink.handler.connections == (2 if code == 421 else 1)


@pytest.mark.parametrize("text, seconds", [
    ("451 4.7.1 Try again in 5 minutes", 300), ("421 rate limited, retry after 30s", 30),
    ("450 please wait 2 min", 120), ("451 try again later in 1 hour", 3600), ("452 mailbox full", None),
])
def test_try_again_texts_become_retry_after(text, seconds):
    assert retry_after(text) == seconds
    assert classify(int(text[:3]), text[4:]).retry_after == seconds


def test_a_refused_or_silent_server_is_unavailable_so_failover_may_act():
    refused = SmtpProvider(SmtpOptions(host="127.0.0.1", port=free_port(), timeout=1)).send(message())
    assert (refused.outcome, refused.unavailable) == (Outcome.temporary, True)
    with socket.socket() as silent:  # accepts the TCP connection, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        result = SmtpProvider(SmtpOptions(host="127.0.0.1", port=silent.getsockname()[1], timeout=0.5)).send(message())
    assert (result.outcome, result.unavailable) == (Outcome.temporary, True) and "timed out" in result.error


@pytest.mark.parametrize("fault", ["drop:rcpt", "drop:data-command"])
def test_a_drop_before_the_data_is_temporary_and_never_delivered(fault):
    with SmtpSink() as sink:
        sink.handler.faults["x@example.com"] = Fault(fault)
        provider = provider_for(sink)
        result = provider.send(message("x@example.com"))
        provider.close()
    assert result.outcome is Outcome.temporary and not result.unavailable
    assert "before the message was complete" in result.error and sink.messages == []


def test_a_drop_while_the_data_is_written_is_temporary(tmp_path):
    # The server answers 354, reads one line and hangs up; a message bigger than the socket
    # buffers cannot have been written in full, so the final "." never left.
    big = MESSAGE + b"x" * 998 + b"\r\n"
    big = big * (32 * 1024 * 1024 // len(big))
    with SmtpSink() as sink:
        sink.handler.faults["x@example.com"] = Fault("drop:during-data")
        provider = provider_for(sink, timeout=5)
        result = provider.send(OutgoingMessage(envelope_from="a@example.com", recipient="x@example.com", data=big,
                                               message_id="<big@x>"))
        provider.close()
    assert result.outcome is Outcome.temporary and "before the message was complete" in result.error
    assert sink.messages == []


@pytest.mark.parametrize("fault, stored", [("drop:after-dot", 1), ("drop:after-dot-lost", 0), ("drop:during-data", 0),
                                           ("slow:4", 1)])
def test_no_answer_to_the_final_dot_is_uncertain(fault, stored):
    with SmtpSink() as sink:
        sink.handler.faults["x@example.com"] = Fault(fault)
        provider = provider_for(sink, timeout=2)
        result = provider.send(message("x@example.com"))
        after = provider.send(message("y@example.com"))  # a fresh connection takes over
        provider.close()
        received = [m.recipients for m in sink.messages]
    assert result.outcome is Outcome.uncertain and not result.unavailable and "no reply" in result.error
    assert after.outcome is Outcome.sent
    assert received.count(["x@example.com"]) == stored


def test_a_reused_connection_the_server_dropped_is_reopened_without_loss():
    with SmtpSink() as sink:
        sink.handler.faults["first@example.com"] = Fault("drop:after-accept")
        provider = provider_for(sink)
        results = [provider.send(message(to)) for to in ("first@example.com", "second@example.com")]
        provider.close()
    assert [r.outcome for r in results] == [Outcome.sent, Outcome.sent]
    assert [m.recipients for m in sink.messages] == [["first@example.com"], ["second@example.com"]]
    assert sink.handler.connections == 2


def test_a_connection_lost_before_the_data_is_sent_again_once_on_a_fresh_one():
    with SmtpSink() as sink:
        sink.handler.drop_mail = 1
        provider = provider_for(sink)
        once = provider.send(message())
        sink.handler.drop_mail = 2
        twice = provider.send(message())
        provider.close()
    # Nothing of the message had reached the server: the first loss costs a fresh connection...
    assert once.outcome is Outcome.sent
    # ...the second is the message's temporary failure (the sender retries it later).
    assert twice.outcome is Outcome.temporary and not twice.unavailable
    assert "before the message was complete" in twice.error
    assert len(sink.messages) == 1 and sink.handler.connections == 3


# -- the pool -------------------------------------------------------------------------------------

def test_threads_share_at_most_pool_size_connections():
    with SmtpSink() as sink:
        sink.handler.faults.update({f"u{i}@example.com": Fault("slow:0.05") for i in range(40)})
        options = SmtpOptions(host="127.0.0.1", port=sink.port, timeout=5, pool_size=3)
        pool = SmtpPool(options)
        results = []

        def thread(n):
            provider = SmtpProvider(options, pool=pool)
            results.extend(provider.send(message(f"u{n * 8 + i}@example.com")) for i in range(8))
            provider.close()

        threads = [threading.Thread(target=thread, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        open_after = sink.handler.open_now  # QUIT waits for the server to hang up
    assert len(results) == 40 and all(r.outcome is Outcome.sent for r in results)
    assert len(sink.messages) == 40
    # Five threads, three connections: some threads waited, and none opened a fourth.
    assert sink.handler.max_open == 3 and sink.handler.connections == 3
    assert open_after == 0 and sink.handler.quits == 3  # the last instance out closed them all


def test_a_connection_idle_too_long_is_closed_and_the_next_send_opens_a_fresh_one():
    now = [0.0]
    with SmtpSink() as sink:
        options = SmtpOptions(host="127.0.0.1", port=sink.port, timeout=2, idle_seconds=30)
        pool = SmtpPool(options, clock=lambda: now[0])
        provider = SmtpProvider(options, pool=pool)
        provider.send(message())
        now[0] = 29.0
        provider.send(message())
        assert (sink.handler.connections, sink.handler.quits) == (1, 0)
        now[0] = 60.0  # 31 s after the last use
        provider.send(message())
        quits = sink.handler.quits
        provider.close()
    assert quits == 1 and sink.handler.connections == 2 and sink.handler.per_connection == [2, 1]


def test_max_messages_per_connection_quits_and_reopens():
    with SmtpSink() as sink:
        provider = provider_for(sink, max_messages_per_connection=4)
        results = [provider.send(message(f"u{i}@example.com")) for i in range(10)]
        provider.close()
    assert all(r.outcome is Outcome.sent for r in results)
    assert sink.handler.per_connection == [4, 4, 2] and sink.handler.quits == 3


def test_pool_settings_come_from_the_config(tmp_path):
    (tmp_path / "config.toml").write_text('[provider.smtp]\npool_size = 2\nidle_seconds = 5\n'
                                          'max_messages_per_connection = 50\n')
    settings = load_settings(tmp_path / "config.toml", env={}, secret_key="k")
    context = ProviderContext(var_dir=str(tmp_path))
    one = SmtpProvider.from_settings(settings.provider.smtp, context=context)
    two = SmtpProvider.from_settings(settings.provider.smtp, context=context)
    assert one.pool is two.pool  # shared through the factory's context
    assert (one.options.pool_size, one.options.idle_seconds, one.options.max_messages_per_connection) == (2, 5.0, 50)
    (tmp_path / "config.toml").write_text('[provider.smtp]\npool_size = 0\n')
    with pytest.raises(ConfigError, match="config.toml:2.*pool_size"):
        load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def test_an_idle_connection_is_closed_in_the_background_without_another_send():
    with SmtpSink() as sink:
        provider = provider_for(sink, idle_seconds=0.3)
        assert provider.send(message()).outcome is Outcome.sent
        assert sink.handler.open_now == 1
        # No send comes: the pool's own timer closes it, politely, with QUIT. (When exactly is
        # the clock test's business above.)
        assert sink.handler.wait_for(lambda h: h.open_now == 0)
        assert sink.handler.quits == 1
        assert provider.send(message()).outcome is Outcome.sent  # and the next send opens a fresh one
        provider.close()
    assert sink.handler.connections == 2


def test_a_busy_greeting_is_unavailable_with_its_retry_time():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()

        def greet():
            conn, _ = busy.accept()
            with conn:
                conn.sendall(b"421 4.3.2 too busy, try again in 2 minutes\r\n")

        greeter = threading.Thread(target=greet)
        greeter.start()
        result = SmtpProvider(SmtpOptions(host="127.0.0.1", port=busy.getsockname()[1], timeout=2)).send(message())
        greeter.join()
    assert (result.outcome, result.code, result.unavailable, result.retry_after) == (Outcome.temporary, 421, True, 120)
    assert "too busy" in result.error
