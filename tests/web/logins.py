"""Admin accounts and logging in through the form, for web tests."""

from __future__ import annotations

import re

from engine import admins
from engine.db import session_scope

from .factories import T0

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_admin(db, email: str = "admin@example.com", *, role: str = "admin", password: str = PASSWORD) -> int:
    """Create an account directly in the database; its id."""
    with session_scope(db) as s:
        return admins.create_admin(s, email, password, role=role, now=T0).id


def csrf_token(client, path: str = "/admin/login") -> str:
    """The CSRF token of the form at `path` (the session's token, valid for every form)."""
    match = _CSRF.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in(client, email: str = "admin@example.com", password: str = PASSWORD, *, next: str | None = None):
    """Post the login form as a browser would; the response (not followed)."""
    form = {"csrf_token": csrf_token(client), "email": email, "password": password}
    if next is not None:
        form["next"] = next
    return client.post("/admin/login", data=form)
