"""Contests: a commitment fixed when the contest opens, entries with referrals, an auditable draw.

The draw, algorithm "valuemail-contest-v1", recomputable by anyone from what is published:

1. When the contest opens a seed is drawn: 32 random bytes written as 64 lower-case hex
   characters. Its commitment, SHA-256 of those 64 ASCII characters in lower-case hex, is fixed
   then and printed in every invitation. The seed stays secret until the draw.
2. The entry list is published as (entry number, tickets), with a masked e-mail address so that
   entrants can find themselves and nobody else learns an address. An entry's tickets are
   1 + bonus_entries_per_referral x the number of people who entered through its share link.
3. After the entry window has closed the seed is revealed. For entry e and ticket t = 1..tickets(e):
       score(e, t) = HMAC-SHA256(key = the seed's 64 ASCII characters, message = f"{e}:{t}" in ASCII)
   in lower-case hex; the entry's score is the lowest of its tickets' scores.
4. Entries are ordered by (score, entry number), ascending; the first N win (N = `winners`, or
   every entry when fewer entered), ranked 1..N.

Every ticket's score is uniform and independent, so an entry with k tickets is k times as likely
as a one-ticket entry to hold the lowest score, and the ranking is a ticket-weighted draw without
replacement. Because the seed was committed before anyone entered it cannot have been chosen to
favour someone; publishing the entry list after the close and before the draw (`valuemail
contest entries`) shows that no entry was slipped in once the seed was known.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import delete, exists, func, select, update
from sqlmodel import Session

from .db import upsert_insert
from .errors import NotFound, ValuemailError
from .models import (TRANSACTIONAL_ONLY, TRANSACTIONAL_STATUSES, Campaign, Contact, ContactStatus, Delivery,
                     DeliveryStatus, Event, Order, Run, RunStatus, Suppression)
from .models import Contest as ContestRow
from .models import ContestEntry
from .suppression import email_key, fingerprint, is_suppressed
from .tokens import MAX_ID, BadToken, TokenSigner

ALGORITHM = "valuemail-contest-v1"
DOCUMENT_FORMAT = "valuemail-contest-entries/1"
#: The salt of share-link tokens, so that no other link's token is accepted as one.
REFERRAL_SALT = "valuemail.contest-referral"
#: The salt of the links in the mail that confirms an entry made through a share link.
CONFIRM_SALT = "valuemail.contest-confirm"
#: How long a confirmation link works after its mail was sent.
CONFIRM_MAX_AGE = timedelta(days=7)
#: A new confirmation mail for the same address and contest is queued at most this often.
CONFIRM_COOLDOWN = timedelta(minutes=10)
#: The template of the confirmation mail (its strings: templates/emails/strings/contest_confirm.toml).
CONFIRM_TEMPLATE = "contest_confirm.mjml"
#: The event that records a newsletter opt-in given while confirming an entry (proof of consent).
CONSENT_EVENT = "newsletter_consent"


class ContestError(ValuemailError):
    """Base of the contest errors a person can act on."""


class EntryRefused(ContestError):
    """An entry that cannot be accepted; `reason` is a stable code for web pages to pick a text."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class DrawRefused(ContestError):
    """The draw cannot happen (not closed yet, already drawn, never opened)."""


# -- the rules a contest runs by ------------------------------------------------------------------

@dataclass(frozen=True)
class ContestRules:
    """What the domain needs from a `[contest]` section, with instants as aware UTC."""

    opens_at: datetime
    closes_at: datetime
    winners: int
    bonus_entries_per_referral: int
    draw_at: datetime | None = None

    @classmethod
    def from_section(cls, section: Any, *, tz: ZoneInfo) -> "ContestRules":
        """The rules of a `[contest]` section; times without an offset are in `tz`."""
        return cls(opens_at=to_utc(section.opens_at, tz), closes_at=to_utc(section.closes_at, tz),
                   winners=section.winners, bonus_entries_per_referral=section.bonus_entries_per_referral,
                   draw_at=to_utc(section.draw_at, tz) if section.draw_at else None)


def to_utc(value: datetime, tz: ZoneInfo) -> datetime:
    """`value` as aware UTC, reading a naive value as wall time in `tz`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(timezone.utc)


# -- opening: the commitment ----------------------------------------------------------------------

def commitment_of(seed: str) -> str:
    """The commitment to a seed: SHA-256 of its ASCII characters, lower-case hex."""
    return hashlib.sha256(seed.encode("ascii")).hexdigest()


def open_contest(session: Session, campaign_id: str, *, now: datetime) -> ContestRow:
    """Fix the contest's secret seed and its commitment, once; later calls return the same row."""
    seed = secrets.token_hex(32)
    # Insert-or-ignore, so that concurrent openers agree on the first seed and nobody rewrites it.
    stmt = upsert_insert(session, ContestRow).values(campaign_id=campaign_id, seed=seed, seed_hash=commitment_of(seed),
                                              opened_at=now, winners=[])
    session.execute(stmt.on_conflict_do_nothing(index_elements=["campaign_id"]))
    return get_contest(session, campaign_id)


