"""Admin login: every admin route needs it, CSRF, roles, sessions ending, rate limit, safe redirects."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine import admins
from engine.db import session_scope
from engine.models import LoginFailure, Run
from engine.web import create_app

from tests.support.data import database_state

from .factories import T0, make_campaign, make_run
from .logins import PASSWORD, csrf_token, log_in, make_admin

LOGIN = "/admin/login"
_ARG = re.compile(r"<(?:([^<>:]+):)?([^<>]+)>")


def admin_rules(app) -> list:
    """Every URL rule under /admin except the login page itself."""
    return sorted((r for r in app.url_map.iter_rules()
                   if (r.rule == "/admin" or r.rule.startswith("/admin/")) and r.endpoint != "auth.login"),
                  key=lambda r: r.rule)


def example_path(rule) -> str:
    """The rule with every argument filled in (1 for numbers, a word otherwise)."""
    return _ARG.sub(lambda m: "1" if m.group(1) in ("int", "float") else "spring-sale", rule.rule)


def assert_sent_to_login(response, path: str) -> None:
    if path.endswith(".json"):
        assert response.status_code == 401, path
        assert response.get_json()["error"] == "login required", path
        assert response.headers["WWW-Authenticate"].startswith("Session"), path
    else:
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith(LOGIN), path


def logged_in(app, db, email: str, role: str):
    make_admin(db, email, role=role)
    client = app.test_client()
    assert log_in(client, email).status_code == 302
    return client


def run_status(db, run_id: int) -> tuple[str, str]:
    with Session(db) as s:
        run = s.get(Run, run_id)
        return run.status, run.pause_reason


def failures(db) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(LoginFailure)).scalar_one()


@pytest.fixture
def sending_run(db):
    with session_scope(db) as s:
        return make_run(s, make_campaign(s), status="sending").id


# -- every admin route, by construction -------------------------------------------------------------

def test_every_admin_route_sends_anonymous_visitors_to_login(app, client):
    rules = admin_rules(app)
    endpoints = {r.endpoint for r in rules}
    # Not vacuous: the routes known today are all in the URL map's list.
    assert {"admin.index", "admin.runs", "admin.run_detail", "admin.survey_results", "admin.pause_run",
            "admin.resume_run", "auth.logout"} <= endpoints
    token = csrf_token(client)  # an anonymous session's token: the CSRF check passes, the login check must not
    for rule in rules:
        path = example_path(rule)
        assert_sent_to_login(client.get(path), path)
        assert_sent_to_login(client.post(path, data={"csrf_token": token}), path)
        # Without a CSRF token a POST is refused one way or the other, never served.
        assert client.post(path).status_code in (302, 400, 401), path


def test_paths_under_admin_outside_any_route_also_need_a_login(client):
    # A page that does not exist (or a method a page does not take) tells an anonymous visitor nothing.
    assert_sent_to_login(client.get("/admin/no-such-page"), "/admin/no-such-page")
    assert_sent_to_login(client.delete("/admin/runs"), "/admin/runs")


def test_the_guard_remembers_where_the_visitor_wanted_to_go(app, client, db, sending_run):
    response = client.get(f"/admin/runs/{sending_run}?status=queued")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{LOGIN}?next=/admin/runs/{sending_run}?status%3Dqueued"
    make_admin(db)
    response = log_in(client, next=f"/admin/runs/{sending_run}?status=queued")
    assert response.headers["Location"] == f"/admin/runs/{sending_run}?status=queued"
    assert client.get(f"/admin/runs/{sending_run}").status_code == 200


def test_every_write_under_admin_needs_the_admin_role(app, db):
    viewer = logged_in(app, db, "viewer@example.com", "viewer")
    token = csrf_token(viewer, "/admin/runs")
    writes = [r for r in admin_rules(app) if "POST" in r.methods and r.endpoint != "auth.logout"]
    assert writes, "no admin write to check"
    for rule in writes:
        response = viewer.post(example_path(rule), data={"csrf_token": token})
        assert response.status_code == 403, rule.rule
        assert "change nothing" in response.text


# -- roles ------------------------------------------------------------------------------------------

def test_a_viewer_cannot_pause_an_admin_can(app, db, sending_run):
    viewer = logged_in(app, db, "viewer@example.com", "viewer")
    page = viewer.get(f"/admin/runs/{sending_run}")
    assert page.status_code == 200 and "Pause sending" not in page.text  # no button a viewer cannot use
    response = viewer.post(f"/admin/runs/{sending_run}/pause", data={"csrf_token": csrf_token(viewer, "/admin/runs")})
    assert response.status_code == 403
    assert response.mimetype == "text/html" and "Ask an admin" in response.text
    assert run_status(db, sending_run) == ("sending", "")

    boss = logged_in(app, db, "boss@example.com", "admin")
    assert "Pause sending" in boss.get(f"/admin/runs/{sending_run}").text
    token = csrf_token(boss, "/admin/runs")
    response = boss.post(f"/admin/runs/{sending_run}/pause", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == f"/admin/runs/{sending_run}"
    assert run_status(db, sending_run) == ("paused", "paused by boss@example.com")
    assert "Resume sending" in boss.get(f"/admin/runs/{sending_run}").text

    response = boss.post(f"/admin/runs/{sending_run}/resume", data={"csrf_token": token})
    assert response.status_code == 302
    assert run_status(db, sending_run) == ("sending", "")
    # The one write a viewer may make: logging out.
    response = viewer.post("/admin/logout", data={"csrf_token": csrf_token(viewer, "/admin/runs")})
    assert response.status_code == 302 and response.headers["Location"] == LOGIN
    # Resuming a run that is not paused changes nothing and says so.
    page = boss.post(f"/admin/runs/{sending_run}/resume", data={"csrf_token": token}, follow_redirects=True)
    assert "Only a paused run can be resumed." in page.text
    assert boss.post("/admin/runs/424242/pause", data={"csrf_token": token}).status_code == 404


def test_a_role_change_applies_to_an_open_session(app, db, sending_run):
    viewer = logged_in(app, db, "viewer@example.com", "viewer")
    token = csrf_token(viewer, "/admin/runs")
    assert viewer.post(f"/admin/runs/{sending_run}/pause", data={"csrf_token": token}).status_code == 403
    with session_scope(db) as s:
        admins.set_role(s, "viewer@example.com", "admin", now=T0)
    assert viewer.post(f"/admin/runs/{sending_run}/pause", data={"csrf_token": token}).status_code == 302
    assert run_status(db, sending_run)[0] == "paused"


def test_the_nav_shows_who_is_logged_in(admin_client):
    html = admin_client.get("/admin/runs").text
    assert '<span class="email">admin@example.com</span>' in html
    assert '<span class="tag role">admin</span>' in html
    assert 'action="/admin/logout"' in html


# -- CSRF -------------------------------------------------------------------------------------------

def test_login_without_a_csrf_token_is_refused(client, db):
    make_admin(db)
    response = client.post(LOGIN, data={"email": "admin@example.com", "password": PASSWORD})
    assert response.status_code == 400 and "Please try again" in response.text
    forged = client.post(LOGIN, data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert_sent_to_login(client.get("/admin/runs"), "/admin/runs")
    assert failures(db) == 0  # refused before any password was checked


def test_logout_without_a_csrf_token_is_refused(admin_client):
    assert admin_client.post("/admin/logout").status_code == 400
    assert admin_client.get("/admin/runs").status_code == 200  # still logged in


# -- sessions ---------------------------------------------------------------------------------------

def test_logout_ends_the_session_and_any_copy_of_its_cookie(app, admin_client):
    cookie = admin_client.get_cookie("vm_session").value
    copy = app.test_client()
    copy.set_cookie("vm_session", cookie)
    assert copy.get("/admin/runs").status_code == 200
    response = admin_client.post("/admin/logout", data={"csrf_token": csrf_token(admin_client, "/admin/runs")})
    assert response.status_code == 302 and response.headers["Location"] == LOGIN
    assert "You are logged out." in admin_client.get(LOGIN).text
    assert_sent_to_login(admin_client.get("/admin/runs"), "/admin/runs")
    assert_sent_to_login(copy.get("/admin/runs"), "/admin/runs")


def test_a_password_change_ends_every_session(app, db, admin_client):
    other = app.test_client()
    assert log_in(other).status_code == 302
    assert admin_client.get("/admin/runs").status_code == 200
    with session_scope(db) as s:
        admins.set_password(s, "admin@example.com", "a brand new passphrase", now=T0)
    assert_sent_to_login(admin_client.get("/admin/runs"), "/admin/runs")
    assert_sent_to_login(other.get("/admin/runs"), "/admin/runs")
    assert "wrong" in log_in(other).text  # the old password no longer works
    assert log_in(other, password="a brand new passphrase").status_code == 302
    assert other.get("/admin/runs").status_code == 200


def test_disabling_an_account_ends_its_sessions_and_logins(db, admin_client):
    with session_scope(db) as s:
        admins.disable(s, "admin@example.com", now=T0)
    assert_sent_to_login(admin_client.get("/admin/runs"), "/admin/runs")
    response = log_in(admin_client)
    assert response.status_code == 200 and "The email or password is wrong." in response.text


def test_a_login_lasts_twelve_hours_by_the_apps_clock(admin_client, clock):
    clock.set(T0 + timedelta(hours=11, minutes=59))
    assert admin_client.get("/admin/runs").status_code == 200
    clock.set(T0 + timedelta(hours=12))
    assert_sent_to_login(admin_client.get("/admin/runs"), "/admin/runs")


def test_login_starts_a_new_session(app, client, db):
    make_admin(db)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    before = csrf_token(client)
    assert log_in(client).status_code == 302
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.permanent
    assert csrf_token(client, "/admin/runs") != before


def test_the_login_page_sends_a_logged_in_admin_on(admin_client):
    response = admin_client.get(f"{LOGIN}?next=/admin/runs")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/runs"


def test_session_cookie_flags(client, db):
    make_admin(db)
    cookie = log_in(client).headers["Set-Cookie"]
    assert cookie.startswith("vm_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # base_url is http in the tests
    assert "Expires=" in cookie  # a permanent session: it ends with its lifetime, not with the browser


def test_session_cookie_is_secure_behind_https(settings, db, clock):
    https = settings.model_copy(update={"app": settings.app.model_copy(update={"base_url": "https://mail.example"})})
    client = create_app(settings=https, engine=db, clock=clock, testing=True).test_client()
    make_admin(db)
    cookie = log_in(client).headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# -- failures and the rate limit --------------------------------------------------------------------

def test_unknown_email_and_wrong_password_take_the_same_path(client, db, monkeypatch):
    make_admin(db)
    checked: list[str] = []
    real = admins.check_password_hash
    monkeypatch.setattr(admins, "check_password_hash", lambda stored, pw: checked.append(stored) or real(stored, pw))
    wrong_password = log_in(client, "admin@example.com", "not the password!")
    unknown = log_in(client, "nobody@example.com", "not the password!")
    assert wrong_password.status_code == unknown.status_code == 200
    # Alike but for the address typed and the CSRF token (signed with a timestamp in seconds).
    def page(response, email):
        return re.sub(r'name="csrf_token" value="[^"]+"', "", response.text).replace(email, "X")
    assert page(wrong_password, "admin@example.com") == page(unknown, "nobody@example.com")
    assert "The email or password is wrong." in unknown.text
    # One scrypt check each: the unknown address against a dummy hash of the same cost.
    assert len(checked) == 2 and all(h.startswith("scrypt:32768:8:1$") for h in checked)
    assert failures(db) == 2  # both count towards the rate limit


def test_odd_input_is_a_plain_failure_never_an_error(client, db):
    make_admin(db)
    for email, password in (("admin\x00@example.com", PASSWORD), ("", ""), ("x" * 5000, "y" * 5000),
                            ("admin@example.com", "p\x00" * 600)):
        response = log_in(client, email, password)
        assert response.status_code == 200 and "The email or password is wrong." in response.text


def test_the_sixth_failure_for_an_address_is_throttled_even_with_the_right_password(client, db, clock):
    make_admin(db)
    for _ in range(5):
        assert "The email or password is wrong." in log_in(client, password="wrong password!").text
    response = log_in(client)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "900"
    assert "Too many failed logins. Try again in 15 minutes." in response.text
    assert_sent_to_login(client.get("/admin/runs"), "/admin/runs")
    clock.set(T0 + timedelta(minutes=14, seconds=59))
    assert log_in(client).headers["Retry-After"] == "1"
    clock.set(T0 + timedelta(minutes=15))  # the window has passed
    assert log_in(client).status_code == 302
    assert client.get("/admin/runs").status_code == 200


def test_one_client_trying_many_addresses_is_throttled(client, db):
    make_admin(db)
    for i in range(20):
        assert log_in(client, f"guess{i}@example.com", "password guess!").status_code == 200
    response = log_in(client)  # another address, the right password, the same client
    assert response.status_code == 429 and int(response.headers["Retry-After"]) == 900


def test_a_throttled_address_does_not_lock_out_others(client, db):
    make_admin(db)
    make_admin(db, "other@example.com")
    for _ in range(5):
        log_in(client, password="wrong password!")
    assert log_in(client).status_code == 429
    assert log_in(client, "other@example.com").status_code == 302


# -- where the login leads --------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "//evil.example", "https://evil.example", "http://evil.example/admin/runs", "/admin/../x", "/admin/%2e%2e/x",
    "/\\evil.example", "/admin/\\\\evil.example", "javascript:alert(1)", "evil.example", "/elsewhere",
    "/admin/login", "///evil.example", "/admin//evil.example", " //evil.example",
])
def test_next_never_leads_off_the_admin_area(client, db, target):
    make_admin(db)
    response = log_in(client, next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_next_inside_the_admin_area_is_followed(client, db):
    make_admin(db)
    response = log_in(client, next="/admin/runs?before=7")
    assert response.headers["Location"] == "/admin/runs?before=7"


def test_the_login_page_says_when_there_is_no_account_yet(client, db):
    assert "There is no admin account yet" in client.get(LOGIN).text
    make_admin(db)
    html = client.get(LOGIN).text
    assert "There is no admin account yet" not in html
    assert 'autocomplete="current-password"' in html


def test_head_with_the_right_credentials_logs_nobody_in(client, db):
    make_admin(db)
    before = database_state(db)
    head = client.head("/admin/login", data={"email": "admin@example.com", "password": PASSWORD})
    assert head.status_code == 200
    assert client.get("/admin/").status_code == 302  # still sent to the login page
    assert database_state(db) == before
