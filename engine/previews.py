"""Segment-variant previews, rendered exactly as a send would render them; nothing is sent or stored.

Shared by `valuemail preview` and the admin campaign page.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from .campaigns import CampaignDefinition
from .errors import NotFound
from .models import Contact
from .rendering import Renderer
from .runtime import Runtime
from .segments import Segments, membership_query
from .sending.compose import SAMPLE_CONTACT, Composer, ContactData, sample_recipient
from .sending.worker import _contact_data
from .tokens import TokenSigner


@dataclass(frozen=True)
class Preview:
    """One segment variant rendered for one contact (a real member or the sample contact)."""

    segment: str
    contact: ContactData
    message: object  # the Composer's message: subject, html, text, data

    @property
    def is_sample(self) -> bool:
        return self.contact is SAMPLE_CONTACT


def render_previews(runtime: Runtime, segments: Segments, definition: CampaignDefinition, names: list[str],
                    *, contact_email: str | None = None) -> list[Preview]:
    """Render each named segment variant for `contact_email`, else the segment's first member, else a sample."""
    composer = Composer(campaign=definition, run_id=0, settings=runtime.settings,
                        renderer=Renderer(runtime.settings.templates_dir),
                        signer=TokenSigner(runtime.settings.secret_key))
    now = runtime.clock.now()
    previews = []
    for name in names:
        contact = preview_contact(runtime, segments, name, contact_email)
        recipient = sample_recipient(definition, name, language=contact.language)
        previews.append(Preview(name, contact, composer.compose(0, contact.email, contact, recipient, now=now)))
    return previews


def preview_contact(runtime: Runtime, segments: Segments, segment: str, email: str | None) -> ContactData:
    """The named contact, else the segment's first member, else a sample contact."""
    with Session(runtime.engine) as session:
        if email:
            contact = session.execute(select(Contact).where(Contact.email_key == email.lower())).scalars().first()
            if contact is None:
                raise NotFound(f"no contact with email {email}")
            return _contact_data(contact)
        members = membership_query(segments, [segment], now=runtime.clock.now(), settings=runtime.settings,
                                   limit=1).subquery()
        contact = session.execute(select(Contact).where(Contact.id.in_(select(members.c.contact_id)))).scalars().first()
    return _contact_data(contact) if contact else SAMPLE_CONTACT
