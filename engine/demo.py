"""A deterministic, realistic demo data set: contacts, two years of orders, trial events.

Every value comes from `random.Random` seeded per contact, and every date is counted back
from the start of the clock's today (in the app timezone), so the data stays current and a
second run on the same day changes nothing. Addresses use the reserved example.com/.org/.net
domains only, so no demo contact can ever receive real mail.

Customers follow profiles so that LTV tiers spread out: a few champions who order every few
weeks, regulars, many occasional buyers, lapsed customers whose last order is more than 180
days old, a handful of new customers, and prospects without orders.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from .clock import Clock
from .config import Settings
from .db import session_scope
from .importing import ImportResult, upsert_contacts, upsert_events, upsert_orders
from .models import Contact, ContactTag, Event, Order

SEED = "valuemail-demo-1"
DOMAINS = ("example.com", "example.org", "example.net")
HISTORY_DAYS = 730
TRIAL_TYPES = ("trial_started", "trial_converted", "trial_cancelled")

# country: (weight, [(language, weight)], timezones, currency, price factor vs EUR)
COUNTRIES: dict[str, tuple[int, list[tuple[str, int]], tuple[str, ...], str, float]] = {
    "NL": (30, [("nl", 95), ("en", 5)], ("Europe/Amsterdam",), "EUR", 1.0),
    "BE": (12, [("nl", 60), ("fr", 40)], ("Europe/Brussels",), "EUR", 1.0),
    "DE": (17, [("de", 97), ("en", 3)], ("Europe/Berlin",), "EUR", 1.0),
    "FR": (10, [("fr", 100)], ("Europe/Paris",), "EUR", 1.0),
    "NO": (8, [("no", 90), ("en", 10)], ("Europe/Oslo",), "NOK", 11.5),
    "SE": (7, [("sv", 90), ("en", 10)], ("Europe/Stockholm",), "EUR", 1.0),
    "GB": (8, [("en", 100)], ("Europe/London",), "GBP", 0.85),
    "US": (8, [("en", 100)], ("America/New_York", "America/Chicago", "America/Los_Angeles"), "USD", 1.08),
}

# (country, language) -> (first names, last names); French-speaking Belgians get French names.
NAMES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("NL", "nl"): (
        ("Daan", "Sem", "Lucas", "Levi", "Finn", "Milan", "Bram", "Thijs", "Joost", "Pieter", "Ruben", "Jeroen",
         "Emma", "Julia", "Sophie", "Tess", "Anna", "Lotte", "Sanne", "Fleur", "Eva", "Lieke", "Femke", "Maartje"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser", "Smit",
         "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
         "Brouwer"),
    ),
    ("BE", "nl"): (
        ("Lucas", "Arthur", "Noah", "Wout", "Pieter", "Thomas", "Lars", "Jasper", "Stijn", "Olivia", "Emma",
         "Mila", "Elena", "Lotte", "Sofie", "Elise", "Ine", "Hanne"),
        ("Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens", "Wouters",
         "De Smet", "Vermeulen", "Van Damme", "De Clercq", "Hermans"),
    ),
    ("BE", "fr"): (
        ("Louis", "Jules", "Victor", "Hugo", "Nathan", "Julien", "Louise", "Marie", "Camille", "Nathalie",
         "Chloé", "Juliette", "Amélie"),
        ("Dubois", "Lambert", "Dupont", "Martin", "Simon", "Leclercq", "Laurent", "Lejeune", "Renard",
         "Lefebvre"),
    ),
    ("DE", "de"): (
        ("Lukas", "Leon", "Finn", "Paul", "Jonas", "Felix", "Maximilian", "Elias", "Jürgen", "Stefan", "Matthias",
         "Mia", "Emma", "Hannah", "Sophia", "Lea", "Lena", "Marie", "Katharina", "Sabine", "Ulrike", "Jana"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
         "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann"),
    ),
    ("FR", "fr"): (
        ("Gabriel", "Léo", "Raphaël", "Arthur", "Louis", "Adam", "Hugo", "Antoine", "Jade", "Louise", "Alice",
         "Chloé", "Léa", "Manon", "Camille", "Inès", "Éloïse", "Mathilde", "Céline"),
        ("Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
         "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard"),
    ),
    ("NO", "no"): (
        ("Jakob", "Emil", "Oliver", "Filip", "Henrik", "Sander", "Ole", "Bjørn", "Håkon", "Øystein", "Nora",
         "Emma", "Ella", "Maja", "Ingrid", "Sofie", "Astrid", "Kari", "Solveig", "Sigrid", "Ragnhild"),
        ("Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen", "Jensen",
         "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen", "Hagen", "Dahl", "Lie", "Solberg",
         "Bakken", "Sæther", "Løken"),
    ),
    ("SE", "sv"): (
        ("William", "Liam", "Hugo", "Elias", "Björn", "Lars", "Anders", "Alice", "Maja", "Vera", "Ebba", "Astrid",
         "Elsa", "Saga", "Wilma", "Agnes", "Åsa", "Karin"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
         "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Lindberg", "Lindqvist", "Ström", "Sjöberg",
         "Åberg"),
    ),
    ("GB", "en"): (
        ("Oliver", "George", "Harry", "Jack", "Charlie", "Thomas", "Oscar", "William", "James", "Olivia",
         "Amelia", "Isla", "Ava", "Emily", "Sophie", "Grace", "Lily", "Charlotte", "Eleanor"),
        ("Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
         "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall"),
    ),
    ("US", "en"): (
        ("Liam", "Noah", "Elijah", "James", "Benjamin", "Henry", "Mason", "Ethan", "Olivia", "Emma",
         "Charlotte", "Ava", "Sophia", "Isabella", "Mia", "Evelyn", "Harper", "Madison"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
         "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Lee"),
    ),
}

# profile: (weight, order interval days (low, high) or None, average order value EUR (low, high))
PROFILES: dict[str, tuple[int, tuple[int, int] | None, tuple[float, float]]] = {
    "champion": (6, (12, 35), (70.0, 190.0)),
    "regular": (19, (40, 100), (40.0, 110.0)),
    "occasional": (33, None, (20.0, 80.0)),
    "lapsed": (15, None, (30.0, 90.0)),
    "new": (5, None, (25.0, 90.0)),
    "prospect": (22, None, (0.0, 0.0)),
}
CATEGORIES = ("coffee", "tea", "kitchen", "eco-cleaning", "books", "garden", "recipes")
PLANS = ("free", "basic", "pro", "enterprise")
_ASCII = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "å": "a", "Å": "A", "ß": "ss"})


@dataclass
class DemoSummary:
    """Upsert results per kind and the demo's row counts afterwards."""

    contacts: ImportResult
    orders: ImportResult
    events: ImportResult
    totals: dict[str, int]

    def __str__(self) -> str:
        lines = [f"{kind}: {getattr(self, kind).summary()}" for kind in ("contacts", "orders", "events")]
        lines.append("demo data now: " + ", ".join(f"{n} {kind}" for kind, n in self.totals.items()))
        return "\n".join(lines)


