"""Rows for web and suppression tests, created directly with SQLModel sessions."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session

from engine.models import Campaign, Contact, Delivery, Run

T0 = datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc)


def make_campaign(session: Session, campaign_id: str = "spring-sale", name: str = "Spring sale") -> Campaign:
    """A synced campaign row."""
    campaign = Campaign(id=campaign_id, name=name, kind="seasonal_discount", values=["economic"],
                        definition={}, source_hash="0" * 64, synced_at=T0)
    session.add(campaign)
    session.flush()
    return campaign


def make_run(session: Session, campaign: Campaign, *, occurrence_at: datetime = T0, status: str = "sending",
             total: int = 0, pause_reason: str = "", is_test: bool = False) -> Run:
    """A run of `campaign`."""
    run = Run(campaign_id=campaign.id, occurrence_at=occurrence_at, status=status, total=total,
              pause_reason=pause_reason, is_test=is_test, created_at=T0)
    session.add(run)
    session.flush()
    return run


def make_contact(session: Session, email: str, *, status: str = "subscribed") -> Contact:
    """A contact keyed by its lower-cased address."""
    contact = Contact(email=email, email_key=email.lower(), status=status, created_at=T0, updated_at=T0)
    session.add(contact)
    session.flush()
    return contact


def make_delivery(session: Session, run: Run, contact: Contact, *, status: str = "queued",
                  segment: str = "everyone", **fields) -> Delivery:
    """A ledger row for `contact` in `run`."""
    delivery = Delivery(run_id=run.id, contact_id=contact.id, email=contact.email, segment=segment,
                        status=status, created_at=T0, updated_at=T0, **fields)
    session.add(delivery)
    session.flush()
    return delivery
