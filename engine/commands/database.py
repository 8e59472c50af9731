"""`valuemail db upgrade` and `valuemail db current`."""

from __future__ import annotations

import click

from ..cli import get_runtime
from ..migrate import current, upgrade


def register(main: click.Group) -> None:
    main.add_command(db)


@click.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations up to the newest schema."""
    runtime = get_runtime(ctx, migrated=False)
    upgrade(runtime.engine)
    click.echo(f"database at revision {current(runtime.engine)} ({runtime.engine.url.render_as_string()})")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the schema revision the database is at."""
    click.echo(current(get_runtime(ctx, migrated=False).engine) or "(empty database)")
