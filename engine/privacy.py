"""A person's rights over their data: a copy of everything we hold ("download my data") and erasure.

Erasure keeps what the books and the statistics need and removes who it was about:
- the contact row stays (orders, points and deliveries point at it) but its address becomes
  `erased-<id>@erased.invalid`, names, country, language, timezone, attributes and tags go,
  its status is unsubscribed and `erased_at` is set;
- every delivery's address becomes that placeholder, trigger data and timeline details are wiped,
  queued deliveries are skipped;
- event payloads, points notes and free-text survey answers are wiped; scores, amounts, points
  and contest entries stay so that totals and a published draw remain verifiable;
- the address is kept only as an (unsalted, so that a key rotation cannot forget it) SHA-256 fingerprint on the suppression list (reason
  `erased`), which is what stops a later import, API call or contest sign-up from mailing it again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import delete, func, select, update
from sqlmodel import Session

from .db import upsert_insert
from .errors import NotFound
from .models import (
    Campaign, Contact, ContactStatus, ContactTag, ContestEntry, Coupon, Delivery, DeliveryEvent, DeliveryStatus,
    Event, KindOptOut, Order, PointsEntry, Run, Suppression, SuppressionReason, SurveyAnswer, SurveyResponse,
)
from .suppression import ERASED_PREFIX, email_key, fingerprint
from .surveys import real_responses

#: Format tag of the "download my data" document.
EXPORT_FORMAT = "valuemail-personal-data/1"
#: What a skipped delivery records when its contact was erased before it went out.
SKIPPED_ERASED = "erased"

def erased_address(contact_id: int) -> str:
    """The placeholder address an erased contact and its deliveries carry."""
    return f"erased-{contact_id}@erased.invalid"


def is_erased_address(session: Session, email: str) -> bool:
    """True when `email` belonged to someone who asked to be erased."""
    return session.execute(select(Suppression.id).where(Suppression.email_key == fingerprint(email))).first() is not None


def erased_among(connection, keys: Iterable[str]) -> set[str]:
    """The email keys among `keys` that were erased (one query; a session or a connection)."""
    keys = list(keys)
    # A range on the unique index: most lists hold no erased address, and then no fingerprint is computed.
    if not keys or connection.execute(select(Suppression.id).where(
            Suppression.email_key >= ERASED_PREFIX, Suppression.email_key < ERASED_PREFIX[:-1] + ";").limit(1)).first() is None:
        return set()
    prints = {fingerprint(k): k for k in keys}
    found = connection.execute(select(Suppression.email_key).where(Suppression.email_key.in_(list(prints)))).scalars()
    return {prints[p] for p in found}


def erase(session: Session, contact_id: int, *, now: datetime) -> bool:
    """Wipe a contact's personal data and make sure the address is never mailed again; False if already erased."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    if contact.erased_at is not None:
        return False
    key = email_key(contact.email)
    placeholder = erased_address(contact_id)
    # Fingerprint first, plain address out: the list must never hold the address itself afterwards.
    session.execute(upsert_insert(session, Suppression).values(
        email_key=fingerprint(key), reason=SuppressionReason.erased.value, note="", created_at=now,
    ).on_conflict_do_nothing(index_elements=["email_key"]))
    session.execute(delete(Suppression).where(Suppression.email_key == key))
    delivery_ids = select(Delivery.id).where(Delivery.contact_id == contact_id).scalar_subquery()
    session.execute(update(Delivery).where(Delivery.contact_id == contact_id, Delivery.status == DeliveryStatus.queued.value)
                    .values(status=DeliveryStatus.skipped.value, last_error=SKIPPED_ERASED, updated_at=now)
                    .execution_options(synchronize_session=False))
    session.execute(update(Delivery).where(Delivery.contact_id == contact_id)
                    .values(email=placeholder, data={}).execution_options(synchronize_session=False))
    session.execute(update(DeliveryEvent).where(DeliveryEvent.delivery_id.in_(delivery_ids))
                    .values(data={}).execution_options(synchronize_session=False))
    session.execute(update(Event).where(Event.contact_id == contact_id).values(data={})
                    .execution_options(synchronize_session=False))
    session.execute(update(PointsEntry).where(PointsEntry.contact_id == contact_id).values(note="")
                    .execution_options(synchronize_session=False))
    responses = select(SurveyResponse.id).where(SurveyResponse.contact_id == contact_id).scalar_subquery()
    session.execute(update(SurveyAnswer).where(SurveyAnswer.response_id.in_(responses),
                                               SurveyAnswer.value_text.is_not(None), SurveyAnswer.value_number.is_(None))
                    .values(value_text="").execution_options(synchronize_session=False))
    session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id))
    session.execute(delete(KindOptOut).where(KindOptOut.contact_id == contact_id))
    contact.email = contact.email_key = placeholder
    contact.first_name = contact.last_name = ""
    contact.country = contact.language = contact.timezone = None
    contact.attributes = {}
    contact.status = ContactStatus.unsubscribed.value
    contact.erased_at = contact.updated_at = now
    session.add(contact)
    session.flush()
    return True


