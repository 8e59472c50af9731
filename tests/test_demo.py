"""The demo data set: realistic spread, reserved domains only, deterministic and idempotent."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from sqlalchemy import func, select

from engine.cli import main
from engine.clock import FixedClock
from engine.demo import DOMAINS, generate, load_demo
from engine.models import Contact, ContactTag, Event, Order

NOW = datetime(2027, 3, 1, 15, 30, tzinfo=timezone.utc)


def rows(engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def test_demo_loads_a_realistic_spread(db, settings):
    summary = load_demo(db, settings=settings, clock=FixedClock(NOW))
    assert summary.contacts.inserted == 3000 and summary.contacts.rejected == 0
    assert summary.orders.rejected == 0 and summary.events.rejected == 0
    assert summary.totals["contacts"] == 3000

    c, o, e, t = Contact.__table__, Order.__table__, Event.__table__, ContactTag.__table__
    contacts = rows(db, select(c.c.email_key, c.c.country, c.c.language, c.c.status, c.c.attributes, c.c.first_name))
    assert all(key.rsplit("@", 1)[1] in DOMAINS for key, *_ in contacts)  # nothing can be mailed for real
    countries = Counter(row.country for row in contacts)
    assert {"NL", "BE", "DE", "NO", "FR", "GB", "US", "SE"} <= set(countries)
    assert countries.most_common(1)[0][0] == "NL"
    assert {row.language for row in contacts} == {"nl", "en", "de", "no", "fr", "sv"}  # Norwegian is 'no' throughout
    unsubscribed = sum(row.status == "unsubscribed" for row in contacts)
    assert 30 < unsubscribed < 300
    assert {"plan", "favourite_category", "account_type"} <= set(contacts[0].attributes)
    assert any(not row.first_name.isascii() for row in contacts)  # Bjørn, Müller, Chloé...
    tags = Counter(tag for (tag,) in rows(db, select(t.c.tag)))
    assert {"vip", "newsletter", "eco", "b2b"} <= set(tags)

    # Two years of orders ending at the clock's today, mostly EUR, with returns and cancellations.
    first, last = rows(db, select(func.min(o.c.placed_at), func.max(o.c.placed_at)))[0]
    assert NOW - timedelta(days=740) < first < NOW - timedelta(days=700)
    assert NOW - timedelta(days=2) < last < NOW
    currencies = Counter(dict(rows(db, select(o.c.currency, func.count()).group_by(o.c.currency))))
    assert currencies.most_common(1)[0][0] == "EUR" and {"NOK", "GBP", "USD"} <= set(currencies)
    statuses = Counter(dict(rows(db, select(o.c.status, func.count()).group_by(o.c.status))))
    assert statuses["returned"] > 0 and statuses["cancelled"] > 0 and statuses["delivered"] > statuses["returned"]

    # Frequencies spread out: champions, occasional buyers, lapsed customers, people without orders.
    per_contact = rows(db, select(o.c.contact_id, func.count(), func.max(o.c.placed_at)).group_by(o.c.contact_id))
    counts = [n for _, n, _ in per_contact]
    assert sum(n >= 20 for n in counts) > 50
    assert sum(n <= 3 for n in counts) > 800
    assert sum(latest < NOW - timedelta(days=180) for _, _, latest in per_contact) > 200
    assert len(per_contact) < 2700  # some contacts never ordered

    # Trials: about a quarter start one, about 20% of those convert, some cancel.
    kinds = Counter(dict(rows(db, select(e.c.type, func.count()).group_by(e.c.type))))
    assert 500 < kinds["trial_started"] < 1000
    assert 0.12 < kinds["trial_converted"] / kinds["trial_started"] < 0.28
    assert kinds["trial_cancelled"] > 0


def test_demo_is_idempotent_and_follows_the_clock(db, settings):
    clock = FixedClock(NOW)
    first = load_demo(db, settings=settings, clock=clock, contacts=400)
    again = load_demo(db, settings=settings, clock=clock, contacts=400)
    assert (again.contacts.inserted, again.contacts.updated, again.contacts.unchanged) == (0, 0, 400)
    assert again.orders.inserted == again.orders.updated == 0 and again.events.inserted == 0
    assert again.totals == first.totals

    # A day later the dates move with the clock, but nothing piles up.
    clock.set(NOW + timedelta(days=1))
    later = load_demo(db, settings=settings, clock=clock, contacts=400)
    assert later.totals == first.totals
    assert later.orders.inserted == 0 and later.orders.updated == first.orders.inserted


def test_generation_is_deterministic_and_prefix_stable(settings):
    clock = FixedClock(NOW)
    small = [p.contact for p in generate(settings=settings, clock=clock, contacts=50)]
    big = [p.contact for p in generate(settings=settings, clock=clock, contacts=200)]
    assert small == big[:50]
    assert [p.orders for p in generate(settings=settings, clock=clock, contacts=50)] == \
        [p.orders for p in generate(settings=settings, clock=clock, contacts=50)]
    assert len({c["email"] for c in big}) == 200


def test_demo_command(db, settings):
    result = CliRunner().invoke(main, ["--config", str(settings.source), "demo", "--contacts", "150"])
    assert result.exit_code == 0, result.output
    assert "contacts: 150 inserted, 0 updated, 0 unchanged, 0 rejected" in result.stdout
    assert "demo data now: 150 contacts" in result.stdout
