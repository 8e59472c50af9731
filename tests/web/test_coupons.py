"""The coupon page of a delivery: the code the mail carried, its value, conditions and state."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import Contact, Coupon, Delivery
from engine.web import create_app
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import add_contacts


@pytest.fixture
def sent(project, settings, db):
    """The spring sale sent through the outbox to two plain contacts and one gold one."""
    only_spring_sale(project)
    add_contacts(db, 2)
    add_contacts(db, 1, start=10, attributes={"tier": "gold"}, language="en")
    result = cli(settings, "send", "spring-sale")
    assert result.exit_code == 0, result.output
    with Session(db) as s:
        return dict(s.execute(select(Delivery.email, Delivery.id)).all())


def client_at(settings, db, when: datetime):
    return create_app(settings=settings, engine=db, clock=FixedClock(when), testing=True).test_client()


def mail_text(settings, email: str) -> str:
    for path in (settings.var_dir / "outbox").glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if message["To"].addresses[0].addr_spec == email:
            return message.get_body(("plain",)).get_content()
    raise AssertionError(f"no mail to {email}")


DURING = datetime(2027, 3, 25, 12, tzinfo=timezone.utc)


def test_the_page_shows_the_code_the_mail_carried(sent, settings, db, signer):
    with Session(db) as s:
        code = s.execute(select(Coupon.code).join(Contact, Contact.id == Coupon.contact_id)
                         .where(Contact.email_key == "user0@example.com")).scalar()
    text = mail_text(settings, "user0@example.com")
    assert code.startswith("SPRING-") and code in text
    # The mail links to the page (our own page: never through the click redirect).
    path = re.search(r"http://127\.0\.0\.1:8000(/k/[\w.-]+)", text).group(1)
    assert path == f"/k/{signer.sign('coupon', sent['user0@example.com'])}"
    html = client_at(settings, db, DURING).get(path).text
    assert f'value="{code}" readonly' in html
    assert "15% korting" in html  # a Dutch contact reads Dutch
    assert "Geldig van 2027-03-20 tot en met 2027-04-03." in html and "Bij bestellingen vanaf 25.00 EUR." in html
    assert 'href="https://shop.example.com/spring"' in html


def test_a_segment_variant_shows_its_own_offer(sent, settings, db, signer):
    response = client_at(settings, db, DURING).get(f"/k/{signer.sign('coupon', sent['user10@example.com'])}")
    assert response.status_code == 200
    assert '<html lang="en">' in response.text and "20% off" in response.text
    assert "Valid 2027-03-13 to 2027-04-03." in response.text


def test_used_and_expired_codes_say_so(sent, settings, db, signer):
    token = signer.sign("coupon", sent["user1@example.com"])
    with session_scope(db) as s:
        s.execute(update(Coupon).where(Coupon.contact_id == s.execute(
            select(Contact.id).where(Contact.email_key == "user1@example.com")).scalar())
            .values(redeemed_at=datetime(2027, 3, 22, 10, tzinfo=timezone.utc)))
    html = client_at(settings, db, DURING).get(f"/k/{token}").text
    assert "Deze code is gebruikt op 2027-03-22." in html and 'id="shop"' not in html
    later = client_at(settings, db, datetime(2027, 4, 10, tzinfo=timezone.utc))
    html = later.get(f"/k/{signer.sign('coupon', sent['user0@example.com'])}").text
    assert "Deze code is verlopen op 2027-04-03." in html and 'id="shop"' not in html


def test_forged_and_foreign_tokens_are_refused(sent, settings, db, signer):
    client = client_at(settings, db, DURING)
    genuine = signer.sign("coupon", sent["user0@example.com"])
    for token in (genuine[:-2] + "xx", signer.sign("view", sent["user0@example.com"]), ""):
        response = client.get(f"/k/{token}")
        assert response.status_code == 400 and "This link is not valid" in response.text
    assert client.get(f"/k/{signer.sign('coupon', 10**9)}").status_code == 404


def test_a_mail_without_a_discount_says_so(client, signer, db):
    from .factories import make_campaign, make_contact, make_delivery, make_run

    with session_scope(db) as s:
        delivery = make_delivery(s, make_run(s, make_campaign(s, "news", "News")), make_contact(s, "a@example.com")).id
    response = client.get(f"/k/{signer.sign('coupon', delivery)}")
    assert response.status_code == 404 and "This mail did not come with a discount code." in response.text
