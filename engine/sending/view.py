"""Re-render a delivery's HTML for "view in browser", from the campaign as its run stored it.

The page shows the links as written, untracked and without the open pixel: the Composer gets no
database to register links in, so a page view never writes, and what a reader does there is not
counted as a click or an open of the mail.
"""

from __future__ import annotations

import threading
from typing import Callable

from sqlmodel import Session

from .. import ltv
from ..campaigns import load_campaign
from ..campaigns.kinds import KindContext, Recipient
from ..clock import Clock
from ..config import Settings
from ..errors import NotFound
from ..models import Contact, Delivery, Run
from ..tokens import TokenSigner
from .compose import Composer
from .worker import _contact_data


def make_view_renderer(*, settings: Settings, renderer, clock: Clock) -> Callable[[Session, int], str]:
    """A function (session, delivery id) -> the HTML that delivery carried, personalised again."""
    signer = TokenSigner(settings.secret_key)
    composers: dict[int, Composer] = {}
    lock = threading.Lock()

    def composer_for(run: Run) -> Composer:
        with lock:
            if run.id not in composers:
                campaign = load_campaign(settings.campaigns_dir / run.definition["file"], settings=settings,
                                         segment_names=None, today=None, source=run.definition["source"])
                composers[run.id] = Composer(campaign=campaign, run_id=run.id, settings=settings, renderer=renderer,
                                             signer=signer, test=run.is_test)
            return composers[run.id]

    def render(session: Session, delivery_id: int) -> str:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        run, contact = session.get(Run, delivery.run_id), session.get(Contact, delivery.contact_id)
        composer = composer_for(run)
        at = delivery.sent_at or delivery.created_at
        stats = ltv.stats_for_contacts(session, [contact.id], now=at, settings=settings).get(contact.id)
        recipient = Recipient(contact_id=contact.id, email=delivery.email, segment=delivery.segment,
                              delivery_id=delivery.id, language=contact.language, data=dict(delivery.data or {}),
                              ltv=float(stats.ltv) if stats else 0.0, orders_count=stats.orders_count if stats else 0)
        # The kind loads what the mail showed (the same coupon, the same digest items) as at send time.
        composer.campaign.kind.prepare(composer.campaign.variant(delivery.segment).section, session,
                                       KindContext(campaign_id=run.campaign_id, now=at, settings=settings,
                                                   run_id=run.id), [recipient])
        context = composer.context(delivery.id, _contact_data(contact), recipient)
        return composer.compiled(delivery.segment).render(context).html

    return render
