"""Kind opt-outs from the preference centre reach sending: left out of new runs, skipped in queued ones."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine import preferences, privacy
from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import Contact, Delivery
from engine.providers.outbox import OutboxProvider
from engine.runtime import Runtime
from engine.sending.service import count_recipients, prepare_run
from tests.sending.test_send import cli, only_spring_sale
from tests.sending.test_worker import _sender
from tests.support.data import T0, add_contacts

KINDS = ["seasonal_discount", "loyalty_points"]


def _opt_out(db, email: str, kind: str) -> None:
    with session_scope(db) as s:
        contact_id = s.execute(select(Contact.id).where(Contact.email_key == email)).scalar()
        preferences.save_choices(s, contact_id, kinds=KINDS, wanted=[k for k in KINDS if k != kind], language=None,
                                 languages=["en", "nl"], now=T0)


def test_an_opted_out_contact_is_left_out_of_that_kind_only(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 4)
    _opt_out(db, "user1@example.com", "seasonal_discount")
    _opt_out(db, "user2@example.com", "loyalty_points")
    runtime = Runtime(settings=settings, clock=FixedClock(T0))
    runtime.__dict__["engine"] = db
    assert sum(count_recipients(runtime, "spring-sale").values()) == 3
    result = cli(settings, "send", "spring-sale")
    assert result.exit_code == 0, result.output
    with Session(db) as s:
        mailed = sorted(s.execute(select(Delivery.email)).scalars())
    assert mailed == ["user0@example.com", "user2@example.com", "user3@example.com"]


def test_an_opt_out_after_the_ledger_was_filled_skips_the_queued_mail(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 3)
    runtime = Runtime(settings=settings, clock=FixedClock(T0))
    runtime.__dict__["engine"] = db
    prepared = prepare_run(runtime, "spring-sale")
    _opt_out(db, "user1@example.com", "seasonal_discount")
    _sender(settings, db, lambda: OutboxProvider(settings.var_dir / "outbox")).drain([prepared.run_id])
    with Session(db) as s:
        rows = dict(s.execute(select(Delivery.email, Delivery.last_error)).all())
    assert rows["user1@example.com"] == "opted out of this kind of mail"
    assert len(list((settings.var_dir / "outbox").glob("*.eml"))) == 2


def test_resubscribe_is_refused_for_an_erased_contact(db):
    add_contacts(db, 1)
    with session_scope(db) as s:
        privacy.erase(s, 1, now=T0)
    with session_scope(db) as s, pytest.raises(preferences.PreferenceRefused) as refused:
        preferences.resubscribe(s, 1, now=T0)
    assert refused.value.reason == "erased"
