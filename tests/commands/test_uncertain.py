"""`valuemail uncertain`: list the sends that may have arrived, resend or accept them."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from engine.db import make_engine
from engine.models import Delivery, Run
from tests.conftest import write_settings
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts
from tests.support.smtpd import Fault, SmtpSink


def statuses(engine):
    with Session(engine) as session:
        return {d.email: (d.id, d.status, d.message_id) for d in session.execute(select(Delivery)).scalars()}


def test_list_resend_and_accept(project, database_url):
    only_spring_sale(project)
    with SmtpSink() as sink:
        settings = write_settings(project, database_url, extra=(
            f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\ntimeout = 2\n'))
        engine = make_engine(settings.database_url)
        try:
            add_contacts(engine, 4)
            for n in (1, 2):
                sink.handler.faults[f"user{n}@example.com"] = Fault("drop:after-dot", times=1)
            sent = cli(settings, "send", "spring-sale")
            assert sent.exit_code == 0, sent.output
            assert "uncertain 2" in sent.output and "2 deliveries are uncertain" in sent.output
            before = statuses(engine)
            assert [before[f"user{n}@example.com"][1] for n in range(4)] == ["sent", "uncertain", "uncertain", "sent"]

            listing = cli(settings, "uncertain")
            assert listing.exit_code == 0, listing.output
            lines = [line for line in listing.output.splitlines() if "@example.com" in line]
            assert len(lines) == 2
            one_id, _, message_id = before["user1@example.com"]
            assert lines[0].split()[:4] == [str(one_id), "1", "spring-sale", "user1@example.com"]
            assert "no reply to the end of the message" in lines[0] and "2027-03-20 09:" in lines[0]
            assert "2 uncertain: maybe delivered, never resent automatically" in listing.output

            assert cli(settings, "uncertain", "--resend").exit_code == 2  # ids or --all required
            assert cli(settings, "uncertain", "--resend", "--accept", "--all").exit_code == 2
            resent = cli(settings, "uncertain", "--resend", str(one_id))
            assert resent.exit_code == 0 and "requeued 1 uncertain" in resent.output
            assert "may reach their recipients twice" in resent.output
            with Session(engine) as session:
                assert session.execute(select(Run.status)).scalar() == "sending"  # reopened for the resend
            ticked = cli(settings, "tick")
            assert ticked.exit_code == 0, ticked.output

            accepted = cli(settings, "uncertain", "--accept", "--all")
            assert accepted.exit_code == 0 and "marked 1 uncertain deliveries sent" in accepted.output
            after = statuses(engine)
            assert {status for _, status, _ in after.values()} == {"sent"}
            assert cli(settings, "uncertain").output.strip() == "No uncertain deliveries."
            with Session(engine) as session:
                assert session.execute(select(Run.status)).scalar() == "finished"
        finally:
            engine.dispose()
        at_server = sink.handler.count_at_server()
    # The resent one arrived twice (the operator's choice: the server had kept the first copy),
    # the accepted one once; the others once each.
    assert at_server[message_id] == 2
    assert at_server[before["user2@example.com"][2]] == 1
    assert at_server[before["user0@example.com"][2]] == at_server[before["user3@example.com"][2]] == 1
