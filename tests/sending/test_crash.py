"""Kill -9 mid-send, then resume: nobody is skipped, and only messages whose outcome was not yet
committed can repeat, at most `bounds.duplicate_bound` of them (bench/crash.py repeats this many times)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.models import Delivery, Run
from engine.sending.bounds import duplicate_bound
from tests.sending.test_send import SEGMENTS, only_spring_sale, smtp_settings
from tests.support.data import add_contacts
from tests.support.smtpd import SmtpSink

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")


def _send(settings, *extra, **kwargs):
    env = {**os.environ, "VALUEMAIL_SECRET_KEY": "test-secret-key"}
    return subprocess.Popen([VALUEMAIL, "--config", settings.source, "send", "spring-sale", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["send", "tick"])
def test_killed_sender_resumes_without_skipping_anyone(project, database_url, db, command):
    only_spring_sale(project)
    n = 400
    add_contacts(db, n)
    with SmtpSink() as sink:
        sink.handler.delay = 0.01  # a slow server, so the kill lands mid-run
        # Two sending processes (the command and one helper): 400 deliveries are 10 batches of 40.
        settings = smtp_settings(project, database_url, sink.port, batch_size=40, commit_every=10, processes=2)
        proc = _send(settings, start_new_session=True)
        deadline = time.monotonic() + 60
        while len(sink.messages) < n // 3:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the sender made no progress"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its helper, as a kill -9 of everything sending
        proc.wait()
        at_kill = len(sink.messages)
        with Session(db) as s:
            claimed = s.execute(select(func.count()).where(Delivery.status == "claimed")).scalar()
            assert s.execute(select(Run.status)).scalar() == "sending"
        assert 0 < claimed, "the kill should leave claimed rows behind"
        sink.handler.delay = 0
        if command == "send":
            resumed = _send(settings)
        else:
            resumed = subprocess.Popen([VALUEMAIL, "--config", settings.source, "tick"], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env={**os.environ, "VALUEMAIL_SECRET_KEY": "test-secret-key"})
        output = resumed.communicate(timeout=120)[0].decode()
        assert resumed.returncode == 0, output
        received = sink.messages
    per_recipient = collections.Counter(m.recipients[0] for m in received)
    assert set(per_recipient) == {f"user{i}@example.com" for i in range(n)}, "nobody is skipped"
    repeats = {r: c for r, c in per_recipient.items() if c > 1}
    bound = duplicate_bound(settings.sending, processes=2)
    assert sum(c - 1 for c in repeats.values()) <= bound, f"only uncommitted messages repeat: {repeats}"
    for recipient in repeats:  # a resend carries the same Message-ID
        ids = {BytesParser(policy=policy.default).parsebytes(m.data)["Message-ID"] for m in received if m.recipients[0] == recipient}
        assert len(ids) == 1
    assert len(received) >= at_kill
    with Session(db) as s:
        assert s.execute(select(func.count()).where(Delivery.status == "sent")).scalar() == n
        assert s.execute(select(Run.status)).scalar() == "finished"
