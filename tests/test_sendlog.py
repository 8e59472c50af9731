"""The send log: every filter combination pages through exactly what a plain filter of the ledger gives."""

from __future__ import annotations

import itertools
import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from engine.db import session_scope
from engine.models import Campaign, Contact, Delivery, DeliveryEvent, Run
from engine.sendlog import MERGED_RUNS, STATUSES, LogFilter, log_page, timeline

AMS = ZoneInfo("Europe/Amsterdam")
START = datetime(2027, 3, 1, 6, tzinfo=timezone.utc)


@pytest.fixture
def ledger(db):
    """Three campaigns (one with more runs than are merged), 12 contacts, deliveries over six days."""
    rng = random.Random(7)
    with session_scope(db) as s:
        for cid in ("sale", "news", "drip"):
            s.add(Campaign(id=cid, name=cid, kind="seasonal_discount", values=["economic"], definition={},
                           source_hash="x", synced_at=START))
        s.flush()
        contacts = [s.execute(insert(Contact).values(email=f"P{i}@Example.com", email_key=f"p{i}@example.com", status="subscribed", attributes={},
                                                      created_at=START, updated_at=START).returning(Contact.id)).scalar()
                    for i in range(12)]
        plan = [("sale", 2), ("news", 3), ("drip", MERGED_RUNS + 2)]
        runs = []
        for cid, count in plan:
            for k in range(count):
                runs.append((cid, s.execute(insert(Run).values(campaign_id=cid, occurrence_at=START + timedelta(minutes=k),
                                                               status="finished", created_at=START, definition={})
                                            .returning(Run.id)).scalar()))
        rows = []
        at = START
        for cid, run_id in sorted(runs, key=lambda r: rng.random()):
            at += timedelta(hours=rng.choice([1, 3, 7]))
            for contact_id in rng.sample(contacts, rng.randint(1, 6)):
                rows.append({"run_id": run_id, "contact_id": contact_id, "email": f"x{contact_id}@example.com",
                             "segment": "all", "status": rng.choice(STATUSES), "created_at": at, "updated_at": at,
                             "data": {}, "attempts": 0})
        s.execute(insert(Delivery), rows)
    with Session(db) as s:
        return [(d.id, d.contact_id, s.get(Run, d.run_id).campaign_id, d.status, d.created_at)
                for d in s.execute(select(Delivery)).scalars()]


def everything(db, flt, limit):
    seen, before = [], None
    with Session(db) as s:
        for _ in range(1000):
            page, before = log_page(s, flt, tz=AMS, before=before, limit=limit)
            seen += [row.id for row in page]
            if before is None:
                return seen
    raise AssertionError("the pages never ended")


def expected(rows, flt):
    key = flt.email.lower()
    out = []
    for id_, contact_id, campaign, status, created in rows:
        day = created.astimezone(AMS).date()
        if flt.email and f"p{contact_id - 1}@example.com" != key:
            continue
        if (flt.campaign and campaign != flt.campaign or flt.status and status != flt.status
                or flt.day_from and day < flt.day_from or flt.day_to and day > flt.day_to):
            continue
        out.append(id_)
    return sorted(out, reverse=True)


def test_every_filter_combination_pages_through_exactly_the_matching_deliveries(db, ledger):
    days = sorted({c.astimezone(AMS).date() for *_, c in ledger})
    emails = ["", "p3@example.com", "P5@EXAMPLE.COM", "nobody@example.com"]
    campaigns = ["", "sale", "drip", "unknown"]
    statuses = ["", "sent", "failed"]
    ranges = [(None, None), (days[1], days[2]), (days[0], None), (None, days[0]), (date(2030, 1, 1), None)]
    for email, campaign, status, (low, high) in itertools.product(emails, campaigns, statuses, ranges):
        flt = LogFilter(email=email, campaign=campaign, status=status, day_from=low, day_to=high)
        assert everything(db, flt, limit=4) == expected(ledger, flt), flt


def test_an_unknown_status_is_refused(db):
    with Session(db) as s, pytest.raises(ValueError):
        log_page(s, LogFilter(status="nope"), tz=AMS)


def test_the_timeline_lists_queued_sent_and_reported_events_in_order(db, ledger):
    first = ledger[0][0]
    with session_scope(db) as s:
        d = s.get(Delivery, first)
        d.status, d.sent_at, d.provider, d.provider_message_id = "sent", d.created_at + timedelta(minutes=1), "smtp", "m-1"
        s.add(DeliveryEvent(delivery_id=first, type="clicked", occurred_at=d.created_at + timedelta(hours=2),
                            data={"url": "https://shop.example.com/"}))
        s.add(DeliveryEvent(delivery_id=first, type="opened", occurred_at=d.created_at + timedelta(hours=1), data={}))
    with Session(db) as s:
        events = timeline(s, first)
    assert [e[0] for e in events] == ["queued", "sent", "opened", "clicked"]
    assert events[1][2] == {"provider": "smtp", "provider_message_id": "m-1"}
    assert events[3][2] == {"url": "https://shop.example.com/"}