@dataclass
class _Person:
    contact: dict[str, Any]
    orders: list[dict[str, Any]]
    events: list[dict[str, Any]]


def load_demo(engine: Engine, *, settings: Settings, clock: Clock, contacts: int = 3000) -> DemoSummary:
    """Upsert the demo data set (idempotent: a second run the same day changes nothing)."""
    people = list(generate(settings=settings, clock=clock, contacts=contacts))
    with session_scope(engine) as session:
        c = upsert_contacts(session, (p.contact for p in people), settings=settings, clock=clock, strict=True)
        o = upsert_orders(session, (o for p in people for o in p.orders), settings=settings, clock=clock, strict=True)
        wanted = [e for p in people for e in p.events]
        _prune_stale_events(session, wanted)
        e = upsert_events(session, wanted, settings=settings, clock=clock, strict=True)
        totals = _totals(session, [p.contact["email"] for p in people])
    return DemoSummary(contacts=c, orders=o, events=e, totals=totals)


def generate(*, settings: Settings, clock: Clock, contacts: int = 3000) -> Iterator[_Person]:
    """Yield the demo people with their contact row, orders and trial events (import-ready dicts)."""
    tz = settings.tz
    today = clock.now().astimezone(tz).date()
    countries = list(COUNTRIES)
    country_weights = [COUNTRIES[c][0] for c in countries]
    profiles = list(PROFILES)
    profile_weights = [PROFILES[p][0] for p in profiles]
    for index in range(contacts):
        # One generator per contact: the first N people are the same whatever `contacts` is.
        rng = random.Random(f"{SEED}:{index}")
        country = rng.choices(countries, country_weights)[0]
        profile = rng.choices(profiles, profile_weights)[0]
        yield _person(rng, index, country, profile, today=today, tz=tz)