def get_contest(session: Session, campaign_id: str) -> ContestRow | None:
    """The contest row of `campaign_id`, or None before it opened."""
    return session.execute(select(ContestRow).where(ContestRow.campaign_id == campaign_id)
                           .execution_options(populate_existing=True)).scalars().first()


# -- entering -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EntryResult:
    """The contact's entry; `created` is False when they had entered before."""

    entry_id: int
    created: bool
    referred_by: int | None


def window_state(contest: ContestRow | None, rules: ContestRules, now: datetime) -> str:
    """"not_open" (before the window or never opened), "open", or "closed" (after it, or drawn)."""
    if contest is None or now < rules.opens_at:
        return "not_open"
    if now > rules.closes_at or contest.drawn_at is not None:
        return "closed"
    return "open"


def check_window(contest: ContestRow | None, rules: ContestRules, now: datetime) -> None:
    """EntryRefused ("not_open" or "closed") unless `now` is inside the contest's entry window."""
    state = window_state(contest, rules, now)
    if state == "not_open" and contest is None:
        raise EntryRefused("not_open", "This contest has not opened yet.")
    if state == "not_open":
        raise EntryRefused("not_open", f"This contest opens on {rules.opens_at:%Y-%m-%d %H:%M} UTC; "
                                       "please come back then.")
    if state == "closed":
        raise EntryRefused("closed", f"Entries closed on {rules.closes_at:%Y-%m-%d %H:%M} UTC. "
                                     "Thank you for your interest!")


def may_take_part(session: Session, contact: Contact) -> bool:
    """True when a win could be mailed to the contact: not erased, not opted out, address not suppressed."""
    return (contact.erased_at is None and contact.status in TRANSACTIONAL_STATUSES
            and not is_suppressed(session, contact.email))


def enter(session: Session, campaign_id: str, contact_id: int, *, rules: ContestRules, now: datetime,
          referred_by: int | None = None) -> EntryResult:
    """Enter a contact into the draw: once per contact, only inside the window, never self-referred."""
    check_window(get_contest(session, campaign_id), rules, now)
    if referred_by is not None and referred_by == contact_id:
        raise EntryRefused("self_referral", "Your own share link is for your friends; "
                                            "use the link in your invitation to enter yourself.")
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise EntryRefused("unknown_contact", "We could not find your subscription.")
    if not may_take_part(session, contact):
        # A winner must be told by mail; an address we may no longer mail could never be.
        raise EntryRefused("unavailable", "This address no longer receives our mail, so it cannot take part.")
    if referred_by is not None and session.get(Contact, referred_by) is None:
        referred_by = None  # the referrer was erased since sharing: the friend still enters
    stmt = upsert_insert(session, ContestEntry).values(campaign_id=campaign_id, contact_id=contact_id,
                                                 referred_by=referred_by, entered_at=now)
    created = session.execute(stmt.on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"])
                              .returning(ContestEntry.id)).scalar() is not None
    # Whoever referred the first entry keeps the credit: re-entering cannot move a referral.
    entry = session.execute(select(ContestEntry.id, ContestEntry.referred_by).where(
        ContestEntry.campaign_id == campaign_id, ContestEntry.contact_id == contact_id)).one()
    return EntryResult(entry_id=entry.id, created=created, referred_by=entry.referred_by)


def tickets(session: Session, campaign_id: str, contact_id: int, *, bonus_entries_per_referral: int) -> int:
    """A contact's tickets: 0 without an entry, else 1 + bonus x the referred people who entered."""
    entered = session.execute(select(ContestEntry.id).where(
        ContestEntry.campaign_id == campaign_id, ContestEntry.contact_id == contact_id)).first()
    if entered is None:
        return 0
    referred = session.execute(select(func.count()).where(
        ContestEntry.campaign_id == campaign_id, ContestEntry.referred_by == contact_id)).scalar()
    return 1 + bonus_entries_per_referral * referred


@dataclass(frozen=True)
class Standing:
    """Where a contact stands in a contest: entered or not, tickets, friends who entered through their link."""

    entered: bool
    tickets: int
    friends: int


def standing(session: Session, campaign_id: str, contact_id: int, *, bonus_entries_per_referral: int) -> Standing:
    """The contact's entry, tickets and referred friends (two indexed counts)."""
    entered = session.execute(select(ContestEntry.id).where(
        ContestEntry.campaign_id == campaign_id, ContestEntry.contact_id == contact_id)).first() is not None
    friends = session.execute(select(func.count()).where(
        ContestEntry.campaign_id == campaign_id, ContestEntry.referred_by == contact_id)).scalar()
    return Standing(entered=entered, tickets=1 + bonus_entries_per_referral * friends if entered else 0,
                    friends=friends)


@dataclass(frozen=True)
class Entrant:
    """One entry with what the draw needs; `contact_id` and `email` are never published."""

    entry_id: int
    contact_id: int
    email: str
    tickets: int

    def published(self) -> dict[str, Any]:
        """The entry as the public list shows it: number, masked address, tickets."""
        return {"entry": self.entry_id, "email": mask_email(self.email), "tickets": self.tickets}


