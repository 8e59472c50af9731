"""Start every occurrence due at an instant: `at`, `cron` and trigger schedules."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session

from .. import bounces, contests, webhook_log
from ..campaigns import CampaignDefinition, campaign_files
from ..campaigns.kinds import KindContext
from ..db import session_scope
from ..errors import InvalidFile, Problem
from ..models import Run, RunStatus
from ..runtime import Runtime
from ..segments import Segments
from ..sending import ledger
from ..sending.service import load_project_campaign, load_project_segments, prepare_run
from .cron import fire_times
from .triggers import start_triggered

log = logging.getLogger(__name__)


@dataclass
class DueReport:
    """What one tick started, skipped and could not read."""

    started: list[tuple[str, int]] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def run_due(runtime: Runtime, *, at: datetime) -> DueReport:
    """Start the runs of every occurrence due at `at` (each exactly once) and fill their ledgers."""
    report = DueReport()
    _purge_unconfirmed(runtime, at, report)
    _purge_webhooks(runtime, at, report)
    try:
        segments = load_project_segments(runtime)
    except InvalidFile as exc:
        report.problems.extend(exc.problems)
        return report
    for path in campaign_files(runtime.settings.campaigns_dir):
        try:
            campaign = load_project_campaign(runtime, path.stem, segments=segments, at=at)
        except InvalidFile as exc:
            report.problems.extend(exc.problems)
            continue
        with session_scope(runtime.engine) as session:
            done = campaign.kind.on_tick(campaign.section, session,
                                         KindContext(campaign_id=campaign.id, now=at, settings=runtime.settings))
        if done:
            report.actions.append((campaign.id, done))
        schedule = campaign.schedule
        if schedule is None:
            continue
        if schedule.kind == "trigger":
            run_id = start_triggered(runtime, campaign, segments, at=at)
            if run_id is not None:
                report.started.append((campaign.id, run_id))
            continue
        instant = _due_instant(runtime, campaign, at, report)
        if instant is None or _already_sent(runtime, campaign, instant, once=schedule.kind == "at"):
            continue
        reason = campaign.kind.inactive_reason(campaign.section, day=instant.astimezone(runtime.settings.tz).date())
        if reason:
            report.skipped.append((campaign.id, f"occurrence {instant:%Y-%m-%d %H:%M} UTC not sent: {reason}"))
            continue
        prepared = prepare_run(runtime, campaign.id, occurrence_at=instant, segments=segments, campaign=campaign)
        report.started.append((campaign.id, prepared.run_id))
    return report


def _purge_unconfirmed(runtime: Runtime, at: datetime, report: DueReport) -> None:
    """Retention: erase one batch of contest contacts never confirmed (the rest follow on later ticks)."""
    days = runtime.settings.scheduler.purge_unconfirmed_after_days
    with session_scope(runtime.engine) as session:
        erased = contests.purge_unconfirmed(session, older_than=timedelta(days=days), now=at)
    if erased:
        report.actions.append(("contacts", f"erased {erased} contest contact(s) never confirmed within {days} days"))


def _purge_webhooks(runtime: Runtime, at: datetime, report: DueReport) -> None:
    """Retention: one batch of webhook log rows older than `[webhooks] log_days`, and expired nonces."""
    days = runtime.settings.webhooks.log_days
    with session_scope(runtime.engine) as session:
        deleted = webhook_log.purge(session, older_than=timedelta(days=days), now=at)
        # Each webhook request forgets old nonces too; this covers the weeks no request comes in.
        bounces.forget_nonces(session, now=at)
    if deleted:
        report.actions.append(("webhooks", f"deleted {deleted} webhook log row(s) older than {days} days"))


def _due_instant(runtime: Runtime, campaign: CampaignDefinition, at: datetime, report: DueReport) -> datetime | None:
    """The occurrence instant due by `at` within the catch-up window, if any."""
    schedule = campaign.schedule
    catch_up = timedelta(hours=runtime.settings.scheduler.catch_up_hours)
    if schedule.kind == "at":
        # A local-time campaign starts as soon as the earliest timezone reaches the wall time.
        start = schedule.at - timedelta(hours=14) if campaign.local_time else schedule.at
        if start > at:
            return None
        if at - schedule.at > catch_up:
            report.skipped.append((campaign.id, f"its occurrence {schedule.at:%Y-%m-%d %H:%M} UTC is more than "
                                                f"{catch_up} in the past; send it by hand if still wanted"))
            return None
        return schedule.at
    with session_scope(runtime.engine) as session:
        seen = ledger.first_seen(session, campaign, now=at)
    # A cron campaign never catches up on fire times from before its file was first seen: adding a
    # monthly statement on the 2nd must not mail everyone the 1st's statement at once.
    times = fire_times(schedule.cron, tz=runtime.settings.tz, after=max(at - catch_up, seen - timedelta(microseconds=1)),
                       until=at)
    return times[-1] if times else None


def _already_sent(runtime: Runtime, campaign: CampaignDefinition, instant: datetime, *, once: bool) -> bool:
    """True when this occurrence's run exists and was filled (or, for `at`, any run exists)."""
    with Session(runtime.engine) as session:
        runs = session.execute(select(Run.occurrence_at, Run.status).where(
            Run.campaign_id == campaign.id, Run.is_test.is_(False), Run.transactional.is_(False))).all()
    for occurrence, status in runs:
        if occurrence == instant:
            return status != RunStatus.populating.value  # a crash mid-fill is resumed, not skipped
    # An `at` campaign already sent by hand is not sent again by its schedule.
    return once and bool(runs)
