"""`valuemail import contacts|orders|events FILE.csv [--strict] [--rejects PATH]`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from ..cli import get_runtime
from ..errors import ValuemailError

PROGRESS_MIN_BYTES = 1 << 20  # smaller files finish before a bar would be worth drawing

_COLUMNS = {
    "contacts": "email (required, unique ignoring case), first_name, last_name, country (ISO 3166-1 alpha-2), "
                "language (ISO 639-1), timezone (IANA), tags (;-separated), status (subscribed|unsubscribed), "
                "created_at (ISO 8601); any other column is stored as a custom attribute.",
    "orders": "order_id (required, unique), email (required, an existing contact), placed_at (required, ISO 8601), "
              "total (required, decimal >= 0, at most 2 decimals), currency (ISO 4217, default from config), "
              "margin (0-1, default from config), status (placed|paid|shipped|delivered|returned|cancelled).",
    "events": "email (required, an existing contact), type (required: trial_started, trial_converted, "
              "trial_cancelled or a custom name), occurred_at (required, ISO 8601), data (optional JSON object).",
}

_NOTES = {
    "contacts": "A present tags column replaces the contact's tags (an empty cell removes them). "
                "An import can unsubscribe a contact but never re-subscribes one who unsubscribed.",
    "orders": "",
    "events": "",
}

_HELP = """Upsert {kind} from FILE (UTF-8 CSV with a header row, BOM optional).

Columns: {columns}

Rows are matched on their natural key and updated in place, so importing the same file
twice changes nothing. A column missing from the header, or an empty cell, leaves the
stored value alone. {notes} Timestamps without an offset are read in the configured app
timezone.

Bad rows are skipped and written, with their line number and the reason, to
FILE-stem.rejects.csv next to FILE (or --rejects PATH). Exit status: 0 when the file was
imported, even if some rows were rejected; 1 when the file itself is unusable, or with
--strict when any row was rejected (then nothing at all is applied).
"""


def register(main: click.Group) -> None:
    main.add_command(import_group)


@click.group("import")
def import_group() -> None:
    """Import contacts, orders or trial events from CSV files."""


def _make_command(kind: str) -> click.Command:
    @click.command(kind, help=_HELP.format(kind=kind, columns=_COLUMNS[kind], notes=_NOTES[kind]),
                   short_help=f"Upsert {kind} from a CSV file.")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--strict", is_flag=True, help="Apply nothing if any row is bad; exit 1.")
    @click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to write rejected rows (default: FILE-stem.rejects.csv next to FILE).")
    @click.pass_context
    def command(ctx: click.Context, file: Path, strict: bool, rejects_path: Path | None) -> None:
        _run(ctx, kind, file, strict=strict, rejects_path=rejects_path)

    return command


def _run(ctx: click.Context, kind: str, file: Path, *, strict: bool, rejects_path: Path | None) -> None:
    from ..importing import import_csv
    from ..migrate import current

    runtime = get_runtime(ctx)
    if current(runtime.engine) is None:
        raise ValuemailError("the database has no schema yet; run `valuemail db upgrade` first")
    with _progress(file) as progress:
        outcome = import_csv(runtime.engine, kind, file, settings=runtime.settings, clock=runtime.clock,
                             strict=strict, rejects_path=rejects_path, progress=progress)
    result = outcome.result
    if not outcome.applied:
        for reject in outcome.sample:
            click.echo(f"{file}:{reject.line}: {reject.reason}", err=True)
        if result.rejected > len(outcome.sample):
            click.echo(f"... and {result.rejected - len(outcome.sample)} more", err=True)
        click.echo(f"{file}: {result.rejected} rejected row(s); --strict: nothing was applied "
                   f"(rejects in {outcome.rejects_path})", err=True)
        ctx.exit(1)
    click.echo(f"{file}: {result.summary()}")
    if outcome.rejects_path is not None:
        click.echo(f"{result.rejected} rejected row(s) with reasons written to {outcome.rejects_path}")


@contextmanager
def _progress(file: Path) -> Iterator:
    """A rich progress bar on stderr for big files when stderr is a terminal; otherwise no callback."""
    try:
        big = file.stat().st_size >= PROGRESS_MIN_BYTES
    except OSError:
        big = False  # the importer reports the missing file
    if not (big and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{phase} {file.name}", total=total)
            bar.update(tasks[phase], completed=done)

        yield update


for _kind in _COLUMNS:
    import_group.add_command(_make_command(_kind))
