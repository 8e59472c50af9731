"""`valuemail send` end to end: SQLite and PostgreSQL, outbox and a real SMTP server on loopback."""

from __future__ import annotations

import email.utils
from pathlib import Path
from email import policy
from email.parser import BytesParser

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlmodel import Session

from engine.cli import main
from engine.coupons import coupon_for_delivery
from engine.db import session_scope
from engine.models import Coupon, Delivery, Run, Suppression
from tests.conftest import write_settings
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink

SEGMENTS = '[gold]\nattributes = { tier = "gold" }\n\n[everyone]\n'


def cli(settings, *args, **env):
    result = CliRunner().invoke(main, ["--config", settings.source, *args], env={"VALUEMAIL_SECRET_KEY": "test-secret-key", **env},
                                catch_exceptions=False)
    return result


def only_spring_sale(project):
    """Keep just the spring-sale campaign, with two segments (gold by attribute, everyone)."""
    (project / "campaigns" / "segments.toml").write_text(SEGMENTS)
    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in ("spring-sale.toml", "segments.toml"):
            other.unlink()


@pytest.fixture
def shop(project, settings, db):
    """A project with the spring-sale campaign, two segments and contacts."""
    only_spring_sale(project)
    return project


def smtp_settings(project, database_url, port, **sending):
    return write_settings(project, database_url, sending=sending,
                          extra=f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {port}\ntimeout = 5\n')


def parse(data: bytes):
    return BytesParser(policy=policy.default).parsebytes(data)


def test_outbox_send_writes_one_well_formed_message_per_recipient(shop, settings, db):
    add_contacts(db, 30)
    add_contacts(db, 5, start=100, attributes={"tier": "gold"})
    result = cli(settings, "send", "spring-sale")
    assert result.exit_code == 0, result.output
    assert "run #1 (finished): queued 0, claimed 0, sent 35" in result.output
    files = sorted((settings.var_dir / "outbox").glob("*.eml"))
    assert len(files) == 35
    subjects = {}
    for path in files:
        msg = parse(path.read_bytes())
        subjects[msg["To"].addresses[0].addr_spec] = str(msg["Subject"])
    assert subjects["user100@example.com"].startswith("Gold members: 20% off")
    assert subjects["user3@example.com"] == "Person3, 15% off this spring"


def test_a_finished_campaign_is_not_sent_again_without_again(shop, settings, db):
    add_contacts(db, 4)
    assert cli(settings, "send", "spring-sale").exit_code == 0
    second = cli(settings, "send", "spring-sale")
    assert second.exit_code == 1 and "was already sent" in second.output and "--again" in second.output
    assert len(list((settings.var_dir / "outbox").glob("*.eml"))) == 4
    third = cli(settings, "send", "spring-sale", "--again")
    assert third.exit_code == 0, third.output
    assert len(list((settings.var_dir / "outbox").glob("*.eml"))) == 8
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Run)).scalar() == 2


def test_dry_run_counts_per_variant_and_stores_nothing(shop, settings, db):
    add_contacts(db, 6)
    add_contacts(db, 2, start=50, attributes={"tier": "gold"})
    result = cli(settings, "send", "spring-sale", "--dry-run")
    assert result.exit_code == 0 and "would send 8 messages (gold 2, everyone 6)" in result.output
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Run)).scalar() == 0
    assert not (settings.var_dir / "outbox").exists()


def test_test_send_mails_one_per_variant_to_the_tester_only(shop, settings, db):
    add_contacts(db, 6)
    add_contacts(db, 2, start=50, attributes={"tier": "gold"})
    result = cli(settings, "send", "spring-sale", "--test-to", "Marketer@Example.org")
    assert result.exit_code == 0, result.output
    messages = [parse(p.read_bytes()) for p in (settings.var_dir / "outbox").glob("*.eml")]
    assert len(messages) == 2
    assert {m["To"].addresses[0].addr_spec for m in messages} == {"Marketer@example.org"}
    assert all(str(m["Subject"]).startswith("[TEST] ") for m in messages)
    # A test does not count as the campaign being sent.
    assert cli(settings, "send", "spring-sale").exit_code == 0


def test_a_test_send_shows_a_sample_code_and_issues_no_members_code(shop, settings, db):
    """The spring sale has unique codes: a test mail shows the member's data but never their own code."""
    add_contacts(db, 3)
    assert cli(settings, "send", "spring-sale", "--test-to", "marketer@example.org").exit_code == 0
    (message,) = [parse(p.read_bytes()) for p in (settings.var_dir / "outbox").glob("*.eml")]
    assert "SPRING-TEST0-00000" in message.get_body(("plain",)).get_content()
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Coupon)).scalar() == 0
        (delivery_id,) = s.execute(select(Delivery.id)).scalars().all()
        view = coupon_for_delivery(s, delivery_id=delivery_id, settings=settings)  # the /k/ page of the test mail
    assert view.code == "SPRING-TEST0-00000" and view.redeemed_at is None


def test_unsubscribed_and_suppressed_contacts_are_never_included(shop, settings, db):
    add_contacts(db, 5)
    add_contacts(db, 1, start=10, status="unsubscribed")
    with session_scope(db) as s:
        s.add(Suppression(email_key="user2@example.com", reason="hard_bounce", created_at=T0))
    assert cli(settings, "send", "spring-sale").exit_code == 0
    with Session(db) as s:
        emails = set(s.execute(select(Delivery.email)).scalars())
    assert emails == {"user0@example.com", "user1@example.com", "user3@example.com", "user4@example.com"}