def entrants(session: Session, campaign_id: str, *, bonus_entries_per_referral: int) -> list[Entrant]:
    """Every entry of the contest with its tickets, ordered by entry number (two queries' worth of SQL)."""
    referrals = (select(ContestEntry.referred_by.label("contact_id"), func.count().label("n"))
                 .where(ContestEntry.campaign_id == campaign_id, ContestEntry.referred_by.is_not(None))
                 .group_by(ContestEntry.referred_by).subquery())
    rows = session.execute(
        select(ContestEntry.id, ContestEntry.contact_id, Contact.email, func.coalesce(referrals.c.n, 0))
        .join(Contact, Contact.id == ContestEntry.contact_id)
        .outerjoin(referrals, referrals.c.contact_id == ContestEntry.contact_id)
        .where(ContestEntry.campaign_id == campaign_id).order_by(ContestEntry.id)
    ).all()
    return [Entrant(entry_id=i, contact_id=c, email=e, tickets=1 + bonus_entries_per_referral * int(n))
            for i, c, e, n in rows]


def mask_email(email: str) -> str:
    """`anneke@example.nl` -> `a***@e***.nl`: enough to recognise one's own entry, not to learn an address."""
    local, _, domain = email.partition("@")
    host, dot, tld = domain.rpartition(".")
    if not dot:
        host, tld = domain, ""
    return f"{local[:1]}***@{host[:1]}***{dot}{tld}"


# -- the draw -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pick:
    """A winning entry: its rank, entry number, tickets and winning score (hex)."""

    rank: int
    entry_id: int
    tickets: int
    score: str


def ticket_score(seed: str, entry_id: int, ticket: int) -> str:
    """HMAC-SHA256(seed, "entry:ticket") in lower-case hex (step 3 of the module docstring)."""
    return hmac.new(seed.encode("ascii"), f"{entry_id}:{ticket}".encode("ascii"), hashlib.sha256).hexdigest()


def pick_winners(seed: str, entries: Iterable[tuple[int, int]], count: int) -> list[Pick]:
    """The winners among (entry number, tickets) pairs: steps 3 and 4 of the module docstring."""
    scored = []
    for entry_id, n in entries:
        if n < 1:
            continue
        best = min(ticket_score(seed, entry_id, t) for t in range(1, n + 1))
        scored.append((best, entry_id, n))
    scored.sort()
    return [Pick(rank=rank, entry_id=entry_id, tickets=n, score=score)
            for rank, (score, entry_id, n) in enumerate(scored[:count], start=1)]


@dataclass(frozen=True)
class Winner:
    """A drawn entry with the contact it belongs to (for the notification, never published)."""

    rank: int
    entry_id: int
    contact_id: int
    email: str
    tickets: int


@dataclass
class DrawResult:
    """What a draw decided and revealed."""

    campaign_id: str
    seed: str
    commitment: str
    drawn_at: datetime
    winners: list[Winner]
    entrants: list[Entrant] = field(repr=False)

    @property
    def tickets_total(self) -> int:
        return sum(e.tickets for e in self.entrants)


def draw(session: Session, campaign_id: str, *, rules: ContestRules, now: datetime) -> DrawResult:
    """Draw the winners once, after the entry window closed, and record them with the seed revealed."""
    contest = get_contest(session, campaign_id)
    if contest is None:
        raise DrawRefused(f"contest '{campaign_id}' never opened (no invitation was sent), so there is nothing to draw")
    if contest.drawn_at is not None:
        raise DrawRefused(f"contest '{campaign_id}' was already drawn at {contest.drawn_at:%Y-%m-%d %H:%M} UTC; "
                          "a draw happens once (see `valuemail contest entries` for the result)")
    if now <= rules.closes_at:
        raise DrawRefused(f"contest '{campaign_id}' is open for entries until {rules.closes_at:%Y-%m-%d %H:%M:%S} UTC; "
                          "the draw can only happen after that")
    if rules.draw_at is not None and now < rules.draw_at:
        raise DrawRefused(f"contest '{campaign_id}' is to be drawn at {rules.draw_at:%Y-%m-%d %H:%M} UTC, not before")
    found = entrants(session, campaign_id, bonus_entries_per_referral=rules.bonus_entries_per_referral)
    by_id = {e.entry_id: e for e in found}
    picks = pick_winners(contest.seed, [(e.entry_id, e.tickets) for e in found], rules.winners)
    winners = [Winner(rank=p.rank, entry_id=p.entry_id, contact_id=by_id[p.entry_id].contact_id,
                      email=by_id[p.entry_id].email, tickets=p.tickets) for p in picks]
    recorded = [{"rank": p.rank, "entry_id": p.entry_id, "contact_id": by_id[p.entry_id].contact_id,
                 "tickets": p.tickets, "score": p.score} for p in picks]
    # The guard on drawn_at makes a concurrent second draw update nothing, so it is refused.
    done = session.execute(update(ContestRow).where(ContestRow.campaign_id == campaign_id, ContestRow.drawn_at.is_(None))
                           .values(drawn_at=now, winners=recorded)).rowcount
    if done != 1:
        raise DrawRefused(f"contest '{campaign_id}' was drawn by someone else just now")
    return DrawResult(campaign_id=campaign_id, seed=contest.seed, commitment=contest.seed_hash, drawn_at=now,
                      winners=winners, entrants=found)


