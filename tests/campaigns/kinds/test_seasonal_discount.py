"""seasonal_discount: the coupon pool, season windows, spend tiers and redemption."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.coupons import ALPHABET, CouponRefused, generate_code, redeem
from engine.db import session_scope
from engine.models import Contact, Coupon, Delivery, Order
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import T0, add_contacts


def test_codes_are_unambiguous_and_carry_enough_randomness():
    import math

    code = generate_code("SPRING")
    prefix, *groups = code.split("-")
    assert prefix == "SPRING" and all(c in ALPHABET for g in groups for c in g)
    assert not set("01OIL") & set(ALPHABET)
    assert math.log2(len(ALPHABET)) * sum(len(g) for g in groups) >= 40
    assert len({generate_code() for _ in range(2000)}) == 2000


def test_the_pool_limit_skips_recipients_once_it_is_used_up(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace('code_prefix = "SPRING"', 'code_prefix = "SPRING"\nmax_codes = 3'))
    add_contacts(db, 5)
    assert cli(settings, "send", "spring-sale").exit_code == 0
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Coupon)).scalar() == 3
        statuses = dict(s.execute(select(Delivery.last_error, func.count()).group_by(Delivery.last_error)).all())
    assert statuses == {None: 3, "coupon pool exhausted": 2}


def test_each_contact_keeps_one_code_per_campaign_across_occurrences(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 2)
    assert cli(settings, "send", "spring-sale").exit_code == 0
    with Session(db) as s:
        first = dict(s.execute(select(Coupon.contact_id, Coupon.code)).all())
    assert cli(settings, "send", "spring-sale", "--again").exit_code == 0
    with Session(db) as s:
        assert dict(s.execute(select(Coupon.contact_id, Coupon.code)).all()) == first
    codes_in_mail = [p.read_text() for p in (settings.var_dir / "outbox").glob("*.eml")]
    assert all(any(code in text for code in first.values()) for text in codes_in_mail)


def test_redemption_is_once_and_checks_the_offer(db):
    add_contacts(db, 1)
    with session_scope(db) as s:
        s.add(Coupon(code="SPRING-AAAAA-BBBBB", campaign_id=_campaign(s), contact_id=_first(s), created_at=T0))
    until = datetime(2027, 4, 3, 23, 59, tzinfo=timezone.utc)
    with session_scope(db) as s:
        with pytest.raises(CouponRefused, match="at least 25.00"):
            redeem(s, "SPRING-AAAAA-BBBBB", order_id=None, order_total=10, now=T0, min_order=25, valid_until=until)
        with pytest.raises(CouponRefused, match="unknown code"):
            redeem(s, "SPRING-XXXXX-YYYYY", order_id=None, order_total=50, now=T0)
        order = _order(s)
        assert redeem(s, "spring-aaaaa-bbbbb ", order_id=order, order_total=50, now=T0, valid_until=until).redeemed_at
        assert redeem(s, "SPRING-AAAAA-BBBBB", order_id=order, order_total=50, now=T0).order_id == order  # idempotent
        with pytest.raises(CouponRefused, match="already used"):
            redeem(s, "SPRING-AAAAA-BBBBB", order_id=None, order_total=50, now=T0)


def test_an_expired_code_is_refused(db):
    add_contacts(db, 1)
    with session_scope(db) as s:
        s.add(Coupon(code="OLD-AAAAA-BBBBB", campaign_id=_campaign(s), contact_id=_first(s), created_at=T0))
    with session_scope(db) as s, pytest.raises(CouponRefused, match="expired"):
        redeem(s, "OLD-AAAAA-BBBBB", order_id=None, order_total=50, now=T0, valid_until=datetime(2027, 2, 1, tzinfo=timezone.utc))


def test_a_season_window_wraps_past_new_year():
    from engine.campaigns.kinds.seasonal_discount import Season

    winter = Season.model_validate({"from": "12-01", "until": "02-28"})
    assert winter.contains(date(2027, 12, 24)) and winter.contains(date(2028, 1, 15))
    assert not winter.contains(date(2027, 3, 1))


def test_a_cron_campaign_outside_its_season_is_skipped_by_the_scheduler(project, settings, db):
    only_spring_sale(project)
    path = project / "campaigns" / "spring-sale.toml"
    text = path.read_text().replace('schedule = { at = "2027-03-20T09:00" }', 'schedule = { cron = "0 9 * * *" }')
    path.write_text(text.replace('code_prefix = "SPRING"', 'code_prefix = "SPRING"\nseason = { from = "03-21", until = "06-20" }'))
    add_contacts(db, 2)
    assert cli(settings, "tick", "--at", "2027-03-20T08:00:00+01:00").exit_code == 0  # the scheduler first sees it
    early = cli(settings, "tick", "--at", "2027-03-20T10:00:00+01:00")
    assert early.exit_code == 0 and "outside the season 03-21 to 06-20" in early.output
    inside = cli(settings, "tick", "--at", "2027-03-21T10:00:00+01:00")
    assert "started run" in inside.output


def _campaign(session) -> str:
    from engine.models import Campaign

    session.add(Campaign(id="spring-sale", name="Spring", kind="seasonal_discount", values=[], definition={},
                         source_hash="x", synced_at=T0))
    session.flush()
    return "spring-sale"


def _first(session) -> int:
    return session.execute(select(Contact.id)).scalars().first()


def _order(session) -> int:
    order = Order(order_id="O-1", contact_id=_first(session), placed_at=T0, total_cents=5000, currency="EUR",
                  status="paid", updated_at=T0)
    session.add(order)
    session.flush()
    return order.id