@pytest.mark.slow
def test_smtp_send_to_loopback_delivers_each_recipient_exactly_once(shop, project, database_url, db):
    n = 600
    add_contacts(db, n)
    with SmtpSink() as sink:
        settings = smtp_settings(project, database_url, sink.port, concurrency=3, batch_size=100)
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        received = sink.messages
    assert len(received) == n
    seen_ids, seen_to = set(), set()
    for item in received:
        msg = parse(item.data)
        assert not msg.defects
        to = msg["To"].addresses[0]
        number = int(to.username.removeprefix("user"))
        assert item.recipients == [to.addr_spec] and item.envelope_from == "news@example.com"
        assert to.display_name == f"Person{number} Tester"
        assert msg["From"].addresses[0].addr_spec == "news@example.com"
        assert str(msg["Subject"]) == f"Person{number}, 15% off this spring"
        assert email.utils.parsedate_to_datetime(msg["Date"]).tzinfo is not None
        unsubscribe = msg["List-Unsubscribe"]
        assert unsubscribe.startswith("<http://127.0.0.1:8000/u/") and unsubscribe.endswith(">")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        for part in (text, html):
            assert f"Person{number}" in part
            assert "Keizersgracht 1" in part  # the sender's postal address in the footer
            assert "127.0.0.1:8000/p/" in part  # preference centre link
        seen_ids.add(msg["Message-ID"])
        seen_to.add(to.addr_spec)
    assert len(seen_ids) == n and len(seen_to) == n
    with Session(db) as s:
        assert s.execute(select(func.count()).where(Delivery.status == "sent")).scalar() == n


def test_smtp_5xx_fails_that_contact_and_4xx_is_retried(shop, project, database_url, db):
    add_contacts(db, 6)
    with SmtpSink() as sink:
        sink.handler.replies["user1@example.com"] = "550 5.1.1 No such user"
        sink.handler.replies["user2@example.com"] = "451 4.3.0 Try again later!once"
        settings = smtp_settings(project, database_url, sink.port)
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        delivered = sorted(r.recipients[0] for r in sink.messages)
    assert delivered == ["user0@example.com", "user2@example.com", "user3@example.com", "user4@example.com", "user5@example.com"]
    with Session(db) as s:
        rows = {d.email: d for d in s.execute(select(Delivery)).scalars()}
    assert rows["user1@example.com"].status == "failed" and rows["user1@example.com"].last_error.startswith("550 5.1.1")
    assert rows["user2@example.com"].status == "sent" and rows["user2@example.com"].attempts == 2


def test_a_run_pauses_after_consecutive_errors_and_resumes(shop, project, database_url, db):
    add_contacts(db, 20)
    with SmtpSink() as sink:
        sink.handler.reply_always = "554 5.7.1 Relay access denied"
        settings = smtp_settings(project, database_url, sink.port, pause_after_errors=5, concurrency=1, batch_size=10)
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0
        assert "is paused: paused after 5 consecutive failures; last: 554 5.7.1 Relay access denied" in result.output
        with Session(db) as s:
            counts = {st: n for st, n in s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))}
        assert counts == {"failed": 5, "queued": 15}
        sink.handler.reply_always = None
        again = cli(settings, "send", "spring-sale")
        assert again.exit_code == 0 and "resuming run #1" in again.output
        assert len(sink.messages) == 15


def test_unknown_campaign_and_bad_test_address_are_clear_errors(shop, settings, db):
    missing = cli(settings, "send", "autumn-sale")
    assert missing.exit_code == 1 and "no campaign 'autumn-sale'" in missing.output and "spring-sale" in missing.output
    bad = cli(settings, "send", "spring-sale", "--test-to", "not-an-address")
    assert bad.exit_code == 2 and "--test-to" in bad.output
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Run)).scalar() == 0


def test_a_campaign_with_no_matching_contacts_finishes_empty(shop, settings, db):
    result = cli(settings, "send", "spring-sale")
    assert result.exit_code == 0, result.output
    assert "0 recipients" in result.output and "run #1 (finished)" in result.output


EXAMPLE_CAMPAIGNS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "campaigns").glob("*.toml")
                           if p.stem != "segments")


@pytest.mark.parametrize("campaign", EXAMPLE_CAMPAIGNS)
def test_every_example_campaign_can_be_test_sent(campaign, project, settings, db):
    add_contacts(db, 3, country="US", language="en")
    add_contacts(db, 2, start=50)  # Dutch speakers in NL
    result = cli(settings, "send", campaign, "--test-to", "marketer@example.org")
    assert result.exit_code == 0, result.output
    messages = [parse(p.read_bytes()) for p in (settings.var_dir / "outbox").glob("*.eml")]
    assert messages, result.output
    assert {m["To"].addresses[0].addr_spec for m in messages} == {"marketer@example.org"}
    assert all(str(m["Subject"]).startswith("[TEST] ") for m in messages)


def test_feedback_id_names_the_run_the_campaign_and_the_configured_sender(shop, project, database_url, db):
    add_contacts(db, 2)
    settings = write_settings(project, database_url, extra='[sender]\nfeedback_id = "shop-news"\n')
    assert cli(settings, "send", "spring-sale").exit_code == 0
    messages = [parse(p.read_bytes()) for p in (settings.var_dir / "outbox").glob("*.eml")]
    assert len(messages) == 2
    assert {m["Feedback-ID"] for m in messages} == {"1:spring-sale:shop-news"}
