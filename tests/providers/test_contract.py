"""The provider contract, the same for every built-in provider: outbox, smtp and the five HTTP APIs.

`send` and `send_batch` (through engine.providers.send_batch, the sender's path, which falls back
to one `send` after another for a provider without its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.config import OutboxSettings, SmtpSettings
from engine.providers import Outcome, ProviderContext, available, send_batch
from tests.conftest import ROOT
from tests.providers.http_support import ENV, HEADERS, HTTP_PROVIDERS, message, messages, provider
from tests.providers.stubs import APIS, Expect, Stub
from tests.support.smtpd import Recorder, SmtpSink, free_port

ALL = ("outbox", "smtp", *HTTP_PROVIDERS)
NETWORKED = ("smtp", *HTTP_PROVIDERS)
#: The recipients the endpoints refuse (the HTTP stubs by their "invalid" local part, the SMTP sink with a 550).
REFUSED = {2: "invalid", 5: "invalid"}


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
        refused = {m.recipient: "550 5.1.1 no such user" for m in messages(8, special=REFUSED) if "invalid" in m.recipient}
        with SmtpSink(handler=Recorder(replies=refused)) as sink:
            yield lambda: build("smtp", SmtpSettings(port=sink.port, timeout=5), tmp_path), lambda: len(sink.messages)
    else:
        with Stub(APIS[name](Expect(headers=dict(HEADERS)))) as stub:
            def received():
                assert stub.problems == []
                return len(stub.received())
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


@pytest.mark.parametrize("name", ALL)
def test_a_batch_gets_one_result_per_message_each_with_its_own_id(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        results = send_batch(p, messages(7))
        p.close()
        assert [r.outcome for r in results] == [Outcome.sent] * 7, [r.error for r in results]
        assert all(r.provider_message_id and r.error is None for r in results)
        assert len({r.provider_message_id for r in results}) == 7
        assert received() == 7


@pytest.mark.parametrize("name", NETWORKED)
def test_a_refused_recipient_fails_only_its_own_message_and_in_its_place(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        results = send_batch(p, messages(8, special=REFUSED))
        p.close()
        received()  # the requests were all as documented
    assert [r.outcome for r in results] == [Outcome.permanent if i in REFUSED else Outcome.sent for i in range(8)], [
        r.error for r in results]
    assert all(results[i].error and not results[i].unavailable for i in REFUSED)


@pytest.mark.parametrize("name", ALL)
def test_an_empty_batch_sends_nothing(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        assert send_batch(p, []) == []
        p.close()
        assert received() == 0


@pytest.mark.parametrize("name", NETWORKED)
def test_an_unreachable_endpoint_fails_the_whole_batch_temporary_and_unavailable(name, tmp_path):
    p = unreachable(name, tmp_path)
    results = send_batch(p, messages(5))
    p.close()
    assert len(results) == 5
    assert all(r.outcome is Outcome.temporary and r.unavailable and not r.throttled for r in results), results


@pytest.mark.parametrize("name", ALL)
def test_send_and_send_batch_mix_and_work_again_after_close(name, tmp_path):
    with endpoint(name, tmp_path) as (make, received):
        p = make()
        first = send_batch(p, messages(3))
        alone = p.send(message("solo@example.net", delivery=99))
        p.close()
        p.close()  # closing twice is harmless
        again = send_batch(p, messages(3, start=2000))
        p.close()
        assert [r.outcome for r in first + [alone] + again] == [Outcome.sent] * 7
        assert received() == 7
