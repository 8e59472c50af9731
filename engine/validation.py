"""Turn pydantic validation errors into located `file:line: message` problems."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InvalidFile, Problem
from .tomlpos import TomlDocument


def dotted(loc: tuple) -> str:
    """Render a pydantic location as a TOML-style dotted key."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts)


def describe(err: dict[str, Any], prefix: tuple = ()) -> str:
    """A marketer-readable message for one pydantic error."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = dotted(prefix + loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "missing":
        return f"missing required key '{key}'"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and kind.endswith("_type"):
        msg = f"{msg} (got {type(err['input']).__name__} {err['input']!r})"
    return f"'{key}': {msg}" if key else msg


def problems_from(exc: ValidationError, doc: TomlDocument, prefix: tuple = ()) -> list[Problem]:
    """One located problem per pydantic error, with the line of the offending key."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = doc.line_of(prefix + loc)
        problems.append(Problem(str(doc.path), line, describe(err, prefix)))
    return problems


def parse_model(model: type[BaseModel], data: Any, doc: TomlDocument, *, error: type[InvalidFile], prefix: tuple = ()):
    """Validate `data` against `model`, raising `error` with located problems."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(problems_from(exc, doc, prefix)) from None
