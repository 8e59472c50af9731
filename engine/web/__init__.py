"""The Flask application factory: admin area, public recipient pages, health check."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, jsonify, redirect, url_for
from markupsafe import Markup, escape
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..clock import Clock, SystemClock
from ..config import Settings
from ..tokens import TokenSigner
from .context import ViewRenderer, WebContext, db_session, install
from .errors import register_error_handlers
from .security import configure_security

__all__ = ["create_app", "ViewRenderer"]


def create_app(
    *,
    settings: Settings,
    engine: Engine,
    clock: Clock | None = None,
    testing: bool = False,
    view_renderer: ViewRenderer | None = None,
) -> Flask:
    """Build the web app on `engine`; `view_renderer` enables /v/<token> (view in browser)."""
    # Imported here so that importing engine.web stays cheap for commands that never serve.
    from . import admin, api, auth, contests, coupons, preferences, public, surveys, tracking, webhooks

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        TESTING=testing,
        # A recipient may leave the confirm page open for hours; the token stays bound to the
        # session cookie, so it need not also expire after flask-wtf's default hour.
        WTF_CSRF_TIME_LIMIT=None,
    )
    configure_security(app, https=settings.app.base_url.startswith("https://"))
    install(app, WebContext(settings=settings, engine=engine, clock=clock or SystemClock(),
                            signer=TokenSigner(settings.secret_key), view_renderer=view_renderer))

    csrf = CSRFProtect()
    csrf.init_app(app)
    # The unsubscribe view checks CSRF itself, except for the RFC 8058 one-click body.
    csrf.exempt(public.unsubscribe)

    auth.init_app(app)  # login pages, and the login guard for every path under /admin
    app.register_blueprint(admin.bp)
    app.register_blueprint(public.bp)
    app.register_blueprint(surveys.bp)
    app.register_blueprint(preferences.bp)
    app.register_blueprint(coupons.bp)
    app.register_blueprint(contests.bp)
    app.register_blueprint(tracking.bp)
    app.register_blueprint(api.bp)
    # The API authenticates each request by its key, never by a cookie: there is no session to forge.
    csrf.exempt(api.bp)
    app.register_blueprint(webhooks.bp)  # exempts itself from CSRF: providers sign instead
    register_error_handlers(app)
    _register_filters(app, settings)

    @app.get("/")
    def home():
        return redirect(url_for("admin.runs"))

    @app.get("/healthz")
    def healthz():
        try:
            db_session().exec(text("SELECT 1")).all()
        except SQLAlchemyError:
            return jsonify(status="error", detail="database unavailable"), 503
        return jsonify(status="ok")

    return app


def _register_filters(app: Flask, settings: Settings) -> None:
    tz = settings.tz

    @app.template_filter("localtime")
    def localtime(value: datetime | None) -> str:
        # Stored in UTC; shown in the configured timezone with its abbreviation.
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") if value else ""

    @app.template_filter("localdate")
    def localdate(value: datetime | None) -> str:
        # Dates a recipient reads: the day in the configured timezone, written the same in every language.
        return value.astimezone(tz).strftime("%Y-%m-%d") if value else ""

    @app.template_filter("fill")
    def fill(text: str, **values) -> Markup:
        # Page texts are ours; the values put into them are escaped unless already markup.
        return escape(text).format(**values)

    @app.template_filter("email_span")
    def email_span(address: str) -> Markup:
        return Markup('<span class="email">{}</span>').format(address)

    @app.context_processor
    def _globals():
        return {"timezone_name": settings.app.timezone}
