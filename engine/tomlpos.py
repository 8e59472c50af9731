"""Load TOML with tomllib and find the line a key was written on, for `file:line` errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Sequence

from .errors import InvalidFile

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_DOTTED_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")
_DECODE_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


#: Bounds on a TOML file we read: campaigns, segments and config are a few KB, nested a few levels.
MAX_BYTES = 1_000_000
MAX_DEPTH = 32


def _too_deep(text: str, limit: int = MAX_DEPTH) -> int | None:
    """The line where arrays and inline tables first nest deeper than `limit`, or None.

    tomllib parses nesting by recursion: a few thousand "[" exhaust the interpreter's stack (a
    RecursionError, not a TOML error). Brackets inside strings and comments do not count.
    """
    depth, line, i, n = 0, 1, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            j = i + len(quote)
            while j < n and not text.startswith(quote, j) and (len(quote) == 3 or text[j] != "\n"):
                j += 2 if ch == '"' and text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        i += 1
    return None


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in _DOTTED_PART.findall(dotted))


class TomlDocument:
    """A parsed TOML file that remembers where each key was written."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]):
        self.path = path
        self.text = text
        self.data = data
        self._lines = self._index(text)

    @classmethod
    def load(cls, path: str | Path, *, error: type[InvalidFile] = InvalidFile) -> "TomlDocument":
        """Read and parse `path`; a syntax error becomes `error` with the line tomllib names."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise error.single(path, None, f"cannot read file: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error.single(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        return cls.parse(path, text, error=error)

    @classmethod
    def parse(cls, path: str | Path, text: str, *, error: type[InvalidFile] = InvalidFile) -> "TomlDocument":
        """Parse TOML `text` that came from `path` (a file or a copy stored with a run)."""
        path = Path(path)
        if len(text) > MAX_BYTES:
            raise error.single(path, None, f"too large for a TOML file here ({len(text):,} characters, "
                                           f"at most {MAX_BYTES:,})")
        deep = _too_deep(text)
        if deep is not None:
            raise error.single(path, deep, f"arrays or inline tables nested more than {MAX_DEPTH} levels deep")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            match = _DECODE_POSITION.search(message)
            line = int(match.group(1)) if match else None
            message = _DECODE_POSITION.sub("", message).strip()
            raise error.single(path, line, f"invalid TOML: {message}") from exc
        return cls(path, text, data)

    @staticmethod
    def _index(text: str) -> dict[tuple, int]:
        lines: dict[tuple, int] = {}
        table: tuple = ()
        array_counts: dict[tuple, int] = {}
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = _HEADER.match(line)
            if header and "=" not in line.split("]")[0]:
                name = _split_key(header.group(2))
                if header.group(1) == "[[":
                    index = array_counts.get(name, 0)
                    array_counts[name] = index + 1
                    table = name + (index,)
                else:
                    table = name
                lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                full = table + _split_key(key.group(1))
                for cut in range(len(table) + 1, len(full) + 1):
                    lines.setdefault(full[:cut], number)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        in_multiline = quote
        return lines

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the longest written prefix of `path` (a key inside an inline table maps to its parent)."""
        key = tuple(path)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return None
