"""`valuemail survey results CAMPAIGN` and `valuemail trial conversion CAMPAIGN`: what a kind's campaign achieved."""

from __future__ import annotations

from datetime import datetime

import click
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from ..campaigns.schedule import parse_instant
from ..cli import get_runtime
from ..errors import ValuemailError
from ..sending.service import load_project_campaign, load_project_segments
from ..surveys import PERIODS
from ..trials import REFERENCE_RATE


def register(main: click.Group) -> None:
    main.add_command(survey)
    main.add_command(trial)


def _campaign(runtime, campaign_id: str, kind: str, at: datetime):
    campaign = load_project_campaign(runtime, campaign_id, segments=load_project_segments(runtime), at=at)
    if campaign.kind_name != kind:
        raise ValuemailError(f"campaign '{campaign_id}' is a {campaign.kind_name} campaign, not {kind}")
    return campaign


def _instant(runtime, at: str | None) -> datetime:
    if at is None:
        return runtime.clock.now()
    try:
        return parse_instant(at, runtime.settings.tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


def _signed(value, unit: str = "") -> str:
    return "–" if value is None else f"{value:+g}{unit}"


@click.group()
def survey() -> None:
    """Post-purchase survey results."""


@survey.command("results")
@click.argument("campaign")
@click.option("--period", type=click.Choice(PERIODS), default="month", show_default=True)
@click.option("--periods", type=click.IntRange(1, 60), default=2, show_default=True, help="How many periods to show.")
@click.option("--at", metavar="ISO-8601", help="Report as of this instant (default now).")
@click.pass_context
def survey_results(ctx: click.Context, campaign: str, period: str, periods: int, at: str | None) -> None:
    """NPS, average rating and responses per period, each compared with the period before."""
    runtime = get_runtime(ctx)
    now = _instant(runtime, at)
    definition = _campaign(runtime, campaign, "post_purchase_survey", now)
    with Session(runtime.engine) as session:
        scores = definition.kind.satisfaction(definition.section, session, definition.id, now=now,
                                              period=period, periods=periods, tz=runtime.settings.tz)
    table = Table(title=f"{definition.name} ({definition.id}): satisfaction per {period}", title_justify="left",
                  caption="NPS = % promoters (9-10) minus % detractors (0-6). Δ = change since the period before.",
                  caption_justify="left")
    columns = ("period", "responses", "NPS", "Δ NPS", "promoters", "passives", "detractors", "avg rating", "Δ rating")
    for name in columns:
        table.add_column(name, justify="left" if name == "period" else "right", no_wrap=True)
    for s in scores:
        table.add_row(s.label, f"{s.responses:,}", "–" if s.nps is None else f"{s.nps:g}", _signed(s.delta_nps),
                      f"{s.promoters:,}", f"{s.passives:,}", f"{s.detractors:,}",
                      "–" if s.average_rating is None else f"{s.average_rating:.2f}", _signed(s.delta_rating))
    Console(highlight=False, width=120).print(table)


@click.group()
def trial() -> None:
    """Trial drip results."""


@trial.command("conversion")
@click.argument("campaign")
@click.option("--at", metavar="ISO-8601", help="Report as of this instant (default now).")
@click.pass_context
def trial_conversion(ctx: click.Context, campaign: str, at: str | None) -> None:
    """How many contacts who got the drip bought within the trial (plus grace days), beside the seeds' ~20%."""
    runtime = get_runtime(ctx)
    now = _instant(runtime, at)
    definition = _campaign(runtime, campaign, "demo_access", now)
    with Session(runtime.engine) as session:
        result = definition.kind.conversion(definition.section, session, definition.id, now=now)
    rate = "–" if result.rate is None else f"{result.rate:.1%}"
    click.echo(f"{definition.name} ({definition.id}): {result.converted:,} of {result.recipients:,} contacts who got "
               f"the drip converted within {result.window_days} days of their trial start: {rate} "
               f"(reference {REFERENCE_RATE:.0%}"
               + ("" if result.versus_reference is None else f", {result.versus_reference:+g} points") + ")")
    if result.open:
        settled = "–" if result.settled_rate is None else f"{result.settled_rate:.1%}"
        click.echo(f"{result.open:,} trial(s) can still convert; among the settled ones the rate is {settled}")
