"""Admin pages (being built); the views register on the admin blueprint."""

from __future__ import annotations

from .admin import bp  # noqa: F401
