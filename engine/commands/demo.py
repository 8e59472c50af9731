"""`valuemail demo`: load the demo data set."""

from __future__ import annotations

import click

from ..cli import get_runtime
from ..errors import ValuemailError


def register(main: click.Group) -> None:
    main.add_command(demo)


@click.command()
@click.option("--contacts", "count", type=click.IntRange(1, 1_000_000), default=3000, show_default=True,
              help="How many demo contacts to generate.")
@click.pass_context
def demo(ctx: click.Context, count: int) -> None:
    """Load a demo data set: contacts, two years of orders and trial events.

    The data is deterministic and dated relative to today, and every address is at
    example.com, example.org or example.net, so nothing can be mailed for real. Running it
    again the same day changes nothing.
    """
    from ..demo import load_demo
    from ..migrate import current

    runtime = get_runtime(ctx)
    if current(runtime.engine) is None:
        raise ValuemailError("the database has no schema yet; run `valuemail db upgrade` first")
    summary = load_demo(runtime.engine, settings=runtime.settings, clock=runtime.clock, contacts=count)
    click.echo(str(summary))
