"""Start, resume and drain campaign runs: what `valuemail send` and `valuemail tick` do."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable

from sqlalchemy import func, select
from sqlmodel import Session

from ..campaigns import CampaignDefinition, campaign_files, load_campaign
from ..campaigns.loader import SEGMENTS_FILE
from ..db import session_scope
from ..campaigns.kinds import KindContext
from ..errors import AlreadySent, NotFound, ValuemailError
from ..models import Run, RunStatus
from ..runtime import Runtime
from ..segments import Segments, load_segments, membership_query
from . import ledger, local_time

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A run ready to be drained, and how it came about."""

    run_id: int
    campaign: CampaignDefinition
    resumed: bool
    total: int


def load_project_segments(runtime: Runtime) -> Segments:
    """The segments file of the project."""
    return load_segments(runtime.settings.campaigns_dir / SEGMENTS_FILE)


def load_project_campaign(runtime: Runtime, campaign_id: str, *, segments: Segments,
                          at: datetime | None = None) -> CampaignDefinition:
    """Load and validate `campaigns/<campaign_id>.toml` against the segments.

    Dates are not held against the file here: an ended offer is a normal, finished campaign, and
    sending one is refused by its kind's `inactive_reason` instead (`validate` warns about it).
    """
    path = runtime.settings.campaigns_dir / f"{campaign_id}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in campaign_files(runtime.settings.campaigns_dir)) or "none"
        raise NotFound(f"no campaign '{campaign_id}' ({path} does not exist; campaigns: {known})")
    return load_campaign(path, settings=runtime.settings, segment_names=list(segments), today=None)


def prepare_run(runtime: Runtime, campaign_id: str, *, again: bool = False, occurrence_at: datetime | None = None,
                segments: Segments | None = None, campaign: CampaignDefinition | None = None) -> Prepared:
    """Resume the campaign's unfinished run, or start a new occurrence and fill its ledger.

    Without `occurrence_at` (a manual send) a campaign whose last run finished is refused unless
    `again` is set, so running the command twice never mails everyone twice. With it (a scheduled
    occurrence) the run is keyed on (campaign, occurrence_at) and so happens at most once.
    """
    segments = segments or load_project_segments(runtime)
    campaign = campaign or load_project_campaign(runtime, campaign_id, segments=segments)
    if occurrence_at is None and campaign.schedule is not None and campaign.schedule.kind == "trigger":
        raise ValuemailError(f"campaign '{campaign.id}' is sent per contact when its trigger fires "
                             "(`valuemail tick` or `valuemail run`); use --test-to to try it")
    engine, now = runtime.engine, runtime.clock.now()
    if occurrence_at is None:
        reason = campaign.kind.inactive_reason(campaign.section, day=now.astimezone(runtime.settings.tz).date())
        if reason:
            raise ValuemailError(f"campaign '{campaign.id}' cannot be sent now: {reason}")
    with session_scope(engine) as session:
        ledger.sync_campaign(session, campaign, now=now)
        run = None if occurrence_at is not None else ledger.open_run(session, campaign.id)
        if run is None and occurrence_at is None and not again:
            done = ledger.last_finished_run(session, campaign.id)
            if done is not None:
                raise AlreadySent(
                    f"campaign '{campaign.id}' was already sent (run #{done.id}, finished "
                    f"{done.finished_at.astimezone(runtime.settings.tz):%Y-%m-%d %H:%M %Z}); "
                    "nothing was sent. Use --again to send another occurrence.")
        if run is None:
            at = occurrence_at or now
            run, created = ledger.create_run(session, campaign, occurrence_at=at, now=now)
            while not created and occurrence_at is None:
                # A manual send is always a new occurrence; its instant was taken by a finished run
                # (two sends within one clock tick, e.g. under --as-of): the next microsecond is free.
                at += timedelta(microseconds=1)
                run, created = ledger.create_run(session, campaign, occurrence_at=at, now=now)
        else:
            created = False
    if run.status == RunStatus.populating.value:
        # Before the ledger is filled (again, after a crash): fetch feeds, credit points, open contests.
        _before_occurrence(runtime, campaign, at=run.occurrence_at, run_id=run.id)
    if not created and run.status == RunStatus.paused.value:
        log.info("resuming paused run #%s (%s)", run.id, run.pause_reason)
        ledger.resume(engine, run.id)
    total = _fill(runtime, run, campaign, segments)
    return Prepared(run_id=run.id, campaign=campaign, resumed=not created, total=total)


