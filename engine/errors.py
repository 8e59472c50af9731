"""Exception types raised by domain code; the CLI and web layers turn them into output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ValuemailError(Exception):
    """Base class for every error the engine reports to a user."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a user's file: `file:line: message`."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def relative_to(self, root: str | Path) -> "Problem":
        """The problem with its file shown from the project `root` (a web page must not show the server's paths)."""
        try:
            file = str(Path(self.file).resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            file = Path(str(self.file)).name
        return Problem(file, self.line, self.message)


class InvalidFile(ValuemailError):
    """One or more problems in a user-written file (config, campaign, segments, template)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, file: str | Path, line: int | None, message: str) -> "InvalidFile":
        """Build an error holding one problem."""
        return cls([Problem(str(file), line, message)])


class ConfigError(InvalidFile):
    """The settings file is malformed or holds unknown keys or wrong types."""


class CampaignError(InvalidFile):
    """A campaign, segment or template file is invalid."""


class NotFound(ValuemailError):
    """A named thing (campaign, contact, run) does not exist."""


class ImportAborted(ValuemailError):
    """A strict import found bad rows and applied nothing."""


class AlreadySent(ValuemailError):
    """The campaign's occurrence already finished; sending again needs an explicit request."""


class RenderError(ValuemailError):
    """A template failed to compile or render."""


class ProviderError(ValuemailError):
    """A provider could not be configured or reached."""
