"""`valuemail api-key create NAME | list | revoke PREFIX`: keys for the REST API."""

from __future__ import annotations

from datetime import datetime

import click

from ..cli import get_runtime
from ..db import session_scope


def register(main: click.Group) -> None:
    main.add_command(api_key)


@click.group("api-key")
def api_key() -> None:
    """Keys for the REST API (/api/v1), sent as `Authorization: Bearer <key>`."""


@api_key.command("create")
@click.argument("name")
@click.pass_context
def create(ctx: click.Context, name: str) -> None:
    """Create a key called NAME and print it once; only its hash is stored."""
    from .. import api_keys

    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        new = api_keys.create(session, name, now=runtime.clock.now())
    # The key alone on stdout, so that `KEY=$(valuemail api-key create shop)` captures just the key.
    click.echo(new.key)
    click.echo(f"Created API key {new.record.prefix} ({new.record.name}). Store it now: it is not stored "
               "and cannot be shown again; if it is lost, revoke it and create another.", err=True)


@api_key.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Show every key: prefix, name, created, last used, revoked."""
    from .. import api_keys

    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        keys = api_keys.list_keys(session)
    if not keys:
        click.echo("No API keys yet; create one with `valuemail api-key create NAME`.")
        return
    tz = runtime.settings.tz
    rows = [("prefix", "name", "created", "last used", "revoked")]
    rows += [(key.prefix, key.name, _when(key.created_at, tz), _when(key.last_used_at, tz) or "never",
              _when(key.revoked_at, tz)) for key in keys]
    # Plain aligned columns rather than a drawn table: nothing is folded or cut, and grep and awk can read it.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"(times in {runtime.settings.app.timezone})")


@api_key.command("revoke")
@click.argument("prefix")
@click.pass_context
def revoke(ctx: click.Context, prefix: str) -> None:
    """Revoke the key with PREFIX (as shown by `api-key list`); requests with it get 401 at once."""
    from .. import api_keys

    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        key, changed = api_keys.revoke(session, prefix, now=runtime.clock.now())
    if changed:
        click.echo(f"Revoked API key {key.prefix} ({key.name}).")
    else:
        click.echo(f"API key {key.prefix} ({key.name}) was already revoked.")


def _when(value: datetime | None, tz) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") if value else ""
