"""`valuemail uncertain [--resend|--accept] [ID…|--all]`: sends that may or may not have arrived."""

from __future__ import annotations

import click
from sqlmodel import Session

from ..cli import get_runtime


def register(main: click.Group) -> None:
    main.add_command(uncertain)


@click.command()
@click.argument("ids", type=int, nargs=-1)
@click.option("--resend", is_flag=True, help="Requeue the deliveries IDS (or --all). Recipients may get the mail twice.")
@click.option("--accept", is_flag=True, help="Mark the deliveries IDS (or --all) sent.")
@click.option("--all", "all_", is_flag=True, help="With --resend or --accept: every uncertain delivery.")
@click.pass_context
def uncertain(ctx: click.Context, ids: tuple[int, ...], resend: bool, accept: bool, all_: bool) -> None:
    """List deliveries whose outcome is unknown, or decide about them (--resend / --accept).

    The connection failed after the whole message went out and before the provider answered,
    so it may have been delivered. Valuemail never resends these by itself.
    """
    from ..sending import uncertain as domain

    if resend and accept:
        raise click.UsageError("choose --resend or --accept, not both")
    if (resend or accept) and not (ids or all_):
        raise click.UsageError("name the delivery ids, or --all")
    if (ids or all_) and not (resend or accept):
        raise click.UsageError("delivery ids and --all go with --resend or --accept")
    if ids and all_:
        raise click.UsageError("give delivery ids or --all, not both")
    runtime = get_runtime(ctx)
    now = runtime.clock.now()
    chosen = None if all_ else ids
    if resend:
        count = domain.resend(runtime.engine, chosen, now=now)
        click.echo(f"requeued {count} uncertain deliveries; they may reach their recipients twice. "
                   "`valuemail tick` or `valuemail worker` sends them.")
        _missing(ids, count)
        return
    if accept:
        count = domain.accept(runtime.engine, chosen, now=now)
        click.echo(f"marked {count} uncertain deliveries sent")
        _missing(ids, count)
        return
    with Session(runtime.engine) as session:
        rows = domain.list_uncertain(session)
    if not rows:
        click.echo("No uncertain deliveries.")
        return
    tz = runtime.settings.tz
    table = [("id", "run", "campaign", "address", "when", "provider", "reason")]
    table += [(str(r.delivery_id), str(r.run_id), r.campaign_id, r.email,
               r.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if r.at else "", r.provider or "", r.reason)
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    click.echo(f"{len(rows)} uncertain: maybe delivered, never resent automatically. Decide with "
               "`valuemail uncertain --accept ID…` (count as sent) or `--resend ID…` (may arrive twice), "
               f"or `--all` instead of ids. (times in {runtime.settings.app.timezone})")


def _missing(ids: tuple[int, ...], count: int) -> None:
    if ids and count < len(set(ids)):
        click.echo(f"{len(set(ids)) - count} of the given ids were not uncertain (or their run was cancelled)",
                   err=True)
