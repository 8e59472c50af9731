"""`valuemail points show|redeem|adjust|sync`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from engine.cli import main
from engine.models import Contact, Order, PointsEntry
from tests.sending.test_send import cli
from tests.support.data import add_contacts


def test_the_cli_registers_the_points_command():
    assert main.get_command(None, "points").name == "points"


@pytest.fixture
def customer(settings, db) -> int:
    add_contacts(db, 2)
    with Session(db) as s:
        cid = s.execute(select(Contact.id).where(Contact.email_key == "user0@example.com")).scalar_one()
    placed = datetime.now(timezone.utc) - timedelta(days=3)
    with db.begin() as conn:
        conn.execute(insert(Order), [{"order_id": "P-1", "contact_id": cid, "placed_at": placed, "total_cents": 32050,
                                      "currency": "EUR", "status": "paid", "updated_at": placed}])
    return cid


@pytest.mark.usefixtures("system_clock")
def test_sync_show_redeem_and_adjust(settings, db, customer):
    synced = cli(settings, "points", "sync", "loyalty-statement")
    assert synced.exit_code == 0, synced.output
    assert "earned 1, welcome 1, reversed 0, expired 0" in synced.output
    shown = cli(settings, "points", "show", "User0@example.com", "--campaign", "loyalty-statement")
    assert shown.exit_code == 0, shown.output
    assert "user0@example.com: 370 points" in shown.output
    assert "rewards reached: €5 voucher" in shown.output and "next reward: €15 voucher, 130 points to go" in shown.output
    assert "P-1" in shown.output and "+320" in shown.output and "welcome" in shown.output

    redeemed = cli(settings, "points", "redeem", "user0@example.com", "200", "--reference", "VOUCHER-7")
    assert redeemed.exit_code == 0 and "redeemed 200 points; balance 170" in redeemed.output
    retried = cli(settings, "points", "redeem", "user0@example.com", "200", "--reference", "VOUCHER-7")
    assert retried.exit_code == 0 and "already redeemed (same reference)" in retried.output
    short = cli(settings, "points", "redeem", "user0@example.com", "500", "--reference", "VOUCHER-8")
    assert short.exit_code == 1 and "has 170 points, cannot redeem 500" in short.output

    added = cli(settings, "points", "adjust", "user0@example.com", "25", "--reference", "goodwill", "--note", "late parcel")
    assert added.exit_code == 0 and "by +25 points; balance 195" in added.output
    deducted = cli(settings, "points", "adjust", "--reference", "fix", "user0@example.com", "--", "-300")
    assert deducted.exit_code == 1 and "cannot deduct 300" in deducted.output
    with Session(db) as s:
        kinds = s.execute(select(PointsEntry.kind).order_by(PointsEntry.id)).scalars().all()
    assert kinds == ["earn", "welcome", "redeem", "adjust"]


def test_unknown_contact_and_wrong_campaign_are_clear_errors(settings, db, customer):
    missing = cli(settings, "points", "show", "nobody@example.com")
    assert missing.exit_code == 1 and "no contact with email nobody@example.com" in missing.output
    wrong = cli(settings, "points", "sync", "spring-sale")
    assert wrong.exit_code == 1 and "not loyalty_points" in wrong.output