# -- publishing and verifying ---------------------------------------------------------------------

def entries_digest(entries: Iterable[tuple[int, int]]) -> str:
    """SHA-256 over the lines "entry:tickets\\n" in entry order: a short fingerprint of the list."""
    text = "".join(f"{entry_id}:{n}\n" for entry_id, n in sorted(entries))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def published_document(session: Session, campaign_id: str, *, rules: ContestRules) -> dict[str, Any]:
    """The public record of the contest: commitment, entries (masked), and once drawn the seed and winners."""
    contest = get_contest(session, campaign_id)
    if contest is None:
        raise NotFound(f"contest '{campaign_id}' has not opened yet (its invitation was never sent)")
    found = entrants(session, campaign_id, bonus_entries_per_referral=rules.bonus_entries_per_referral)
    drawn = contest.drawn_at is not None
    return {
        "format": DOCUMENT_FORMAT,
        "algorithm": ALGORITHM,
        "contest": campaign_id,
        "opens_at": _iso(rules.opens_at),
        "closes_at": _iso(rules.closes_at),
        "winners": rules.winners,
        "bonus_entries_per_referral": rules.bonus_entries_per_referral,
        "commitment": contest.seed_hash,
        "seed": contest.seed if drawn else None,  # secret until the draw
        "drawn_at": _iso(contest.drawn_at) if drawn else None,
        "entries_sha256": entries_digest((e.entry_id, e.tickets) for e in found),
        "entries": [e.published() for e in found],
        "result": [{"rank": w["rank"], "entry": w["entry_id"]} for w in contest.winners] if drawn else None,
        # The ranking goes on past the winners: the next entries step in for an unclaimed prize.
        "reserves": _reserves(contest.seed, found, rules.winners) if drawn else None,
    }


def _reserves(seed: str, found: Sequence[Entrant], winners: int) -> list[dict[str, int]]:
    ranked = pick_winners(seed, [(e.entry_id, e.tickets) for e in found], 2 * winners)
    return [{"rank": p.rank, "entry": p.entry_id} for p in ranked[winners:]]


@dataclass
class Verification:
    """The outcome of recomputing a draw: `ok` when every check passed, else the `problems`."""

    problems: list[str]
    recomputed: list[Pick]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_document(document: dict[str, Any]) -> Verification:
    """Recompute the winners of a published document and compare them with its recorded result."""
    problems: list[str] = []
    seed, commitment = document.get("seed"), document.get("commitment")
    if document.get("algorithm") != ALGORITHM:
        problems.append(f"unknown algorithm {document.get('algorithm')!r} (expected {ALGORITHM})")
    if not seed:
        return Verification(problems + ["the contest has not been drawn: the seed is not revealed yet"], [])
    if not isinstance(seed, str) or not seed.isascii():
        return Verification(problems + ["the seed is not an ASCII string"], [])
    if commitment_of(seed) != commitment:
        problems.append(f"the revealed seed does not match the commitment: sha256(seed) = {commitment_of(seed)}, "
                        f"committed {commitment}")
    pairs = [(int(e["entry"]), int(e["tickets"])) for e in document.get("entries") or []]
    if len({p[0] for p in pairs}) != len(pairs):
        problems.append("an entry number appears twice in the entry list")
    digest = document.get("entries_sha256")
    if digest is not None and digest != entries_digest(pairs):
        problems.append("the entry list does not match its fingerprint entries_sha256")
    picks = pick_winners(seed, pairs, int(document.get("winners") or 0))
    recorded = [(int(r["rank"]), int(r["entry"])) for r in document.get("result") or []]
    if recorded != [(p.rank, p.entry_id) for p in picks]:
        problems.append("the recorded winners differ from the recomputed ones: recorded "
                        f"{[e for _, e in recorded]}, recomputed {[p.entry_id for p in picks]}")
    return Verification(problems, picks)


def verify(session: Session, campaign_id: str, *, rules: ContestRules) -> Verification:
    """Recompute the stored draw from the seed and the entry list as published now."""
    return verify_document(published_document(session, campaign_id, rules=rules))


# -- links ----------------------------------------------------------------------------------------

def entry_url(signer: TokenSigner, base_url: str, delivery_id: int) -> str:
    """The personal "Join the draw" link of an invitation."""
    return f"{base_url}/c/{signer.sign('contest', delivery_id)}"


def referral_token(secret_key: str, campaign_id: str, contact_id: int) -> str:
    """A share-link token naming the referrer, bound to this contest and signed with its own salt."""
    return URLSafeSerializer(secret_key, salt=REFERRAL_SALT).dumps([campaign_id, contact_id])