def export(session: Session, contact_id: int, *, now: datetime) -> dict[str, Any]:
    """Everything stored about one contact, as one JSON-ready document."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    key = email_key(contact.email)
    tags = sorted(session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact_id)).scalars())
    suppression = session.execute(select(Suppression).where(Suppression.email_key == key)).scalars().first()
    optouts = sorted(session.execute(select(KindOptOut.kind).where(KindOptOut.contact_id == contact_id)).scalars())
    orders = session.execute(select(Order).where(Order.contact_id == contact_id).order_by(Order.placed_at)).scalars()
    points = session.execute(select(PointsEntry, Order.order_id).outerjoin(Order, Order.id == PointsEntry.order_id)
                             .where(PointsEntry.contact_id == contact_id).order_by(PointsEntry.occurred_at, PointsEntry.id))
    events = session.execute(select(Event).where(Event.contact_id == contact_id).order_by(Event.occurred_at)).scalars()
    deliveries = session.execute(
        select(Delivery, Run.campaign_id, Campaign.name, Run.is_test).join(Run, Run.id == Delivery.run_id)
        .join(Campaign, Campaign.id == Run.campaign_id).where(Delivery.contact_id == contact_id).order_by(Delivery.id))
    timeline: dict[int, list[dict[str, Any]]] = {}
    for event in session.execute(select(DeliveryEvent).join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
                                 .where(Delivery.contact_id == contact_id)
                                 .order_by(DeliveryEvent.occurred_at, DeliveryEvent.id)).scalars():
        timeline.setdefault(event.delivery_id, []).append(
            {"type": event.type, "at": _iso(event.occurred_at), **({"data": event.data} if event.data else {})})
    answers: dict[int, dict[str, Any]] = {}
    for answer in session.execute(real_responses(select(SurveyAnswer).join(SurveyResponse, SurveyResponse.id == SurveyAnswer.response_id))
                                  .where(SurveyResponse.contact_id == contact_id)).scalars():
        answers.setdefault(answer.response_id, {})[answer.question] = (
            answer.value_number if answer.value_number is not None else answer.value_text)
    responses = session.execute(real_responses(select(SurveyResponse)).where(SurveyResponse.contact_id == contact_id)
                                .order_by(SurveyResponse.first_answered_at)).scalars()
    entries = session.execute(select(ContestEntry).where(ContestEntry.contact_id == contact_id)
                              .order_by(ContestEntry.entered_at)).scalars()
    referrals = dict(session.execute(select(ContestEntry.campaign_id, func.count())
                                     .where(ContestEntry.referred_by == contact_id)
                                     .group_by(ContestEntry.campaign_id)).all())
    coupons = session.execute(select(Coupon).where(Coupon.contact_id == contact_id).order_by(Coupon.created_at)).scalars()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _iso(now),
        "contact": {
            "email": contact.email, "first_name": contact.first_name, "last_name": contact.last_name,
            "country": contact.country, "language": contact.language, "timezone": contact.timezone,
            "status": contact.status, "attributes": dict(contact.attributes or {}), "tags": tags,
            "created_at": _iso(contact.created_at), "updated_at": _iso(contact.updated_at),
            "erased_at": _iso(contact.erased_at),
        },
        "preferences": {"campaign_kinds_not_wanted": optouts},
        "suppression": ({"reason": suppression.reason, "since": _iso(suppression.created_at)}
                        if suppression is not None else None),
        "orders": [{"order_id": o.order_id, "placed_at": _iso(o.placed_at), "status": o.status,
                    "total": _money(o.total_cents), "currency": o.currency, "updated_at": _iso(o.updated_at)}
                   for o in orders],
        "points": [{"kind": p.kind, "points": p.points, "order_id": order, "occurred_at": _iso(p.occurred_at),
                    "expires_at": _iso(p.expires_at), "note": p.note} for p, order in points],
        "events": [{"type": e.type, "occurred_at": _iso(e.occurred_at), "data": e.data} for e in events],
        "mails": [{"campaign": campaign_id, "campaign_name": name, "test": is_test, "address": d.email,
                   "status": d.status, "sent_at": _iso(d.sent_at), "opened_at": _iso(d.opened_at),
                   "opens": d.open_count, "clicked_at": _iso(d.clicked_at), "clicks": d.click_count,
                   "timeline": timeline.get(d.id, [])}
                  for d, campaign_id, name, is_test in deliveries],
        "surveys": [{"campaign": r.campaign_id, "first_answered_at": _iso(r.first_answered_at),
                     "submitted_at": _iso(r.submitted_at), "answers": answers.get(r.id, {})} for r in responses],
        "contests": [{"campaign": e.campaign_id, "entered_at": _iso(e.entered_at),
                      "referred_by_someone": e.referred_by is not None, "friends_referred": referrals.get(e.campaign_id, 0)}
                     for e in entries],
        "coupons": [{"campaign": c.campaign_id, "code": c.code, "issued_at": _iso(c.created_at),
                     "redeemed_at": _iso(c.redeemed_at)} for c in coupons],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"