def _person(rng: random.Random, index: int, country: str, profile: str, *, today: date, tz) -> _Person:
    _, languages, zones, currency, factor = COUNTRIES[country]
    language = rng.choices([lang for lang, _ in languages], [w for _, w in languages])[0]
    firsts, lasts = NAMES.get((country, language)) or NAMES[(country, languages[0][0])]
    first, last = rng.choice(firsts), rng.choice(lasts)
    email = f"{_slug(first)}.{_slug(last)}{index}@{DOMAINS[index % len(DOMAINS)]}"

    order_days = _order_days(rng, profile)
    first_seen = max(order_days) if order_days else rng.randint(1, HISTORY_DAYS)
    signup = first_seen + rng.randint(0, 120 if order_days else 0)
    business = rng.random() < (0.25 if profile in ("champion", "regular") else 0.05)
    tags = []
    if profile == "champion" and rng.random() < 0.5 or rng.random() < 0.02:
        tags.append("vip")
    if rng.random() < 0.65:
        tags.append("newsletter")
    if rng.random() < 0.25:
        tags.append("eco")
    if business:
        tags.append("b2b")
    plan = rng.choice(("pro", "enterprise")) if business else rng.choices(PLANS[:3], (60, 25, 15))[0]
    contact = {
        "email": email,
        "first_name": first,
        "last_name": last,
        "country": country,
        "language": language,
        "timezone": rng.choice(zones),
        "tags": ";".join(tags),
        "status": "unsubscribed" if rng.random() < 0.04 else "subscribed",
        "created_at": _at(rng, today, signup, tz).isoformat(),
        "plan": plan,
        "account_type": "business" if business else "personal",
        "favourite_category": rng.choice(CATEGORIES),
    }
    low, high = PROFILES[profile][2]
    value = rng.uniform(low, high)
    orders = [
        _order(rng, f"DEMO-{index:05d}-{n:03d}", email, day, value * factor, currency, today=today, tz=tz)
        for n, day in enumerate(sorted(order_days, reverse=True), start=1)
    ]
    return _Person(contact, orders, _trial_events(rng, email, plan, signup, today=today, tz=tz))


def _order_days(rng: random.Random, profile: str) -> list[int]:
    """Days before today on which this customer ordered."""
    interval = PROFILES[profile][1]
    if interval is not None:
        days, out = rng.randint(HISTORY_DAYS - 240, HISTORY_DAYS), []
        # A champion or regular may have drifted away lately; most still order.
        stop = rng.randint(1, 120) if rng.random() < 0.2 else 1
        while days >= stop:
            out.append(days)
            days -= rng.randint(*interval)
        return out
    if profile == "occasional":
        return [rng.randint(1, HISTORY_DAYS) for _ in range(rng.choice((1, 1, 2, 2, 3, 4)))]
    if profile == "lapsed":
        return [rng.randint(190, HISTORY_DAYS) for _ in range(rng.randint(1, 6))]
    if profile == "new":
        return [rng.randint(1, 28)]
    return []


def _order(rng: random.Random, order_id: str, email: str, day: int, value: float, currency: str,
           *, today: date, tz) -> dict[str, Any]:
    total = max(4.95, round(rng.uniform(0.55, 1.5) * value) - 0.05)
    roll = rng.random()
    if roll < 0.02:
        status = "cancelled"
    elif roll < 0.06 and day > 10:
        status = "returned"
    elif day <= 2:
        status = rng.choice(("placed", "paid"))
    elif day <= 6:
        status = rng.choice(("paid", "shipped"))
    else:
        status = "delivered"
    row = {"order_id": order_id, "email": email, "placed_at": _at(rng, today, day, tz).isoformat(),
           "total": f"{total:.2f}", "currency": currency, "status": status}
    if rng.random() < 0.3:
        row["margin"] = f"{rng.uniform(0.22, 0.48):.2f}"
    return row


