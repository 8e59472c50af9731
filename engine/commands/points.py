"""`valuemail points show|redeem|adjust|sync`: look at and change one contact's loyalty points."""

from __future__ import annotations

from datetime import timedelta

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlmodel import Session

from .. import loyalty
from ..cli import get_runtime
from ..db import session_scope
from ..errors import NotFound, ValuemailError
from ..models import Contact


def register(main: click.Group) -> None:
    main.add_command(points)


@click.group()
def points() -> None:
    """Loyalty points: a contact's balance and history, redemptions, corrections."""


@points.command("show")
@click.argument("email")
@click.option("--campaign", help="A loyalty_points campaign whose rewards to measure the balance against.")
@click.option("--entries", "limit", default=15, show_default=True, help="How many recent entries to list.")
@click.pass_context
def show(ctx: click.Context, email: str, campaign: str | None, limit: int) -> None:
    """Show EMAIL's balance, points about to expire and recent entries (as of the last sync)."""
    runtime = get_runtime(ctx)
    now, tz = runtime.clock.now(), runtime.settings.tz
    program = _program(runtime, campaign) if campaign else None
    with Session(runtime.engine) as session:
        contact = _contact(session, email)
        found = loyalty.statement(session, [contact.id], since=None, now=now, expiring_within=timedelta(days=30),
                                  recent=limit)[contact.id]
    click.echo(f"{contact.email}: {found.balance} points")
    if found.expiring:
        click.echo(f"{found.expiring} expire by {found.expiring_at.astimezone(tz):%Y-%m-%d}")
    if program is not None:
        upcoming = program.next_reward(found.balance)
        reached = ", ".join(r.name for r in program.reached(found.balance)) or "none yet"
        click.echo(f"rewards reached: {reached}")
        if upcoming:
            click.echo(f"next reward: {upcoming.name}, {upcoming.points - found.balance} points to go")
    if not found.recent:
        return
    table = Table(title="Recent entries", title_justify="left")
    for name, justify in (("date", "left"), ("kind", "left"), ("points", "right"), ("order / note", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "order / note")
    for entry in found.recent:
        table.add_row(f"{entry.occurred_at.astimezone(tz):%Y-%m-%d %H:%M}", entry.kind, f"{entry.points:+d}",
                      entry.order or entry.note)
    Console(highlight=False).print(table)


@points.command("redeem")
@click.argument("email")
@click.argument("amount", type=click.IntRange(min=1))
@click.option("--reference", required=True, help="Unique per redemption (e.g. the voucher code): a retry never doubles.")
@click.option("--note", default="", help="Shown in the contact's history.")
@click.pass_context
def redeem(ctx: click.Context, email: str, amount: int, reference: str, note: str) -> None:
    """Spend AMOUNT of EMAIL's points; refused when the balance is short."""
    _change(ctx, email, lambda session, contact, now: loyalty.redeem(
        session, contact.id, amount, now=now, reference=reference, note=note),
        refused=f"cannot redeem {amount}", done=f"redeemed {amount} points", again=f"already redeemed (same reference) {amount} points")


@points.command("adjust")
@click.argument("email")
@click.argument("amount", type=int)
@click.option("--reference", required=True, help="Unique per correction: a retry never doubles.")
@click.option("--note", default="", help="Why, shown in the contact's history.")
@click.pass_context
def adjust(ctx: click.Context, email: str, amount: int, reference: str, note: str) -> None:
    """Add (AMOUNT > 0) or deduct points by hand (`adjust --reference R EMAIL -- -50`); added points never expire."""
    _change(ctx, email, lambda session, contact, now: loyalty.adjust(
        session, contact.id, amount, now=now, reference=reference, note=note),
        refused=f"cannot deduct {-amount}", done=f"adjusted by {amount:+d} points", again=f"already adjusted (same reference) by {amount:+d} points")


def _change(ctx: click.Context, email: str, apply, *, refused: str, done: str, again: str) -> None:
    """Apply one idempotent ledger change to EMAIL's points and report it."""
    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        contact = _contact(session, email)
        try:
            result = apply(session, contact, runtime.clock.now())
        except loyalty.InsufficientPoints as exc:
            raise ValuemailError(f"{contact.email} has {exc.balance} points, {refused}") from None
    click.echo(f"{contact.email}: {done if result.created else again}; balance {result.balance}")


@points.command("sync")
@click.argument("campaign")
@click.pass_context
def sync(ctx: click.Context, campaign: str) -> None:
    """Credit orders, welcome bonuses, returns and expiries now, by CAMPAIGN's earning rules."""
    runtime = get_runtime(ctx)
    program = _program(runtime, campaign)
    with session_scope(runtime.engine) as session:
        result = loyalty.sync_points(session, program, now=runtime.clock.now())
    click.echo(f"earned {result.earned}, welcome {result.welcomed}, reversed {result.reversed}, "
               f"expired {result.expired} (ledger entries written)")


def _contact(session: Session, email: str) -> Contact:
    contact = session.execute(select(Contact).where(Contact.email_key == email.strip().lower())).scalars().first()
    if contact is None:
        raise NotFound(f"no contact with email {email}")
    return contact


def _program(runtime, campaign_id: str) -> loyalty.Program:
    from ..sending.service import load_project_campaign, load_project_segments

    definition = load_project_campaign(runtime, campaign_id, segments=load_project_segments(runtime))
    if definition.kind_name != "loyalty_points":
        raise ValuemailError(f"campaign '{campaign_id}' is a {definition.kind_name} campaign, not loyalty_points")
    return definition.kind.program(definition.section, runtime.settings)
