"""What is due at an instant: the part of the scheduler that `tick` and `run` share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..campaigns import campaign_files
from sqlalchemy import select
from sqlmodel import Session

from ..errors import InvalidFile, Problem
from ..models import Run, RunStatus
from ..runtime import Runtime
from .service import load_project_campaign, load_project_segments, prepare_run

log = logging.getLogger(__name__)

#: An `at` occurrence later than this is not sent by catch-up (a stale offer is worse than none).
CATCH_UP = timedelta(hours=24)


@dataclass
class DueReport:
    """What one tick started, skipped and could not read."""

    started: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def start_due_runs(runtime: Runtime, *, at: datetime) -> DueReport:
    """Create and fill the runs of every `at` occurrence due by `at` (each occurrence exactly once)."""
    report = DueReport()
    try:
        segments = load_project_segments(runtime)
    except InvalidFile as exc:
        report.problems.extend(exc.problems)
        return report
    for path in campaign_files(runtime.settings.campaigns_dir):
        try:
            campaign = load_project_campaign(runtime, path.stem, segments=segments)
        except InvalidFile as exc:
            report.problems.extend(exc.problems)
            continue
        schedule = campaign.schedule
        if schedule is None:
            continue
        if schedule.kind != "at":
            report.skipped.append((campaign.id, f"{schedule.kind} schedules are not run by this version yet"))
            continue
        if schedule.at > at:
            continue
        if at - schedule.at > CATCH_UP:
            report.skipped.append((campaign.id, f"its occurrence {schedule.at:%Y-%m-%d %H:%M} UTC is more than "
                                                f"{CATCH_UP} in the past; send it by hand if still wanted"))
            continue
        with Session(runtime.engine) as session:
            earlier = session.execute(select(Run.occurrence_at).where(
                Run.campaign_id == campaign.id, Run.is_test.is_(False))).scalars().all()
        if any(o != schedule.at for o in earlier):
            continue  # already sent by hand (or under an older schedule): never twice
        if schedule.at in earlier and not _unfinished(runtime, campaign.id, schedule.at):
            continue
        prepared = prepare_run(runtime, campaign.id, occurrence_at=schedule.at)
        report.started.append((campaign.id, prepared.run_id))
    return report


def _unfinished(runtime: Runtime, campaign_id: str, occurrence_at: datetime) -> bool:
    with Session(runtime.engine) as session:
        status = session.execute(select(Run.status).where(
            Run.campaign_id == campaign_id, Run.occurrence_at == occurrence_at)).scalar()
    return status == RunStatus.populating.value
