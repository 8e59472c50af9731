"""Trials: the events that start and end them, and how many trial users a drip turned into customers.

A trial begins with a `trial_started` event. It ends early with `trial_converted` (the user
bought) or `trial_cancelled`; a newer `trial_started` of the same contact supersedes it. Any of
these stops the trial's drip: nothing more is sent about a trial once its end is known.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import aliased

from .db import days_between, utcnow_param
from .models import Delivery, DeliveryStatus, Event, TriggerSend

TRIAL_STARTED = "trial_started"
TRIAL_CONVERTED = "trial_converted"
TRIAL_CANCELLED = "trial_cancelled"
#: What ends a trial's drip, and the skip reason each gives.
STOP_REASONS = {TRIAL_CONVERTED: "converted", TRIAL_CANCELLED: "cancelled",
                TRIAL_STARTED: "superseded by a newer trial"}
#: The seeds' reference: about one trial user in five buys a paid account after the trial.
REFERENCE_RATE = 0.20

_CHUNK = 500


@dataclass(frozen=True)
class TrialEvent:
    id: int
    contact_id: int
    type: str
    occurred_at: datetime


def lifecycle_events(session, contact_ids: Iterable[int], *, not_before: datetime) -> dict[int, list[TrialEvent]]:
    """Each contact's trial events (started, converted, cancelled) from `not_before` on, oldest first."""
    found: dict[int, list[TrialEvent]] = defaultdict(list)
    ids = sorted(set(contact_ids))
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(Event.id, Event.contact_id, Event.type, Event.occurred_at)
            .where(Event.contact_id.in_(ids[start:start + _CHUNK]), Event.type.in_(tuple(STOP_REASONS)),
                   Event.occurred_at >= not_before)
            .order_by(Event.contact_id, Event.occurred_at, Event.id)
        ).all()
        for row in rows:
            found[row.contact_id].append(TrialEvent(*row))
    return found


def stop_reason(events: Iterable[TrialEvent], *, trial_id: int, started_at: datetime, until: datetime) -> str | None:
    """Why the trial started at `started_at` is over by `until` (inclusive), or None while it runs."""
    for event in events:
        if event.occurred_at < started_at or event.occurred_at > until:
            continue
        if event.type == TRIAL_STARTED and (event.id == trial_id or event.occurred_at == started_at):
            continue  # the trial itself
        return STOP_REASONS[event.type]
    return None


@dataclass(frozen=True)
class Conversion:
    """How many contacts a trial drip reached and how many of them bought within the window."""

    recipients: int  # contacts who were sent at least one step
    converted: int  # ... and converted within length_days + grace_days of their trial's start
    open: int  # ... not converted yet, but their window has not closed at `now`
    window_days: int

    @property
    def rate(self) -> float | None:
        """Converted / recipients (None without recipients)."""
        return self.converted / self.recipients if self.recipients else None

    @property
    def settled_rate(self) -> float | None:
        """Converted / recipients whose window closed or who converted: the rate still-open trials cannot move."""
        settled = self.recipients - self.open
        return self.converted / settled if settled else None

    @property
    def reference(self) -> float:
        return REFERENCE_RATE

    @property
    def versus_reference(self) -> float | None:
        """The rate minus the seeds' ~20%, in percentage points."""
        return None if self.rate is None else round((self.rate - REFERENCE_RATE) * 100, 1)


def conversion_rate(session, campaign_id: str, *, now: datetime, length_days: int, grace_days: int = 7) -> Conversion:
    """Contacts who got this drip and converted within length + grace days of their trial start, over all who got it.

    A contact counts once, for the trial of the first step they were sent (the latest
    `trial_started` at or before that step's due time). Conversions after `now` do not count yet.
    """
    window = length_days + grace_days
    got = (
        select(TriggerSend.contact_id, func.min(TriggerSend.due_at).label("first_due"))
        .join(Delivery, and_(Delivery.run_id == TriggerSend.run_id, Delivery.contact_id == TriggerSend.contact_id))
        .where(TriggerSend.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sent.value)
        .group_by(TriggerSend.contact_id)
        .subquery()
    )
    started = aliased(Event)
    trials = (
        select(got.c.contact_id, func.max(started.occurred_at).label("started_at"))
        .join(started, and_(started.contact_id == got.c.contact_id, started.type == TRIAL_STARTED,
                            started.occurred_at <= got.c.first_due))
        .group_by(got.c.contact_id)
        .subquery()
    )
    converted_event = aliased(Event)
    now_param = utcnow_param(now)
    converted = exists().where(
        converted_event.contact_id == trials.c.contact_id, converted_event.type == TRIAL_CONVERTED,
        converted_event.occurred_at >= trials.c.started_at, converted_event.occurred_at <= now_param,
        days_between(trials.c.started_at, converted_event.occurred_at) <= window,
    )
    is_converted = case((converted, 1), else_=0)
    is_open = case((and_(~converted, days_between(trials.c.started_at, now_param) < window), 1), else_=0)
    row = session.execute(select(func.count(), func.coalesce(func.sum(is_converted), 0),
                                 func.coalesce(func.sum(is_open), 0)).select_from(trials)).one()
    return Conversion(recipients=int(row[0]), converted=int(row[1]), open=int(row[2]), window_days=window)


def trial_ends_at(started_at: datetime, length_days: int) -> datetime:
    """When a trial of `length_days` started at `started_at` runs out."""
    return started_at + timedelta(days=length_days)
