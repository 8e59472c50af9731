"""`valuemail providers`: installed providers, the configured route, limits, usage and throttles."""

from __future__ import annotations

import click

from ..cli import get_runtime
from ..providers import available
from ..sending.ratelimit import Throttles, usage


def register(main: click.Group) -> None:
    main.add_command(providers)


@click.command("providers")
@click.pass_context
def providers(ctx: click.Context) -> None:
    """Show installed providers, the configured one and its fallback, limits, usage and throttles."""
    runtime = get_runtime(ctx)
    settings, now = runtime.settings.provider, runtime.clock.now()
    installed = available()
    click.echo(f"installed: {', '.join(sorted(installed)) or 'none'}")
    click.echo(f"provider: {settings.name}" + ("" if settings.name in installed else " (NOT INSTALLED)"))
    if settings.fallback:
        click.echo(f"fallback: {settings.fallback}" + ("" if settings.fallback in installed else " (NOT INSTALLED)")
                   + f" (after {settings.failover_after} unavailable results in a row the provider is skipped "
                   f"for {settings.failover_cooldown_seconds:g} s)")
    else:
        click.echo("fallback: none")
    click.echo(f"all providers together: {_limit(runtime.settings.sending.rate_per_second)} per second "
               "([sending].rate_per_second)")
    throttles = Throttles(engine=runtime.engine, clock=runtime.clock)
    tz = runtime.settings.tz
    names = [settings.name] + [n for n in [settings.fallback, *sorted(settings.limits), *sorted(installed)]
                               if n and n != settings.name]
    for name in dict.fromkeys(names):
        limits = settings.limits_for(name)
        used = usage(runtime.engine, name, now=now)
        click.echo(f"\n{name}")
        click.echo(f"  per second: {_limit(limits.per_second)}")
        click.echo(f"  last hour:  {used.last_hour} sent" + (f" of {limits.per_hour}" if limits.per_hour else "")
                   + ("" if limits.per_hour else " (no hourly limit)"))
        click.echo(f"  last day:   {used.last_day} sent" + (f" of {limits.per_day}" if limits.per_day else "")
                   + ("" if limits.per_day else " (no daily limit)"))
        throttle = throttles.active(name)
        click.echo("  throttle:   none" if throttle is None else
                   f"  throttle:   waiting until {throttle.until.astimezone(tz):%Y-%m-%d %H:%M:%S %Z} ({throttle.reason})")


def _limit(value: float) -> str:
    return "unlimited" if not value else f"{value:g}"