def share_url(secret_key: str, base_url: str, campaign_id: str, contact_id: int) -> str:
    """The personal link an entrant shares; friends who enter through it earn the entrant bonus entries."""
    return f"{base_url}/c/r/{referral_token(secret_key, campaign_id, contact_id)}"


def referrer_of(secret_key: str, token: str) -> tuple[str, int]:
    """(campaign id, referrer contact id) from a share-link token, or BadToken."""
    try:
        value = URLSafeSerializer(secret_key, salt=REFERRAL_SALT).loads(token)
    except BadSignature:
        raise BadToken("this link is not valid") from None
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str)
            or not isinstance(value[1], int) or isinstance(value[1], bool) or not 0 < value[1] <= MAX_ID):
        raise BadToken("this link is not valid")
    return value[0], value[1]


def entrant_of_link(session: Session, signer: TokenSigner, token: str) -> tuple[str, int]:
    """(campaign id, contact id) behind a personal entry link; test sends never enter anyone."""
    delivery_id = signer.unsign("contest", token)
    row = session.execute(select(Run.campaign_id, Delivery.contact_id, Run.is_test)
                          .join(Run, Run.id == Delivery.run_id).where(Delivery.id == delivery_id)).first()
    if row is None or row.is_test:
        raise BadToken("this link is not valid")
    return row.campaign_id, row.contact_id


# -- entering through a share link: confirmed by email ---------------------------------------------
#
# A share link names the contest and the referrer, not the visitor, so whoever opens it types an
# address and gets a mail with a link that proves they own it (double opt-in). Only confirming
# enters them, and only their entry counts for the referrer. The page answers the same "check
# your inbox" whatever the address, so it cannot be used to learn who is a contact.
#
# The delivery ledger needs a contact for every mail, so an address that is no contact yet becomes
# one when its confirmation is queued, with status TRANSACTIONAL_ONLY: never in a segment, never
# sent marketing, reachable only by mail they asked for (this confirmation, a winner's notice).
# Ticking "also send me the newsletter" on the confirm page makes them subscribed, recorded as a
# CONSENT_EVENT. Suppressed and erased addresses are never created, queued or entered.

@dataclass(frozen=True)
class Confirmation:
    """What a confirmation link stands for: this address enters this contest, referred by that contact."""

    campaign_id: str
    email: str
    referrer_id: int | None


class ConfirmationExpired(BadToken):
    """A genuine confirmation link past CONFIRM_MAX_AGE; `confirmation` is what it was for."""

    def __init__(self, confirmation: Confirmation):
        super().__init__("this link has expired")
        self.confirmation = confirmation


class _ClockSigner(TimestampSigner):
    """A timestamp signer that reads the caller's clock, so links age by the engine's time."""

    def __init__(self, *args: Any, now: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return self._now


def _confirm_serializer(secret_key: str, now: datetime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=CONFIRM_SALT, signer=_ClockSigner,
                                  signer_kwargs={"now": int(now.timestamp())})


def confirm_token(secret_key: str, campaign_id: str, email: str, referrer_id: int | None, *, now: datetime) -> str:
    """A confirmation-link token, signed at `now` with its own salt."""
    return _confirm_serializer(secret_key, now).dumps([campaign_id, email, referrer_id])


def confirm_url(secret_key: str, base_url: str, campaign_id: str, email: str, referrer_id: int | None, *,
                now: datetime) -> str:
    """The link in the confirmation mail: /c/confirm/<token>."""
    return f"{base_url}/c/confirm/{confirm_token(secret_key, campaign_id, email, referrer_id, now=now)}"


def confirmation_of(secret_key: str, token: str, *, now: datetime) -> Confirmation:
    """What a confirmation token stands for; BadToken when forged, ConfirmationExpired when too old."""
    serializer = _confirm_serializer(secret_key, now)
    try:
        value = serializer.loads(token, max_age=int(CONFIRM_MAX_AGE.total_seconds()))
    except SignatureExpired as exc:
        # The signature is genuine, only old: what it names can be trusted to offer a new link.
        try:
            confirmation = _confirmation(serializer.load_payload(exc.payload))
        except (BadSignature, BadToken):
            raise BadToken("this link is not valid") from None
        raise ConfirmationExpired(confirmation) from None
    except BadSignature:
        raise BadToken("this link is not valid") from None
    return _confirmation(value)


def _confirmation(value: Any) -> Confirmation:
    if not isinstance(value, list) or len(value) != 3:
        raise BadToken("this link is not valid")
    campaign_id, email, referrer = value
    if not isinstance(campaign_id, str) or not isinstance(email, str) or "@" not in email or len(email) > 320:
        raise BadToken("this link is not valid")
    if referrer is not None and (not isinstance(referrer, int) or isinstance(referrer, bool)
                                 or not 0 < referrer <= MAX_ID):
        raise BadToken("this link is not valid")
    return Confirmation(campaign_id=campaign_id, email=email, referrer_id=referrer)


def contact_by_email(session: Session, email: str, *, for_update: bool = False) -> Contact | None:
    """The contact with this address (case-insensitive); locked for the transaction with `for_update`."""
    query = select(Contact).where(Contact.email_key == email_key(email))
    if for_update:
        query = query.with_for_update()  # PostgreSQL; SQLite writers are serialised anyway
    return session.execute(query.execution_options(populate_existing=True)).scalars().first()


def _create_contact(session: Session, email: str, *, status: str, language: str | None, now: datetime) -> Contact:
    """The contact for `email`, inserted unless a concurrent request did so first; locked."""
    stmt = upsert_insert(session, Contact).values(email=email.strip(), email_key=email_key(email), status=status,
                                           language=language, attributes={}, first_name="", last_name="",
                                           created_at=now, updated_at=now)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["email_key"]))
    return contact_by_email(session, email, for_update=True)


