"""Cookie settings and the security headers every response carries."""

from __future__ import annotations

from flask import Flask, Response, request

#: Pages of this app: only our own stylesheet and images, no scripts, never framed.
DEFAULT_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def configure_security(app: Flask, *, https: bool) -> None:
    """Harden cookies and add the security headers to every response."""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        SESSION_COOKIE_NAME="vm_session",
        # No form here needs more than a few kilobytes; refuse big bodies before parsing them.
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.after_request(_security_headers)


def _security_headers(response: Response) -> Response:
    headers = response.headers
    # setdefault: a view that serves other content (view in browser) sets its own, stricter policy.
    headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin rather than no-referrer: tokens in our URLs never leak to other sites, and
    # flask-wtf's HTTPS referrer check on our own forms still works.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.endpoint != "static":
        # Pages show addresses and carry tokens; shared caches and back-button caches keep neither.
        headers.setdefault("Cache-Control", "no-store")
    return response
