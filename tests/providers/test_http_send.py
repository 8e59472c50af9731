"""`valuemail send` end to end through each HTTP provider's stub: the ledger records provider and ids."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.models import Delivery
from tests.conftest import write_settings
from tests.providers.http_support import ENV, HTTP_PROVIDERS
from tests.providers.stubs import APIS, Expect, Stub
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_campaign_goes_out_through_the_provider_and_the_ledger_records_its_ids(name, project, database_url, db,
                                                                                   settings):
    only_spring_sale(project)
    add_contacts(db, 4)
    add_contacts(db, 1, start=99, email="invalid99@example.com", email_key="invalid99@example.com")
    add_contacts(db, 1, start=98, email="hang98@example.com", email_key="hang98@example.com")
    with Stub(APIS[name](Expect())) as stub:
        extra = "" if name != "mailgun" else 'domain = "mg.example.com"\n'
        config = write_settings(project, database_url, sending={"max_attempts": 2},
                                extra=f'[provider]\nname = "{name}"\n[provider.{name}]\nbase_url = "{stub.url}"\n'
                                      f'read_timeout = 1.0\n{extra}')
        result = cli(config, "send", "spring-sale", **ENV)
        assert result.exit_code == 0, result.output
    assert stub.problems == []
    with Session(db) as session:
        deliveries = {d.id: d for d in session.execute(select(Delivery)).scalars()}
    sent = [d for d in deliveries.values() if d.status == "sent"]
    failed = [d for d in deliveries.values() if d.status == "failed"]
    uncertain = [d for d in deliveries.values() if d.status == "uncertain"]
    # The request that got no answer may have been delivered: recorded as uncertain, never sent again.
    # (Through a batch endpoint that is every message of that request, not just the one that hung.)
    unanswered = set(stub.unanswered)
    assert "hang98@example.com" in unanswered and {d.email for d in uncertain} == unanswered
    assert all(d.attempts == 1 and "no complete answer" in d.last_error for d in uncertain)
    assert {d.email for d in failed} == {"invalid99@example.com"} - unanswered
    assert len(sent) == 6 - len(failed) - len(uncertain)
    assert {d.provider for d in deliveries.values()} == {name}
    # Each accepted message carried its delivery's metadata, and the ledger holds the id answered to it.
    by_delivery = {int(metadata["valuemail_delivery"]): provider_id for metadata, provider_id in stub.api.sent}
    assert by_delivery == {d.id: d.provider_message_id for d in sent}
    assert all(metadata["valuemail_run"] == str(sent[0].run_id) for metadata, _ in stub.api.sent)
    # The invalid recipient failed at once, with the provider's own words, and was not retried; no
    # message reached the provider twice.
    assert all(d.attempts == 1 and d.last_error for d in failed)
    assert max(Counter(stub.received()).values()) == 1
