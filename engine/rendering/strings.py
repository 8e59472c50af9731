"""Translated template strings: `templates/emails/strings/<name>.toml`, one table per language.

Templates read them as `{{ t.key }}`; the context's `t` holds the recipient's language, with
English for any key a language lacks. Files are `common.toml` (header, footer), one per campaign
kind and, optionally, one per template (named by its stem), merged in that order.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

from ..errors import CampaignError

FALLBACK = "en"


class Strings:
    """Loads and merges string tables, re-reading a file when it changes."""

    def __init__(self, templates_dir: Path):
        self.directory = Path(templates_dir) / "strings"
        self._cache: dict[Path, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def _load(self, name: str) -> dict[str, dict[str, str]]:
        path = self.directory / f"{name}.toml"
        if not path.exists():
            return {}
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise CampaignError.single(path, None, f"invalid TOML: {exc}") from exc
            for language, table in data.items():
                if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                    raise CampaignError.single(path, None, f"[{language}] must hold only key = \"text\" strings")
            self._cache[path] = (mtime, data)
            return data

    def languages(self, *names: str) -> set[str]:
        """Languages that have strings in common or in any of the named files."""
        found: set[str] = set()
        for name in ("common",) + names:
            found |= set(self._load(name))
        return found

    def for_language(self, names: str | tuple[str, ...], language: str | None) -> dict[str, str]:
        """The strings of common plus the named files in `language`, falling back to English key by key."""
        merged: dict[str, str] = {}
        for name in ("common",) + ((names,) if isinstance(names, str) else tuple(names)):
            tables = self._load(name)
            merged.update(tables.get(FALLBACK, {}))
            if language and language != FALLBACK:
                merged.update(tables.get(language, {}))
        return merged