def request_confirmation(session: Session, campaign, *, rules: ContestRules, email: str, referrer_id: int,
                         language: str | None, settings, now: datetime) -> bool:
    """Queue the mail that confirms a share-link entry; False when nothing was queued.

    Nothing is queued for an address we must not mail (suppressed, erased, opted out), nor while
    another confirmation for it is waiting or went out less than CONFIRM_COOLDOWN ago. Callers show
    the same page either way, so the answer never tells whether an address is a contact.
    """
    check_window(get_contest(session, campaign.id), rules, now)
    if is_suppressed(session, email):
        return False
    contact = contact_by_email(session, email, for_update=True)
    if contact is None:
        contact = _create_contact(session, email, status=TRANSACTIONAL_ONLY, language=language, now=now)
    if not may_take_part(session, contact) or _confirmation_pending(session, campaign.id, contact.id, now=now):
        return False
    _queue_confirmation(session, campaign, contact, referrer_id=referrer_id, settings=settings, now=now)
    return True


def _confirmation_pending(session: Session, campaign_id: str, contact_id: int, *, now: datetime) -> bool:
    """True while a confirmation to the contact is queued or was created within CONFIRM_COOLDOWN."""
    rows = session.execute(
        select(Delivery.status, Delivery.created_at, Delivery.data).join(Run, Run.id == Delivery.run_id)
        .where(Run.campaign_id == campaign_id, Run.transactional.is_(True), Delivery.contact_id == contact_id)
        .order_by(Delivery.id.desc()).limit(50)
    ).all()
    waiting = (DeliveryStatus.queued.value, DeliveryStatus.claimed.value)
    return any((data or {}).get("mail") == "confirm" and (status in waiting or created_at > now - CONFIRM_COOLDOWN)
               for status, created_at, data in rows)


def _queue_confirmation(session: Session, campaign, contact: Contact, *, referrer_id: int, settings,
                        now: datetime) -> Run:
    """A transactional run with the one confirmation delivery, ready for the sending workers."""
    from .sending import ledger

    mail = confirmation_campaign(campaign, settings=settings)
    occurrence = now
    # Runs are unique per (campaign, instant): another mail queued in the same microsecond takes the next one.
    for _ in range(1000):
        run, created = ledger.create_run(session, mail, occurrence_at=occurrence, now=now, transactional=True)
        if created:
            break
        occurrence += timedelta(microseconds=1)
    else:
        raise ContestError(f"contest '{campaign.id}': could not queue a confirmation mail, please try again")
    segment = _invitation_segments(session, campaign.id, [contact.id]).get(contact.id)
    session.add(Delivery(run_id=run.id, contact_id=contact.id, email=contact.email,
                         segment=segment if segment in mail.variants else mail.segments[-1],
                         status=DeliveryStatus.queued.value, attempts=0,
                         data={"mail": "confirm", "referrer": referrer_id}, created_at=now, updated_at=now))
    # Sending in the same transaction: a run left "populating" would be filled with the whole audience.
    run.total = 1
    run.status = RunStatus.sending.value
    run.started_at = now
    session.add(run)
    session.flush()
    return run


@dataclass(frozen=True)
class ConfirmedEntry:
    """The outcome of a confirmation: whose entry, and the entry itself."""

    contact_id: int
    entry: EntryResult


def confirm_entry(session: Session, confirmation: Confirmation, *, rules: ContestRules, language: str | None,
                  newsletter: bool, now: datetime) -> ConfirmedEntry:
    """Enter the confirmed address (creating its contact if need be), credited to the referrer once.

    `newsletter` is the visitor's own unticked-by-default choice: only then does a contact who never
    subscribed become subscribed, and the consent is recorded as an event.
    """
    campaign_id = confirmation.campaign_id
    check_window(get_contest(session, campaign_id), rules, now)
    contact = contact_by_email(session, confirmation.email, for_update=True)
    if contact is None:
        if is_suppressed(session, confirmation.email):
            raise EntryRefused("unavailable", "This address no longer receives our mail, so it cannot take part.")
        contact = _create_contact(session, confirmation.email, status=TRANSACTIONAL_ONLY, language=language, now=now)
    result = enter(session, campaign_id, contact.id, rules=rules, now=now, referred_by=confirmation.referrer_id)
    if newsletter and contact.status == TRANSACTIONAL_ONLY:
        contact.status = ContactStatus.subscribed.value
        contact.updated_at = now
        session.add(contact)
        session.execute(upsert_insert(session, Event).values(
            contact_id=contact.id, type=CONSENT_EVENT, occurred_at=now,
            data={"source": "contest confirmation", "campaign": campaign_id},
        ).on_conflict_do_nothing(index_elements=["contact_id", "type", "occurred_at"]))
        session.flush()
    return ConfirmedEntry(contact_id=contact.id, entry=result)


