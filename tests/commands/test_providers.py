"""`valuemail providers`: installed providers, route, limits with usage, throttles."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.clock import FixedClock
from engine.config import ProviderLimits
from engine.sending.ratelimit import Throttles, reserve
from tests.conftest import AS_OF, write_settings
from tests.sending.test_send import cli


def test_providers_shows_route_limits_usage_and_throttles(project, database_url, db):
    settings = write_settings(project, database_url, sending={"rate_per_second": 50}, extra=(
        '[provider]\nname = "smtp"\nfallback = "outbox"\nfailover_after = 4\n'
        "[provider.limits.smtp]\nper_second = 5\nper_hour = 100\nper_day = 1000\n"))
    now = datetime.fromisoformat(AS_OF)  # the instant the command runs as of (time runs on from there)
    limits = ProviderLimits(per_hour=100, per_day=1000)
    for _ in range(3):
        assert reserve(db, "smtp", limits, now=now - timedelta(minutes=30)) is None
    assert reserve(db, "smtp", limits, now=now - timedelta(hours=5)) is None
    Throttles(engine=db, clock=FixedClock(now)).block("outbox", seconds=3600, reason="421 4.7.0 try again later")

    result = cli(settings, "providers")
    assert result.exit_code == 0, result.output
    out = result.output
    installed = out.splitlines()[0]
    assert installed.startswith("installed: ") and {"outbox", "smtp"} <= set(installed[11:].split(", "))
    assert "provider: smtp\n" in out
    assert "fallback: outbox (after 4 unavailable results in a row the provider is skipped for 60 s)" in out
    assert "all providers together: 50 per second" in out
    smtp, outbox = out.split("\nsmtp\n")[1].split("\noutbox\n")
    assert "per second: 5\n" in smtp and "last hour:  3 sent of 100\n" in smtp and "last day:   4 sent of 1000\n" in smtp
    assert "throttle:   none" in smtp
    assert "per second: unlimited" in outbox and "last hour:  0 sent (no hourly limit)" in outbox
    assert "throttle:   waiting until 2027-03-20 10:00:00 CET (421 4.7.0 try again later)" in outbox
