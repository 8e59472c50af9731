"""The located error a template fault raises: a RenderError that also carries `file:line` problems."""

from __future__ import annotations

from ..errors import Problem, RenderError


class TemplateFault(RenderError):
    """A template failed to compile or render; `problems` say where (`file:line: message`)."""

    def __init__(self, file: str, line: int | None, message: str):
        self.problems = [Problem(file, line, message)]
        super().__init__(str(self.problems[0]))

    @property
    def problem(self) -> Problem:
        """The first (usually only) problem."""
        return self.problems[0]