def _fill(runtime: Runtime, run: Run, campaign: CampaignDefinition, segments: Segments) -> int:
    """Fill (or finish filling) the run's ledger; local-time campaigns get per-timezone send times."""
    filling = run.status == RunStatus.populating.value
    total = ledger.populate(runtime.engine, run.id, members_after=_members(runtime, segments, campaign, run.created_at),
                            batch_size=runtime.settings.sending.batch_size, now=runtime.clock.now())
    if filling and campaign.local_time and campaign.schedule is not None and campaign.schedule.wall is not None:
        local_time.schedule_deliveries(runtime.engine, run.id, wall=campaign.schedule.wall,
                                       default_tz=runtime.settings.tz)
    return total


def _before_occurrence(runtime: Runtime, campaign: CampaignDefinition, *, at: datetime, run_id: int | None) -> None:
    """Run the kind's occurrence hook once per distinct section (variants may add their own feeds).

    Each call has its own transaction, committed apart from the run's, so a slow feed never
    holds a lock the run's creation took.
    """
    sections = []
    for section in [campaign.section] + [v.section for v in campaign.variants.values()]:
        if section not in sections:
            sections.append(section)
    for section in sections:
        with session_scope(runtime.engine) as session:
            campaign.kind.before_occurrence(section, session, KindContext(
                campaign_id=campaign.id, now=at, settings=runtime.settings, run_id=run_id))


def _members(runtime: Runtime, segments: Segments, campaign: CampaignDefinition, as_of: datetime) -> Callable:
    # Segments are evaluated as of the run's creation, so a resumed fill sees the same rules.
    def members_after(after_id: int, limit: int):
        return membership_query(segments, list(campaign.segments), now=as_of, settings=runtime.settings,
                                after_id=after_id, limit=limit, kind=campaign.kind_name)
    return members_after


def prepare_test_run(runtime: Runtime, campaign_id: str, *, to: str) -> Prepared:
    """A test run: one message per segment variant, rendered for a real member, all sent to `to`."""
    segments = load_project_segments(runtime)
    campaign = load_project_campaign(runtime, campaign_id, segments=segments)
    engine, now = runtime.engine, runtime.clock.now()
    query = membership_query(segments, list(campaign.segments), now=now, settings=runtime.settings,
                             kind=campaign.kind_name).subquery()
    with session_scope(engine) as session:
        ledger.sync_campaign(session, campaign, now=now)
    _before_occurrence(runtime, campaign, at=now, run_id=None)
    with session_scope(engine) as session:
        picks = session.execute(select(func.min(query.c.contact_id), query.c.segment).group_by(query.c.segment)).all()
        if not picks:
            raise NotFound(f"campaign '{campaign.id}': no subscribed contact matches any of its segments "
                           f"({', '.join(campaign.segments)}), so there is nothing to render a test with")
        run, _ = ledger.create_run(session, campaign, occurrence_at=now, now=now, is_test=True)
        # Triggered kinds render from the trigger's data; a test uses the kind's sample values.
        # Stored in the delivery's JSON data, hence the round trip (a contest's sample dates are datetimes).
        samples = {s: json.loads(json.dumps(campaign.kind.sample_recipient_extra(campaign.variant(s).section),
                                            default=_json_default)) for _, s in picks}
        total = ledger.add_test_deliveries(session, run, [(c, s, samples[s]) for c, s in picks], to=to, now=now)
    return Prepared(run_id=run.id, campaign=campaign, resumed=False, total=total)


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def count_recipients(runtime: Runtime, campaign_id: str) -> dict[str, int]:
    """How many contacts each segment variant would mail now; nothing is stored."""
    segments = load_project_segments(runtime)
    campaign = load_project_campaign(runtime, campaign_id, segments=segments)
    query = membership_query(segments, list(campaign.segments), now=runtime.clock.now(),
                             settings=runtime.settings, kind=campaign.kind_name).subquery()
    with Session(runtime.engine) as session:
        rows = dict(session.execute(select(query.c.segment, func.count()).group_by(query.c.segment)).all())
    return {segment: rows.get(segment, 0) for segment in campaign.segments}


def unfinished_runs(runtime: Runtime) -> list[Run]:
    """Runs still being filled or sent (not paused ones: those wait for a person)."""
    with Session(runtime.engine) as session:
        return list(session.execute(select(Run).where(
            Run.status.in_([RunStatus.populating.value, RunStatus.sending.value])).order_by(Run.id)).scalars())


def refill_unfinished(runtime: Runtime) -> list[int]:
    """Finish filling the ledger of runs a crash interrupted; returns the ids of runs to drain."""
    segments = None
    ids = []
    for run in unfinished_runs(runtime):
        if run.status == RunStatus.populating.value:
            segments = segments or load_project_segments(runtime)
            campaign = load_campaign(runtime.settings.campaigns_dir / run.definition["file"], settings=runtime.settings,
                                     segment_names=None, today=None, source=run.definition["source"])
            _fill(runtime, run, campaign, segments)
        ids.append(run.id)
    return ids