def _trial_events(rng: random.Random, email: str, plan: str, signup: int, *, today: date, tz) -> list[dict[str, Any]]:
    """trial_started for about a quarter of contacts; ~20% of trials convert, ~30% are cancelled."""
    if rng.random() >= 0.25:
        return []
    # Weighted towards recent trials, so trial drips have someone to talk to.
    start = rng.randint(1, max(1, min(45, signup))) if rng.random() < 0.35 else rng.randint(1, max(1, signup))
    trial_plan = plan if plan in ("pro", "enterprise") else "pro"
    events = [{"email": email, "type": "trial_started", "occurred_at": _at(rng, today, start, tz).isoformat(),
               "data": {"plan": trial_plan, "trial_days": 30, "source": rng.choice(("website", "newsletter", "ads"))}}]
    roll = rng.random()
    if roll < 0.2:
        day = start - rng.randint(5, 30)
        if day >= 1:
            events.append({"email": email, "type": "trial_converted", "occurred_at": _at(rng, today, day, tz).isoformat(),
                           "data": {"plan": trial_plan}})
    elif roll < 0.5:
        day = start - rng.randint(2, 20)
        if day >= 1:
            reason = rng.choice(("too expensive", "missing feature", "no time", "chose another product"))
            events.append({"email": email, "type": "trial_cancelled", "occurred_at": _at(rng, today, day, tz).isoformat(),
                           "data": {"reason": reason}})
    return events


def _at(rng: random.Random, today: date, days_ago: int, tz) -> datetime:
    """A local daytime moment `days_ago` days before today, as UTC (never later than the start of today)."""
    local = datetime.combine(today - timedelta(days=days_ago), time(rng.randint(7, 22), rng.randint(0, 59)), tzinfo=tz)
    return local.astimezone(timezone.utc)


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name.translate(_ASCII)).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


def _prune_stale_events(session: Session, wanted: list[dict[str, Any]]) -> None:
    """Delete demo trial events that today's data set no longer has (their dates moved with the clock)."""
    conn = session.connection()
    emails = sorted({e["email"].lower() for e in wanted})
    keep = {(e["email"].lower(), e["type"], datetime.fromisoformat(e["occurred_at"])) for e in wanted}
    stale = []
    for chunk in _chunks(emails, 1000):
        stmt = (
            select(Event.__table__.c.id, Contact.__table__.c.email_key, Event.__table__.c.type,
                   Event.__table__.c.occurred_at)
            .join(Contact.__table__, Contact.__table__.c.id == Event.__table__.c.contact_id)
            .where(Contact.__table__.c.email_key.in_(chunk), Event.__table__.c.type.in_(TRIAL_TYPES))
        )
        stale += [eid for eid, key, kind, at in conn.execute(stmt) if (key, kind, at) not in keep]
    for chunk in _chunks(stale, 1000):
        conn.execute(delete(Event.__table__).where(Event.__table__.c.id.in_(chunk)))


def _totals(session: Session, emails: list[str]) -> dict[str, int]:
    """How many demo contacts, tags, orders and events are stored."""
    conn = session.connection()
    contacts, tags, orders, events = Contact.__table__, ContactTag.__table__, Order.__table__, Event.__table__
    totals = {"contacts": 0, "tags": 0, "orders": 0, "events": 0}
    for chunk in _chunks(sorted(e.lower() for e in emails), 1000):
        ids = select(contacts.c.id).where(contacts.c.email_key.in_(chunk)).scalar_subquery()
        totals["contacts"] += conn.execute(select(func.count()).where(contacts.c.email_key.in_(chunk))).scalar_one()
        totals["tags"] += conn.execute(select(func.count()).select_from(tags).where(tags.c.contact_id.in_(ids))).scalar_one()
        totals["orders"] += conn.execute(select(func.count()).select_from(orders).where(orders.c.contact_id.in_(ids))).scalar_one()
        totals["events"] += conn.execute(select(func.count()).select_from(events).where(events.c.contact_id.in_(ids))).scalar_one()
    return totals


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
