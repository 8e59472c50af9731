"""The provider contract, the same for every built-in provider: outbox, smtp and the five HTTP APIs."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.config import OutboxSettings, SmtpSettings
from engine.providers import Outcome, ProviderContext, available
from tests.conftest import ROOT
from tests.providers.http_support import ENV, HEADERS, HTTP_PROVIDERS, message, provider
from tests.providers.stubs import APIS, Expect, Stub
from tests.support.smtpd import SmtpSink, free_port

ALL = ("outbox", "smtp", *HTTP_PROVIDERS)
NETWORKED = ("smtp", *HTTP_PROVIDERS)


def build(name: str, settings, tmp_path: Path):
    """A provider made the way provider_factory makes it: entry point, then from_settings."""
    return available()[name].load().from_settings(settings, context=ProviderContext(var_dir=str(tmp_path), env=ENV))


@contextmanager
def endpoint(name: str, tmp_path: Path):
    """A working endpoint for `name`: yields (make a provider, how many messages it received)."""
    if name == "outbox":
        yield (lambda: build("outbox", OutboxSettings(), tmp_path),
               lambda: len(list((tmp_path / "outbox").glob("*.eml"))))
    elif name == "smtp":
        with SmtpSink() as sink:
            yield lambda: build("smtp", SmtpSettings(port=sink.port, timeout=5), tmp_path), lambda: len(sink.messages)
    else:
        with Stub(APIS[name](Expect(headers=dict(HEADERS)))) as stub:
            def received():
                assert stub.problems == []
                return len(stub.seen)
            yield lambda: provider(name, stub.url), received


def unreachable(name: str, tmp_path: Path):
    """A provider pointed at a loopback port where nothing listens."""
    port = free_port()
    if name == "smtp":
        return build("smtp", SmtpSettings(port=port, timeout=5), tmp_path)
    return provider(name, f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("name", ALL)
def test_a_message_is_accepted_with_an_id(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        assert p.name == name
        result = p.send(message())
        p.close()
        assert result.outcome is Outcome.sent, result.error
        assert result.provider_message_id and result.error is None
        assert received() == 1


@pytest.mark.parametrize("name", NETWORKED)
def test_an_unreachable_endpoint_is_temporary_and_unavailable(name, tmp_path):
    p = unreachable(name, tmp_path)
    result = p.send(message())
    p.close()
    assert result.outcome is Outcome.temporary and result.unavailable and not result.throttled, result


def test_an_unwritable_outbox_is_temporary(tmp_path):
    # The outbox's "unreachable endpoint": its file cannot be written (a directory is in the way;
    # permissions would not stop a test running as root).
    sent = message()
    (tmp_path / "outbox" / f".{sent.message_id.strip('<>')}.{os.getpid()}.tmp").mkdir(parents=True)
    result = build("outbox", OutboxSettings(), tmp_path).send(sent)
    assert result.outcome is Outcome.temporary and "cannot write" in result.error


@pytest.mark.parametrize("name", ALL)
def test_close_then_send_again_works(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        first = p.send(message(delivery=1))
        p.close()
        p.close()  # closing twice is harmless
        second = p.send(message("bob@example.net", delivery=2))
        p.close()
        assert (first.outcome, second.outcome) == (Outcome.sent, Outcome.sent)
        assert received() == 2


@pytest.mark.parametrize("name", ALL)
def test_the_provider_module_imports_neither_flask_nor_the_database(name):
    module = available()[name].value.split(":")[0]
    code = (f"import sys, {module}\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'sqlmodel'))\n"
            "print(','.join(bad))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
