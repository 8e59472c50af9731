"""Triggered occurrences: per-contact sends keyed on (campaign, trigger key), never twice."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from ..campaigns import CampaignDefinition
from ..campaigns.kinds import KindContext
from ..db import session_scope, upsert_insert
from ..models import Contact, Delivery, DeliveryStatus, Run, RunStatus, TriggerSend
from ..runtime import Runtime
from ..segments import Segments, membership_query
from ..sending import ledger


def start_triggered(runtime: Runtime, campaign: CampaignDefinition, segments: Segments, *, at: datetime) -> int | None:
    """Put every due, unsent trigger of `campaign` into its run for instant `at`; the run id, if any.

    One delivery per contact per run: a contact's second due occurrence waits for a later tick.
    The delivery and its trigger_sends row commit together, so a key is either fully sent-queued
    or untouched, whatever crashes.
    """
    settings = runtime.settings
    since = at - timedelta(days=settings.scheduler.trigger_window_days)
    ctx = KindContext(campaign_id=campaign.id, now=at, settings=settings, schedule=campaign.schedule)
    with session_scope(runtime.engine) as session:
        ledger.sync_campaign(session, campaign, now=at)
        dues = [d for d in campaign.kind.due(campaign.section, session, ctx, since=since) if since < d.due_at <= at]
        if not dues:
            return None
        earliest: dict[int, object] = {}
        for due in sorted(dues, key=lambda d: (d.due_at, d.key)):
            earliest.setdefault(due.contact_id, due)
        members = membership_query(segments, list(campaign.segments), now=at, settings=settings,
                                   kind=campaign.kind_name).subquery()
        segment_of = dict(session.execute(
            select(members.c.contact_id, members.c.segment).where(members.c.contact_id.in_(list(earliest)))).all())
        chosen = [d for c, d in earliest.items() if c in segment_of]
        taken = set(session.execute(select(TriggerSend.trigger_key).where(
            TriggerSend.campaign_id == campaign.id, TriggerSend.trigger_key.in_([d.key for d in chosen]))).scalars())
        chosen = [d for d in chosen if d.key not in taken]
        if not chosen:
            return None
        run, created = ledger.create_run(session, campaign, occurrence_at=at, now=at)
        emails = dict(session.execute(select(Contact.id, Contact.email).where(
            Contact.id.in_([d.contact_id for d in chosen]))).all())
        added = 0
        for due in chosen:
            key_taken = session.execute(upsert_insert(session, TriggerSend).values(
                campaign_id=campaign.id, trigger_key=due.key, contact_id=due.contact_id, run_id=run.id,
                due_at=due.due_at, created_at=at,
            ).on_conflict_do_nothing(index_elements=["campaign_id", "trigger_key"]).returning(TriggerSend.id)).first()
            if key_taken is None:
                continue  # sent by an earlier tick
            email = emails[due.contact_id]
            delivered = session.execute(upsert_insert(session, Delivery).values(
                run_id=run.id, contact_id=due.contact_id, email=email, segment=segment_of[due.contact_id],
                status=DeliveryStatus.queued.value, attempts=0, data=due.data, created_at=at, updated_at=at,
            ).on_conflict_do_nothing(index_elements=["run_id", "contact_id"]).returning(Delivery.id)).first()
            if delivered is None:
                # The contact already has a delivery in this run: undo the key so a later tick sends it.
                session.execute(TriggerSend.__table__.delete().where(
                    TriggerSend.campaign_id == campaign.id, TriggerSend.trigger_key == due.key))
                continue
            added += 1
        if not added:
            if created:
                # Never leave an empty run behind: a run still "populating" would be filled with
                # the campaign's whole audience by the next refill.
                session.execute(Run.__table__.delete().where(Run.id == run.id))
            return None
        session.execute(update(Run).where(Run.id == run.id).values(
            status=RunStatus.sending.value, total=Run.total + added, started_at=func.coalesce(Run.started_at, at),
            finished_at=None))
        return run.id
