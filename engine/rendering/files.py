"""Template file access confined to the templates directory (no absolute paths, no `..`, no symlink escapes)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .faults import TemplateFault


class TemplateFiles:
    """Reads template files by relative name; nothing outside `root` can be named or read."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """The file for a template name, or TemplateFault if the name is unsafe or missing."""
        if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
            raise TemplateFault(str(name), None, "invalid template name")
        pure = PurePosixPath(name)
        # Refuse rather than normalise: a marketer who writes '../x' or '/etc/x' gets told so.
        if pure.is_absolute() or name.startswith("~") or any(part in ("..", ".") for part in pure.parts):
            raise TemplateFault(name, None, "template paths must be relative to the templates directory, without '..'")
        root = self.root.resolve()
        candidate = (root / pure).resolve()
        if not candidate.is_relative_to(root):
            raise TemplateFault(name, None, "template path leads outside the templates directory")
        if not candidate.is_file():
            raise TemplateFault(self.display(name), None, "template file not found")
        return candidate

    def read(self, name: str) -> tuple[str, int]:
        """The text of a template file and its mtime (ns), for cache invalidation."""
        path = self.path(name)
        try:
            stat = path.stat()
            return path.read_text(encoding="utf-8"), stat.st_mtime_ns
        except UnicodeDecodeError as exc:
            raise TemplateFault(self.display(name), None, f"not valid UTF-8 ({exc.reason})") from None
        except OSError as exc:
            raise TemplateFault(self.display(name), None, f"cannot read: {exc.strerror}") from None

    def mtime(self, name: str) -> int | None:
        """The file's current mtime (ns), or None if it is gone."""
        try:
            return self.path(name).stat().st_mtime_ns
        except (TemplateFault, OSError):
            return None

    def display(self, name: str) -> str:
        """How a template file is named in problems shown to users."""
        return str(self.root / name)
