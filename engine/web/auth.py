"""Admin login: the login and logout pages, the guard in front of everything under /admin, roles.

Sessions are Flask's signed cookie (vm_session) holding the account id, its session version and
the login time. Every admin request reloads the account: a disabled account, a changed password
(the version is bumped), a logout elsewhere or a login older than SESSION_LIFETIME (by the app's
clock) ends the session. The role is read on every request too, so a change applies at once.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import wraps
from typing import Callable
from urllib.parse import unquote, urlsplit

from flask import (Blueprint, Flask, flash, g, jsonify, make_response, redirect, render_template, request,
                   session, url_for)
from sqlmodel import Session

from .. import admins
from ..db import read_only
from ..models import AdminRole, AdminUser
from .context import web_context
from .errors import error_page

bp = Blueprint("auth", __name__, url_prefix="/admin")

#: A login lasts at most this long, however active the session (absolute, by the app's clock).
SESSION_LIFETIME = timedelta(hours=12)
#: Paths under /admin that answer without a login.
OPEN_ENDPOINTS = frozenset({"auth.login"})
#: Writes a viewer may make: every other non-GET request under /admin needs the admin role.
VIEWER_WRITES = frozenset({"auth.logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PREFIX = "/admin"
_SESSION_KEYS = ("admin_id", "admin_version", "admin_login_at")


def init_app(app: Flask) -> None:
    """Register the login pages, the guard for every path under /admin and `current_admin` in templates."""
    app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME
    app.register_blueprint(bp)
    # The admin blueprint has its own guard (`protect`); this one also covers any other blueprint
    # mounted under /admin later, and 404s and 405s there, so nothing under /admin answers anonymously.
    app.before_request(_guard_admin_paths)

    @app.context_processor
    def _current_admin():
        return {"current_admin": current_admin()}


def protect(blueprint: Blueprint) -> None:
    """Require a logged-in account for every view of `blueprint`, present and future."""
    blueprint.before_request(_require_login)


def current_admin() -> AdminUser | None:
    """The account logged in for this request (once the guard has run), else None."""
    return g.get("admin_user")


def require_role(role: str) -> Callable:
    """Decorator: the view needs the logged-in account to have `role` (a viewer gets a 403 page)."""
    if role not in admins.ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            user = current_admin()
            if user is None:
                return _login_required()
            if not _has_role(user, role):
                return _forbidden(user)
            return view(*args, **kwargs)
        return wrapped
    return decorate


# -- views ----------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; a right email and password start a fresh session and go on to `next`."""
    target = safe_next(request.values.get("next"))
    if request.method != "POST":  # GET and HEAD (which Flask routes here) never change state
        if _load_user() is not None:
            return redirect(target)
        return _login_page(target)
    ctx = web_context()
    email = request.form.get("email", "")[:320]
    password = request.form.get("password", "")
    try:
        user = admins.authenticate(ctx.engine, email, password, client=client_key(), now=ctx.clock.now())
    except admins.LoginThrottled as exc:
        minutes = max(1, -(-exc.retry_after // 60))
        response = _login_page(target, email=email, status=429,
                               error=f"Too many failed logins. Try again in {minutes} minute{'s' * (minutes > 1)}.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except admins.LoginFailed:
        # One message whatever was wrong: it never tells which addresses have an account.
        return _login_page(target, email=email, error="The email or password is wrong.")
    # A new session, not the one the form came with: nothing set before the login (a planted
    # cookie included) carries over, and the CSRF token changes too.
    session.clear()
    session["admin_id"] = user.id
    session["admin_version"] = user.session_version
    session["admin_login_at"] = int(ctx.clock.now().timestamp())
    session.permanent = True
    return redirect(target)


@bp.post("/logout")
def logout():
    """End every session of the logged-in account (a copied cookie too) and show the login form."""
    user = current_admin()
    if user is not None:
        # The cookie is signed, not stored: only bumping the version makes a copy of it worthless.
        admins.end_sessions(web_context().engine, user.id, now=web_context().clock.now())
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def _login_page(target: str, *, email: str = "", error: str | None = None, status: int = 200):
    with Session(read_only(web_context().engine)) as db:
        no_accounts = admins.count_admins(db) == 0
    next_field = target if target != _default_target() else ""
    html = render_template("admin/login.html", email=email, error=error, next=next_field, no_accounts=no_accounts)
    return make_response(html, status)


# -- the guard ------------------------------------------------------------------------------------

def _guard_admin_paths():
    path = request.path
    if not (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")):
        return None
    if request.endpoint in OPEN_ENDPOINTS or request.blueprint == "admin":
        return None  # open, or guarded by the blueprint's own hook
    return _require_login()


def _require_login():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    user = _load_user()
    if user is None:
        return _login_required()
    if request.method not in SAFE_METHODS and request.endpoint not in VIEWER_WRITES and not _has_role(user, "admin"):
        # Anything that changes something needs the admin role, unless listed as a viewer's write:
        # a view added later cannot forget the check.
        return _forbidden(user)
    return None


def _load_user() -> AdminUser | None:
    """The account of the session cookie, checked against the database once per request."""
    if "admin_user_checked" in g:
        return g.admin_user
    g.admin_user_checked = True
    g.admin_user = None
    if "admin_id" not in session:
        return None
    ctx = web_context()
    login_at = session.get("admin_login_at")
    now = ctx.clock.now().timestamp()
    user = None
    if isinstance(login_at, int) and 0 <= now - login_at < SESSION_LIFETIME.total_seconds():
        # A short read-only session of its own: the view's session may write (and on SQLite a
        # writer holds the lock from its first statement).
        with Session(read_only(ctx.engine), expire_on_commit=False) as db:
            user = admins.session_user(db, session.get("admin_id"), session.get("admin_version"))
    if user is None:
        for key in _SESSION_KEYS:
            session.pop(key, None)  # a dead login is forgotten, not retried on every request
        return None
    g.admin_user = user
    return user


def _has_role(user: AdminUser, role: str) -> bool:
    # admin can do everything a viewer can.
    return user.role == AdminRole.admin.value or user.role == role


def _wants_json() -> bool:
    return request.path.endswith(".json") or (
        request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json")


def _login_required():
    if _wants_json():
        response = jsonify(error="login required", login=url_for("auth.login"))
        response.status_code = 401
        # 401 must name a scheme; this one says "log in with the form", not HTTP authentication.
        response.headers["WWW-Authenticate"] = 'Session realm="Valuemail admin"'
        return response
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("auth.login", next=_next_param(target)))


def _next_param(target: str | None) -> str | None:
    if target is None:
        return None
    safe = safe_next(target)
    return None if safe == _default_target() else safe


def _forbidden(user: AdminUser):
    message = f"Your account ({user.role}) can look at everything but change nothing. Ask an admin."
    if _wants_json():
        return jsonify(error=message), 403
    return error_page(403, message)


# -- helpers --------------------------------------------------------------------------------------

def safe_next(target: str | None) -> str:
    """`target` if it is a path inside /admin on this site (never another host, never the login page), else /admin/."""
    default = _default_target()
    if not target or len(target) > 2000 or any(ch in target for ch in "\\\r\n\t\x00") or not target.isprintable():
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default  # https://evil.example, //evil.example, javascript:..., relative paths
    path = parts.path
    # Decoded, since browsers and servers treat %2e%2e like .. and %2f like /.
    decoded = unquote(path)
    segments = decoded.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "//" in decoded or decoded.startswith("//"):
        return default
    if not (decoded == ADMIN_PREFIX or decoded.startswith(ADMIN_PREFIX + "/")):
        return default
    if decoded.rstrip("/") in (ADMIN_PREFIX + "/login", ADMIN_PREFIX + "/logout"):
        return default
    return path + (f"?{parts.query}" if parts.query else "")


def _default_target() -> str:
    return url_for("admin.index")


def client_key() -> str:
    """Who is logging in, for the per-client rate limit: the IPv4 address, or the IPv6 /64 network.

    An IPv6 user usually holds a whole /64, so counting single addresses would let one client
    rotate through them. Behind a reverse proxy this is the proxy's address, unless the WSGI
    server is told to trust its forwarding headers.
    """
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:100]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
