"""Which provider takes a message: the campaign's own or the configured one, a fallback when it is
down, and a circuit breaker that stops trying a provider that keeps being unavailable."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from ..config import ProviderSettings
from ..providers import Provider

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], Provider]


@dataclass(frozen=True)
class Route:
    """The provider a run's messages go to first, and the one that takes them when it is down."""

    primary: str
    fallback: str | None


class Breaker:
    """Counts a provider's consecutive unavailable results; past the threshold it is skipped a while.

    After the cooldown exactly one caller gets to probe it; the others keep skipping it until the
    probe's result says whether it is back.
    """

    def __init__(self, name: str, *, after: int, cooldown: timedelta):
        self.name = name
        self.after = after
        self.cooldown = cooldown
        self.failures = 0
        self.open_until: datetime | None = None
        self._probing = False
        self._lock = threading.Lock()

    def allow(self, now: datetime) -> bool:
        """Whether to try the provider now (False: go straight to the fallback)."""
        with self._lock:
            if self.open_until is None:
                return True
            if now < self.open_until or self._probing:
                return False
            self._probing = True
            log.info("provider %s: cooldown over, trying it again", self.name)
            return True

    def probe_due(self, now: datetime) -> bool:
        """The cooldown is over and nobody probes yet: the next `allow` is the probe."""
        with self._lock:
            return self.open_until is not None and now >= self.open_until and not self._probing

    def release(self) -> None:
        """The probe this caller was allowed did not happen (its message had to wait): let another try."""
        with self._lock:
            self._probing = False

    def record(self, *, unavailable: bool, now: datetime) -> None:
        """Feed one result of the provider into the breaker."""
        with self._lock:
            if not unavailable:
                if self.open_until is not None:
                    log.warning("provider %s is back; sending through it again", self.name)
                self.failures, self.open_until, self._probing = 0, None, False
                return
            self.failures += 1
            if self._probing or self.failures >= self.after:
                self.open_until = now + self.cooldown
                self._probing = False
                log.warning("provider %s unavailable %d times in a row; skipping it for %.0f s", self.name,
                            self.failures, self.cooldown.total_seconds())

    def state(self, now: datetime) -> str:
        """closed, open (skipped until ...) or half-open (a probe is due or under way)."""
        with self._lock:
            if self.open_until is None:
                return "closed"
            if now < self.open_until:
                return f"open until {self.open_until.isoformat()}"
            return "half-open"


class Router:
    """Provider factories by name and one breaker per provider, shared by a process's sending threads."""

    def __init__(self, *, settings: ProviderSettings, factory_for: Callable[[str], ProviderFactory],
                 factories: dict[str, ProviderFactory] | None = None):
        self.settings = settings
        self._factory_for = factory_for
        self._factories: dict[str, ProviderFactory] = dict(factories or {})
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def route(self, campaign_provider: str | None) -> Route:
        """The route of a campaign's messages; its own provider fails over to the global fallback too."""
        primary = campaign_provider or self.settings.name
        fallback = self.settings.fallback or None
        return Route(primary=primary, fallback=fallback if fallback != primary else None)

    def prepare(self, route: Route) -> None:
        """Build the route's factories now, so a misconfigured provider fails before any thread sends."""
        self.factory(route.primary)
        if route.fallback:
            self.factory(route.fallback)

    def factory(self, name: str) -> ProviderFactory:
        """The factory of provider `name`, built once per process."""
        with self._lock:
            if name not in self._factories:
                self._factories[name] = self._factory_for(name)
            return self._factories[name]

    def message_parts(self, route: Route) -> tuple[bool, bool]:
        """(MIME bytes, fields): what the route's providers read, so the composer builds only that."""
        mime = fields = False
        for name in filter(None, (route.primary, route.fallback)):
            sends_mime = getattr(getattr(self.factory(name), "provider_class", None), "sends_mime", None)
            mime |= sends_mime is not False
            fields |= sends_mime is not True
        return mime, fields

    def breaker(self, name: str) -> Breaker:
        """The circuit breaker of provider `name`."""
        with self._lock:
            if name not in self._breakers:
                self._breakers[name] = Breaker(
                    name, after=self.settings.failover_after,
                    cooldown=timedelta(seconds=self.settings.failover_cooldown_seconds))
            return self._breakers[name]


class ThreadProviders:
    """The send stage's provider instances by name, made on first use and closed together."""

    def __init__(self, router: Router):
        self.router = router
        self._instances: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        """This thread's instance of provider `name`."""
        if name not in self._instances:
            self._instances[name] = self.router.factory(name)()
        return self._instances[name]

    def close(self) -> None:
        """Close every instance this thread made."""
        for provider in self._instances.values():
            provider.close()
        self._instances.clear()
