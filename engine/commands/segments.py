"""`valuemail segments`: contacts, average and total LTV per segment."""

from __future__ import annotations

from decimal import Decimal

import click
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from ..cli import get_runtime
from ..segments import SegmentRow, audience_summary, load_segments, segment_report

SEGMENTS_FILE = "segments.toml"


def register(main: click.Group) -> None:
    main.add_command(segments)


@click.command("segments")
@click.pass_context
def segments(ctx: click.Context) -> None:
    """Show each segment's contacts, average LTV and total LTV."""
    runtime = get_runtime(ctx)
    settings = runtime.settings
    defined = load_segments(settings.campaigns_dir / SEGMENTS_FILE)
    now = runtime.clock.now()
    with Session(runtime.engine) as session:
        rows = segment_report(session, defined, now=now, settings=settings)
        total = audience_summary(session, now=now, settings=settings)

    currency = settings.ltv.default_currency
    table = Table(title="Segments", title_justify="left", show_footer=True, caption_justify="left",
                  caption="A contact counts in every segment it matches.\nSuppressed addresses are left out.")
    # Numbers never wrap; on a narrow terminal a long segment name folds instead.
    table.add_column("segment", footer="all subscribed", overflow="fold")
    table.add_column("contacts", justify="right", footer=f"{total.contacts:,}", no_wrap=True)
    table.add_column("avg LTV", justify="right", footer=_amount(total.avg_ltv, currency), no_wrap=True)
    table.add_column("total LTV", justify="right", footer=_amount(total.total_ltv, currency), no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, currency))
    Console(highlight=False).print(table)


def _cells(row: SegmentRow, currency: str) -> tuple[str, str, str, str]:
    return row.name, f"{row.contacts:,}", _amount(row.avg_ltv, currency), _amount(row.total_ltv, currency)


def _amount(value: Decimal | None, currency: str) -> str:
    return "–" if value is None else f"{value:,.2f} {currency}"
