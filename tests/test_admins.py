"""Admin accounts: creation, passwords, roles, disabling, sessions, and the login rate limit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine import admins
from engine.db import session_scope
from engine.errors import ValuemailError
from engine.models import AdminUser, LoginFailure

T0 = datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc)
PASSWORD = "correct horse battery"


def create(db, email="ann@example.com", password=PASSWORD, role=None) -> AdminUser:
    with session_scope(db) as s:
        return admins.create_admin(s, email, password, role=role, now=T0)


def login(db, email="ann@example.com", password=PASSWORD, *, client="192.0.2.1", at=T0, limit=admins.DEFAULT_LIMIT):
    return admins.authenticate(db, email, password, client=client, now=at, limit=limit)


def user(db, email="ann@example.com") -> AdminUser:
    with Session(db) as s:
        return admins.get_admin(s, email)


def failure_rows(db) -> list[tuple[str, str]]:
    with Session(db) as s:
        return [tuple(r) for r in s.execute(select(LoginFailure.email_key, LoginFailure.client)
                                            .order_by(LoginFailure.id)).all()]


def test_create_normalises_the_address_and_hashes_with_scrypt(db):
    created = create(db, "Ann@Example.COM")
    assert (created.email, created.email_key) == ("Ann@example.com", "ann@example.com")
    assert created.password_hash.startswith("scrypt:32768:8:1$") and PASSWORD not in created.password_hash
    assert (created.session_version, created.disabled_at, created.created_at) == (1, None, T0)
    assert user(db, " ANN@example.com ").id == created.id  # found in any case


def test_first_account_is_an_admin_later_ones_viewers_unless_told(db):
    assert create(db, "first@example.com").role == "admin"
    assert create(db, "second@example.com").role == "viewer"
    assert create(db, "third@example.com", role="admin").role == "admin"


@pytest.mark.parametrize("email, error", [
    ("ann@example.com", admins.AdminExists), ("ANN@example.com", admins.AdminExists),
    ("not an address", admins.AdminError), ("ann@localhost", admins.AdminError),
])
def test_create_refuses_duplicates_and_bad_addresses(db, email, error):
    create(db)
    with pytest.raises(error):
        create(db, email)


def test_passwords_must_be_at_least_twelve_characters(db):
    with pytest.raises(admins.WeakPassword, match="at least 12 characters"):
        create(db, password="elevenchars")
    with pytest.raises(admins.WeakPassword, match="at most 1024"):
        create(db, password="x" * 1025)
    assert issubclass(admins.WeakPassword, ValuemailError)
    create(db, password="twelve chars")


def test_unknown_role_is_refused(db):
    with pytest.raises(admins.AdminError, match="role must be one of admin, viewer"):
        create(db, role="owner")
    create(db)
    with session_scope(db) as s:
        with pytest.raises(admins.AdminError):
            admins.set_role(s, "ann@example.com", "root", now=T0)
        assert admins.set_role(s, "ann@example.com", "viewer", now=T0).role == "viewer"


def test_unknown_address_is_a_clear_error(db):
    with session_scope(db) as s:
        with pytest.raises(admins.UnknownAdmin, match="no admin account 'ghost@example.com'"):
            admins.set_password(s, "ghost@example.com", PASSWORD, now=T0)


def test_a_password_change_bumps_the_session_version(db):
    created = create(db)
    with session_scope(db) as s:
        admins.set_password(s, "ann@example.com", "another good password", now=T0 + timedelta(hours=1))
    changed = user(db)
    assert changed.session_version == created.session_version + 1
    assert changed.updated_at == T0 + timedelta(hours=1)
    with Session(db) as s:
        assert admins.session_user(s, created.id, created.session_version) is None
        assert admins.session_user(s, created.id, changed.session_version).id == created.id
    with pytest.raises(admins.LoginFailed):
        login(db)
    assert login(db, password="another good password").id == created.id


def test_disable_ends_sessions_and_logins_enable_restores_logins(db):
    created = create(db)
    with session_scope(db) as s:
        admins.disable(s, "ann@example.com", now=T0)
    with Session(db) as s:
        assert admins.session_user(s, created.id, 2) is None  # disabled, whatever the version
    with pytest.raises(admins.LoginFailed):
        login(db)
    with session_scope(db) as s:
        admins.enable(s, "ann@example.com", now=T0)
    assert login(db).id == created.id


def test_end_sessions_bumps_the_version(db):
    created = create(db)
    admins.end_sessions(db, created.id, now=T0)
    assert user(db).session_version == 2


@pytest.mark.parametrize("user_id, version", [(None, 1), ("1", 1), (True, 1), (1, None), (1, "1"), (999, 1)])
def test_session_user_refuses_odd_session_values(db, user_id, version):
    create(db)
    with Session(db) as s:
        assert admins.session_user(s, user_id, version) is None


def test_a_successful_login_records_the_time_and_clears_the_addresses_failures(db):
    create(db)
    for _ in range(4):
        with pytest.raises(admins.LoginFailed, match="email or password is wrong"):
            login(db, password="not the password")
    with pytest.raises(admins.LoginFailed):
        login(db, "other@example.com", "not the password")
    assert login(db, "ANN@example.com", at=T0 + timedelta(minutes=1)).last_login_at == T0 + timedelta(minutes=1)
    assert user(db).last_login_at == T0 + timedelta(minutes=1)
    assert failure_rows(db) == [("other@example.com", "192.0.2.1")]  # only that address's failures go


def test_five_failures_per_address_then_throttled_until_the_window_passes(db):
    create(db)
    for minute in range(5):
        with pytest.raises(admins.LoginFailed):
            login(db, password="not the password", at=T0 + timedelta(minutes=minute))
    with pytest.raises(admins.LoginThrottled) as throttled:
        login(db, at=T0 + timedelta(minutes=5))  # the right password, too late
    # The oldest failure leaves the window at T0 + 15 min: ten minutes from now.
    assert throttled.value.retry_after == 600
    assert isinstance(throttled.value, ValuemailError)
    assert len(failure_rows(db)) == 5  # a throttled attempt is not counted again
    with pytest.raises(admins.LoginThrottled):
        login(db, at=T0 + timedelta(minutes=14, seconds=59))
    assert login(db, at=T0 + timedelta(minutes=15)).email == "ann@example.com"


def test_the_limit_counts_per_address_whether_or_not_it_has_an_account(db):
    for _ in range(5):
        with pytest.raises(admins.LoginFailed):
            login(db, "ghost@example.com", "whatever password")
    with pytest.raises(admins.LoginThrottled):
        login(db, "GHOST@example.com", "whatever password")


def test_the_limit_counts_per_client(db):
    create(db)
    limit = admins.RateLimit(per_email=5, per_client=3, window=timedelta(minutes=15))
    for i in range(3):
        with pytest.raises(admins.LoginFailed):
            login(db, f"guess{i}@example.com", "not the password", client="198.51.100.7", limit=limit)
    with pytest.raises(admins.LoginThrottled):
        login(db, client="198.51.100.7", limit=limit)
    assert login(db, client="198.51.100.8", limit=limit).email == "ann@example.com"  # another client may


def test_invalid_addresses_still_count(db):
    for _ in range(5):
        with pytest.raises(admins.LoginFailed):
            login(db, "  Not An Address ", "whatever password")
    with pytest.raises(admins.LoginThrottled):
        login(db, "not an address", "whatever password")


def test_control_characters_in_the_address_are_a_plain_failure(db):
    create(db)
    for email in ("ann\x00@example.com", "\x00", "ann@example.com\n\x7f"):
        with pytest.raises(admins.LoginFailed):
            login(db, email, "whatever password")
    assert {key for key, _ in failure_rows(db)} == {"ann\ufffd@example.com", "\ufffd", "ann@example.com\ufffd\ufffd"}


def test_failures_older_than_the_window_are_pruned(db):
    with pytest.raises(admins.LoginFailed):
        login(db, "old@example.com", "whatever password")
    with pytest.raises(admins.LoginFailed):
        login(db, "new@example.com", "whatever password", at=T0 + timedelta(minutes=16))
    assert failure_rows(db) == [("new@example.com", "192.0.2.1")]


def test_an_unknown_address_costs_one_password_check_like_a_known_one(db, monkeypatch):
    create(db)
    checked: list[str] = []
    real = admins.check_password_hash
    monkeypatch.setattr(admins, "check_password_hash", lambda stored, pw: checked.append(stored) or real(stored, pw))
    for email in ("ann@example.com", "ghost@example.com"):
        with pytest.raises(admins.LoginFailed):
            login(db, email, "not the password")
    assert len(checked) == 2
    assert checked[0].split("$")[0] == checked[1].split("$")[0] == "scrypt:32768:8:1"


def test_list_admins_by_address(db):
    create(db, "zed@example.com")
    create(db, "amy@example.com")
    with Session(db) as s:
        assert [u.email for u in admins.list_admins(s)] == ["amy@example.com", "zed@example.com"]
        assert admins.count_admins(s) == 2
