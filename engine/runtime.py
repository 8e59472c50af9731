"""The objects a command needs, built once from settings and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.engine import Engine

from .clock import Clock, SystemClock
from .config import Settings
from .db import make_engine


@dataclass
class Runtime:
    """Settings, database engine and clock for one process."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    def close(self) -> None:
        """Release database connections."""
        if "engine" in self.__dict__:
            self.engine.dispose()
