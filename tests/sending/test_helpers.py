"""Helper sending processes: a big run is drained by several processes, each counted once."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from engine.clock import FixedClock
from engine.models import Delivery, Run
from engine.runtime import Runtime
from engine.sending.helpers import Helpers, helpers_for
from engine.sending.service import prepare_run
from tests.sending.test_send import only_spring_sale, smtp_settings
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")


def test_how_many_helpers_a_drain_starts(project, database_url):
    settings = smtp_settings(project, database_url, 25, batch_size=10, processes=3)
    assert [helpers_for(settings, n) for n in (0, 39, 40, 80, 119, 120, 10_000)] == [0, 0, 1, 2, 2, 2, 2]
    one = smtp_settings(project, database_url, 25, batch_size=10, processes=1)
    assert helpers_for(one, 10_000) == 0


def test_a_helper_process_sends_a_run_and_reports_what_it_sent(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 30)
    with SmtpSink() as sink:
        settings = smtp_settings(project, database_url, sink.port, batch_size=7)
        runtime = Runtime(settings=settings, clock=FixedClock(T0.replace(month=3, day=20)))
        runtime.__dict__["engine"] = db
        run_id = prepare_run(runtime, "spring-sale").run_id
        heard: collections.Counter = collections.Counter()
        helpers = Helpers(settings=settings, clock=runtime.clock, run_ids=[run_id], count=1,
                          on_outcome=lambda run, status, n: heard.update({(run, status): n}))
        assert helpers.wait() == [0]
        received = sink.messages
    assert heard == {(run_id, "sent"): 30}
    assert sorted(m.recipients[0] for m in received) == sorted(f"user{i}@example.com" for i in range(30))
    with Session(db) as s:
        assert {d.status for d in s.execute(select(Delivery)).scalars()} == {"sent"}


def test_send_uses_helper_processes_for_a_big_run(project, database_url, db):
    only_spring_sale(project)
    add_contacts(db, 120)
    with SmtpSink() as sink:
        settings = smtp_settings(project, database_url, sink.port, batch_size=10, processes=2)
        done = subprocess.run([VALUEMAIL, "--config", settings.source, "send", "spring-sale"], capture_output=True,
                              text=True, env={**os.environ, "VALUEMAIL_SECRET_KEY": "test-secret-key"}, timeout=300)
        received = sink.messages
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sending with 2 processes" in done.stderr
    assert "this time: sent 120, failed 0" in done.stdout  # the helper's count is in the summary
    per_id = collections.Counter(m.message_id for m in received)
    assert len(per_id) == 120 and max(per_id.values()) == 1
    with Session(db) as s:
        assert s.execute(select(Run.status)).scalar() == "finished"
        assert {d.message_id for d in s.execute(select(Delivery)).scalars()} == set(per_id)