#: Contacts erased per purge call; a tick does one call, the command repeats until none is left.
PURGE_BATCH = 200


def unconfirmed_contacts(session: Session, *, older_than: timedelta, now: datetime, limit: int) -> list[int]:
    """Ids of contacts made for a contest confirmation and never confirmed, untouched for `older_than`.

    Such a contact is still TRANSACTIONAL_ONLY (ticking the newsletter box subscribes), entered no
    contest, placed no order, was created before the cut-off and was sent nothing since it (a newer
    confirmation request keeps it: its link may still be followed).
    """
    cutoff = now - older_than
    return list(session.execute(
        select(Contact.id).where(
            Contact.status == TRANSACTIONAL_ONLY, Contact.erased_at.is_(None), Contact.created_at < cutoff,
            ~exists().where(ContestEntry.contact_id == Contact.id),
            ~exists().where(Order.contact_id == Contact.id),
            ~exists().where(Delivery.contact_id == Contact.id, Delivery.created_at >= cutoff))
        .order_by(Contact.id).limit(limit)).scalars())


def purge_unconfirmed(session: Session, *, older_than: timedelta, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Erase (engine.privacy.erase) up to `limit` never-confirmed contest contacts; how many were erased.

    These people never asked to be forgotten, nor to be mailed: once erased, the fingerprint that
    erasure leaves on the suppression list is removed again unless the address was suppressed
    before (a bounce or complaint on the confirmation mail), so nothing of the address stays and a
    later sign-up of their own is not refused.
    """
    from .privacy import erase

    ids = unconfirmed_contacts(session, older_than=older_than, now=now, limit=limit)
    for contact_id in ids:
        address = session.get(Contact, contact_id).email
        suppressed = is_suppressed(session, address)
        erase(session, contact_id, now=now)
        if not suppressed:
            session.execute(delete(Suppression).where(Suppression.email_key == fingerprint(email_key(address))))
    session.flush()
    return len(ids)


def confirmation_campaign(campaign, *, settings):
    """The campaign as the confirmation mail uses it: its own subject and template, no schedule.

    Per-segment contest texts (a variant's headline) are kept; the run stores this definition, so
    the workers and "view in browser" show exactly the mail that was sent.
    """
    from .campaigns import load_campaign

    section_key = campaign.kind.section_key
    data = {key: value for key, value in campaign.raw.items()
            if key not in ("schedule", "preheader", "local_time", "variants")}
    data["subject"] = "{{ t.confirm_subject }}"
    data["template"] = CONFIRM_TEMPLATE
    variants = {segment: {section_key: override[section_key]}
                for segment, override in (campaign.raw.get("variants") or {}).items() if section_key in override}
    if variants:
        data["variants"] = variants
    source = "# The entry confirmation mail of this contest (generated by the contest share page).\n" + dump_toml(data)
    return load_campaign(campaign.path, settings=settings, segment_names=None, today=None, source=source)


# -- the winners' notification --------------------------------------------------------------------

def stored_campaign(session: Session, campaign_id: str, *, settings):
    """The contest's campaign as last sent (its stored file), so later edits cannot change the rules."""
    from .campaigns import load_campaign

    row = session.get(Campaign, campaign_id)
    if row is None:
        raise NotFound(f"contest '{campaign_id}' has not opened yet: no invitation was ever sent "
                       f"(send it with `valuemail send {campaign_id}`)")
    if row.kind != "contest" or not isinstance(row.definition, dict) or not {"file", "source"} <= row.definition.keys():
        raise NotFound(f"campaign '{campaign_id}' is a {row.kind} campaign, not a contest that was sent")
    campaign = load_campaign(settings.campaigns_dir / row.definition["file"], settings=settings, segment_names=None,
                             today=None, source=row.definition["source"])
    if campaign.kind_name != "contest":
        raise NotFound(f"campaign '{campaign_id}' is a {campaign.kind_name} campaign, not a contest")
    return campaign


def winner_campaign(campaign, *, settings):
    """The campaign as the winners' mail uses it: winner subject and template, no schedule.

    The run stores this definition, so the sending workers, "view in browser" and anyone
    auditing the run see exactly the subject and template the winners got.
    """
    from .campaigns import load_campaign

    section = campaign.section
    data = {key: value for key, value in campaign.raw.items() if key not in ("schedule", "preheader")}
    data["subject"] = section.winner_subject
    data["template"] = section.winner_template or campaign.raw["template"]
    variants = {}
    for segment, override in (campaign.raw.get("variants") or {}).items():
        kept = {k: v for k, v in override.items() if k not in ("subject", "template", "preheader")}
        own = campaign.variants[segment].section if segment in campaign.variants else section
        if own.winner_subject != section.winner_subject:
            kept["subject"] = own.winner_subject
        if own.winner_template and own.winner_template != section.winner_template:
            kept["template"] = own.winner_template
        if kept:
            variants[segment] = kept
    data.pop("variants", None)
    if variants:
        data["variants"] = variants
    source = "# The winners' notification of this contest (generated by `valuemail contest draw`).\n" + dump_toml(data)
    return load_campaign(campaign.path, settings=settings, segment_names=None, today=None, source=source)


def create_winner_run(session: Session, campaign, result: DrawResult, *, now: datetime) -> Run | None:
    """A transactional run with one delivery per winner (data: mail "winner", rank), ready to drain."""
    from .sending import ledger

    if not result.winners:
        return None
    run, created = ledger.create_run(session, campaign, occurrence_at=now, now=now, transactional=True)
    if not created:
        raise DrawRefused(f"another run of '{campaign.id}' exists at this very instant; run the draw again")
    segments = _invitation_segments(session, campaign.id, [w.contact_id for w in result.winners])
    fallback = campaign.segments[-1]
    contacts = {c.id: c for c in session.execute(
        select(Contact).where(Contact.id.in_([w.contact_id for w in result.winners]))).scalars()}
    for winner in result.winners:
        segment = segments.get(winner.contact_id)
        session.add(Delivery(run_id=run.id, contact_id=winner.contact_id, email=contacts[winner.contact_id].email,
                             segment=segment if segment in campaign.variants else fallback,
                             status=DeliveryStatus.queued.value, attempts=0,
                             data={"mail": "winner", "rank": winner.rank}, created_at=now, updated_at=now))
    run.total = len(result.winners)
    run.status = RunStatus.sending.value
    run.started_at = now
    session.add(run)
    session.flush()
    return run


def winner_mail_problems(campaign, *, settings) -> list:
    """Render every variant of the winners' mail for a sample winner; the problems found (file:line)."""
    from .errors import Problem
    from .rendering import Renderer
    from .sending.compose import SAMPLE_CONTACT, Composer, sample_recipient

    renderer = Renderer(settings.templates_dir)
    composer = Composer(campaign=campaign, run_id=0, settings=settings, renderer=renderer,
                        signer=TokenSigner(settings.secret_key))
    problems = []
    for segment, variant in campaign.variants.items():
        recipient = sample_recipient(campaign, segment)
        recipient.data = {"mail": "winner", "rank": 1}
        context = composer.context(1, SAMPLE_CONTACT, recipient)
        for problem in renderer.check(variant.template, subject=variant.subject, context=context,
                                      variant=f"{campaign.id}:{segment}:winner"):
            problems.append(Problem(problem.file, problem.line, f"{problem.message} (winners' mail, variant {segment})"))
    return problems


@dataclass
class DrawOutcome:
    """A recorded draw and the transactional run that tells the winners (None without winners)."""

    result: DrawResult
    rules: ContestRules
    run_id: int | None


def draw_contest(session: Session, campaign_id: str, *, settings, now: datetime) -> DrawOutcome:
    """Draw a contest and queue its winners' mail, in the caller's transaction.

    The winners' mail is rendered for a sample winner first: a template mistake is reported
    before the seed is revealed, not after.
    """
    from .errors import CampaignError

    campaign = stored_campaign(session, campaign_id, settings=settings)
    rules = ContestRules.from_section(campaign.section, tz=settings.tz)
    winner_mail = winner_campaign(campaign, settings=settings)
    problems = winner_mail_problems(winner_mail, settings=settings)
    if problems:
        raise CampaignError(problems)
    result = draw(session, campaign_id, rules=rules, now=now)
    run = create_winner_run(session, winner_mail, result, now=now)
    return DrawOutcome(result=result, rules=rules, run_id=run.id if run else None)


def _invitation_segments(session: Session, campaign_id: str, contact_ids: Sequence[int]) -> dict[int, str]:
    """The segment each contact's latest invitation was rendered for, so the winner mail matches it."""
    rows = session.execute(
        select(Delivery.contact_id, Delivery.segment).join(Run, Run.id == Delivery.run_id)
        .where(Run.campaign_id == campaign_id, Run.is_test.is_(False), Run.transactional.is_(False),
               Delivery.contact_id.in_(contact_ids))
        .order_by(Delivery.id)
    ).all()
    return {contact_id: segment for contact_id, segment in rows}


# -- helpers --------------------------------------------------------------------------------------

def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def dump_toml(data: dict[str, Any]) -> str:
    """TOML text for plain data, one `key = value` line per top-level key (tables written inline)."""
    return "".join(f"{_toml_key(key)} = {_toml_value(value)}\n" for key, value in data.items())


def _toml_key(key: str) -> str:
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime) or hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
