"""`valuemail contest draw|entries|verify|purge-unconfirmed`: an auditable prize draw (the algorithm:
engine/contests.py), and the retention purge of contest contacts who never confirmed."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click
from sqlmodel import Session

from .. import contests
from ..cli import get_runtime
from ..db import session_scope
from ..errors import ValuemailError
from ..sending import ledger


def register(main: click.Group) -> None:
    main.add_command(contest)


@click.group()
def contest() -> None:
    """Contest draws: draw the winners, publish the entry list, verify a draw; purge unconfirmed contacts."""


@contest.command("draw")
@click.argument("campaign")
@click.pass_context
def draw(ctx: click.Context, campaign: str) -> None:
    """Draw CAMPAIGN's winners and mail them (once, after entries close); reveals the seed."""
    from .send import make_sender

    runtime = get_runtime(ctx)
    tz = runtime.settings.tz
    with session_scope(runtime.engine) as session:
        outcome = contests.draw_contest(session, campaign, settings=runtime.settings, now=runtime.clock.now())
    result = outcome.result
    click.echo(f"{campaign}: drawn at {result.drawn_at.astimezone(tz):%Y-%m-%d %H:%M %Z} from "
               f"{len(result.entrants)} entries ({result.tickets_total} tickets), algorithm {contests.ALGORITHM}")
    click.echo(f"commitment (fixed when the contest opened): {result.commitment}")
    click.echo(f"seed (revealed now):                        {result.seed}")
    if not result.winners:
        click.echo("nobody entered: there are no winners")
        return
    click.echo("winners:")
    for winner in result.winners:
        click.echo(f"  {winner.rank}. entry #{winner.entry_id}  {contests.mask_email(winner.email)}  "
                   f"({winner.tickets} ticket{'s' if winner.tickets != 1 else ''})")
    make_sender(runtime).drain([outcome.run_id], wait_for_retries=False)
    with Session(runtime.engine) as session:
        counts = ledger.counts(session, outcome.run_id)
    click.echo(f"winners' mail, run #{outcome.run_id} (transactional): "
               + ", ".join(f"{status} {n}" for status, n in counts.items() if n))
    if counts["queued"]:
        click.echo(f"{counts['queued']} message(s) wait for a retry; `valuemail tick` or `valuemail worker` sends them.")
    click.echo(f"publish the entry list: valuemail contest entries {campaign} --out {campaign}-entries.json\n"
               f"anyone can then recompute the winners; `valuemail contest verify {campaign}` does so")


@contest.command("entries")
@click.argument("campaign")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON to this file (default: standard output).")
@click.pass_context
def entries(ctx: click.Context, campaign: str, out_file: Path | None) -> None:
    """Publish CAMPAIGN's entry list as JSON (no addresses; seed and winners once drawn)."""
    runtime = get_runtime(ctx)
    with Session(runtime.engine) as session:
        rules = _rules(session, runtime, campaign)
        document = contests.published_document(session, campaign, rules=rules)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if out_file is None:
        click.echo(text, nl=False)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    state = "drawn, seed revealed" if document["seed"] else "not drawn yet, seed still secret"
    click.echo(f"{campaign}: {len(document['entries'])} entries ({state}) written to {out_file}; "
               f"entries sha256 {document['entries_sha256']}")


@contest.command("verify")
@click.argument("campaign")
@click.option("--entries", "entries_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check this published entry list instead of the one in the database.")
@click.pass_context
def verify(ctx: click.Context, campaign: str, entries_file: Path | None) -> None:
    """Recompute CAMPAIGN's winners from the seed and entry list; exit 1 on a mismatch."""
    runtime = get_runtime(ctx)
    problems: list[str] = []
    with Session(runtime.engine) as session:
        rules = _rules(session, runtime, campaign)
        row = contests.get_contest(session, campaign)
        if entries_file is None:
            document = contests.published_document(session, campaign, rules=rules)
        else:
            document = _read_document(entries_file)
            # A self-consistent file with another seed and commitment proves nothing: the commitment
            # must be the one the invitations showed.
            if row is not None and document.get("commitment") != row.seed_hash:
                problems.append(f"the file's commitment is not the one fixed when the contest opened ({row.seed_hash})")
            if document.get("contest") != campaign:
                problems.append(f"the file is about contest {document.get('contest')!r}, not {campaign!r}")
    try:
        verification = contests.verify_document(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValuemailError(f"{entries_file or campaign}: not a contest entry list ({exc})") from None
    problems = problems + verification.problems
    if verification.recomputed:
        click.echo("recomputed winners: " + ", ".join(f"{p.rank}. entry #{p.entry_id}" for p in verification.recomputed))
    for problem in problems:
        click.echo(f"FAILED: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{campaign}: verified: sha256(seed) matches the commitment {document['commitment']}, and the "
               f"{len(verification.recomputed)} winner(s) follow from the seed and the {len(document['entries'])} entries")


@contest.command("purge-unconfirmed")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Erase those created more than this many days ago "
                   "(default: [scheduler] purge_unconfirmed_after_days, 30).")
@click.option("--dry-run", is_flag=True, help="Only count them.")
@click.pass_context
def purge_unconfirmed(ctx: click.Context, days: int | None, dry_run: bool) -> None:
    """Erase contacts made for contest confirmations that were never confirmed (the scheduler's tick does it too)."""
    runtime = get_runtime(ctx)
    days = runtime.settings.scheduler.purge_unconfirmed_after_days if days is None else days
    older_than, now = timedelta(days=days), runtime.clock.now()
    if dry_run:
        with Session(runtime.engine) as session:
            found = contests.unconfirmed_contacts(session, older_than=older_than, now=now, limit=sys.maxsize)
        click.echo(f"{len(found)} contest contact(s) never confirmed within {days} days would be erased")
        return
    total = 0
    while True:  # one transaction per batch: a long purge never holds one big lock
        with session_scope(runtime.engine) as session:
            erased = contests.purge_unconfirmed(session, older_than=older_than, now=now)
        total += erased
        if erased < contests.PURGE_BATCH:
            break
    click.echo(f"erased {total} contest contact(s) never confirmed within {days} days")


def _rules(session: Session, runtime, campaign: str) -> contests.ContestRules:
    definition = contests.stored_campaign(session, campaign, settings=runtime.settings)
    return contests.ContestRules.from_section(definition.section, tz=runtime.settings.tz)


def _read_document(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValuemailError(f"{path}: cannot read the entry list: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != contests.DOCUMENT_FORMAT:
        raise ValuemailError(f"{path}: not a contest entry list (format {contests.DOCUMENT_FORMAT})")
    return document
