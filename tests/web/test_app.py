"""The application shell: health check, security headers, cookies, static files, error pages."""

from __future__ import annotations

import re

from engine.web import create_app

from engine.db import session_scope

from .factories import make_campaign, make_contact, make_delivery, make_run


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_reports_an_unreachable_database(settings, clock):
    from sqlalchemy import create_engine

    # Nothing listens on port 1: connecting is refused at once.
    broken = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    app = create_app(settings=settings, engine=broken, clock=clock, testing=True)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "error"


def test_security_headers_on_every_page(client):
    for path in ("/admin/runs", "/healthz", "/u/garbage", "/no-such-page"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert headers["Cache-Control"] == "no-store", path


def test_session_cookie_is_httponly_and_samesite_lax(client, signer, db):
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        delivery_id = make_delivery(s, run, make_contact(s, "a@example.com")).id
    response = client.get(f"/u/{signer.sign('unsubscribe', delivery_id)}")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # base_url is http in tests


def test_https_base_url_makes_cookies_secure(settings, db, clock):
    app_settings = settings.model_copy(update={"app": settings.app.model_copy(update={"base_url": "https://mail.example"})})
    app = create_app(settings=app_settings, engine=db, clock=clock, testing=True)
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_stylesheet_is_served_locally(client):
    html = client.get("/admin/login").text
    hrefs = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert "/static/app.css" in hrefs
    assert not [h for h in hrefs if h.startswith(("http:", "https:", "//"))]
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert "viewport" in html


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "There is no page at this address" in response.text


def test_wrong_method_keeps_allow_header(client):
    # Anonymous: the login guard answers first for anything under /admin (it reveals no methods).
    assert client.post("/admin/runs").status_code == 302
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_unhandled_error_is_a_friendly_500(settings, db, clock, signer):
    def broken_renderer(session, delivery_id):
        raise RuntimeError("secret internals /etc/passwd")

    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        delivery_id = make_delivery(s, run, make_contact(s, "a@example.com")).id
    app = create_app(settings=settings, engine=db, clock=clock, testing=False, view_renderer=broken_renderer)
    response = app.test_client().get(f"/v/{signer.sign('view', delivery_id)}")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret internals" not in response.text and "Traceback" not in response.text


def test_creating_the_app_touches_no_database(settings, clock):
    from sqlalchemy import create_engine, event

    engine = create_engine("sqlite://")
    connects = []
    event.listen(engine, "connect", lambda *a: connects.append(1))
    create_app(settings=settings, engine=engine, clock=clock)
    assert connects == []


#: The pages that take both a GET (a form, a confirmation) and a POST (the change), each with a test
#: that HEAD and OPTIONS, form body included, change nothing (test_public, test_preferences,
#: test_surveys, test_contest_pages, test_auth: `test_head_...`).
GET_AND_POST = {"/admin/login", "/u/", "/u/<token>", "/p/<token>/erase", "/s/<token>", "/c/<token>", "/c/r/<token>",
                "/c/confirm/<token>"}


def test_every_page_with_a_get_and_a_post_is_covered_by_a_head_test(app):
    """A new view answering GET and POST on one URL must get its own HEAD test (and a place here)."""
    both = {rule.rule for rule in app.url_map.iter_rules() if {"GET", "POST"} <= rule.methods}
    assert both == GET_AND_POST
