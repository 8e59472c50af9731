"""`valuemail send` end to end through each HTTP provider's stub: the ledger records provider and ids."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.models import Delivery
from tests.conftest import write_settings
from tests.providers.http_support import ENV, HTTP_PROVIDERS
from tests.providers.stubs import APIS, Answer, Expect, Stub
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts


def answered_id(name: str, answer: Answer) -> str:
    """The message id the stub handed out, as the provider's docs say it is given."""
    if name == "sendgrid":
        return answer.headers["X-Message-Id"]
    body = json.loads(answer.body)
    return {"postmark": lambda: body["MessageID"], "mailgun": lambda: body["id"].strip("<>"),
            "resend": lambda: body["id"], "ses": lambda: body["MessageId"]}[name]()


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
    assert len(sent) == 4 and len(failed) == 1 and len(uncertain) == 1
    assert {d.provider for d in deliveries.values()} == {name}
    # Each accepted request carried its delivery's metadata, and the ledger holds the id answered to it.
    by_delivery = {int(stub.api.metadata(seen)["valuemail_delivery"]): answered_id(name, answer)
                   for seen, answer in stub.accepted}
    assert by_delivery == {d.id: d.provider_message_id for d in sent}
    assert all(stub.api.metadata(seen)["valuemail_run"] == str(sent[0].run_id) for seen, _ in stub.accepted)
    # The invalid recipient failed at once, with the provider's own words, and was not retried.
    assert failed[0].attempts == 1 and failed[0].last_error
    assert sum(1 for seen in stub.seen if stub.api.recipient(seen) == "invalid99@example.com") == 1
    # The request that got no answer may have been delivered: recorded as uncertain, never sent again.
    assert uncertain[0].attempts == 1 and "no complete answer" in uncertain[0].last_error
    assert sum(1 for seen in stub.seen if stub.api.recipient(seen) == "hang98@example.com") == 1
