"""The smtp provider against a real aiosmtpd server: plain, STARTTLS, implicit TLS, AUTH, failures."""

from __future__ import annotations

import ssl

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from engine.providers import Outcome, OutgoingMessage
from engine.providers.smtp import SmtpOptions, SmtpProvider
from tests.support.smtpd import Recorder, SmtpSink, free_port

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n"


def message(to="b@example.com") -> OutgoingMessage:
    return OutgoingMessage(envelope_from="a@example.com", recipient=to, data=MESSAGE, message_id="<1@x>")


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"shop" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)


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
        assert result.outcome is Outcome.temporary
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
