"""Admin accounts of the web UI: passwords (scrypt), roles, disabling, and the login rate limit.

No Flask here: the web layer and the `valuemail admin` commands both call these functions,
passing the time in explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .db import read_only, session_scope
from .errors import NotFound, ValuemailError
from .importing.errors import FieldProblem
from .importing.fields import email as parse_email
from .models import AdminRole, AdminUser, LoginFailure

#: Shortest password accepted: long passphrases beat composition rules (NIST SP 800-63B).
MIN_PASSWORD = 12
#: Longest password accepted; scrypt's cost grows with the input, so a megabyte "password" is refused.
MAX_PASSWORD = 1024
#: werkzeug's scrypt (n=2**15, r=8, p=1): memory-hard, about 0.1 s per check here.
PASSWORD_METHOD = "scrypt"
ROLES = tuple(role.value for role in AdminRole)


@dataclass(frozen=True)
class RateLimit:
    """How many failed logins are allowed within `window`, per address and per client."""

    per_email: int = 5
    per_client: int = 20
    window: timedelta = timedelta(minutes=15)


DEFAULT_LIMIT = RateLimit()


class AdminError(ValuemailError):
    """Something about an admin account cannot be done as asked."""


class AdminExists(AdminError):
    """An account with this address already exists."""


class UnknownAdmin(AdminError, NotFound):
    """No account has this address."""


class WeakPassword(AdminError):
    """The password is too short (or absurdly long)."""


class LoginFailed(AdminError):
    """Wrong address or password, or a disabled account: deliberately one message for all."""

    def __init__(self):
        super().__init__("email or password is wrong")


class LoginThrottled(AdminError):
    """Too many recent failures for this address or client; `retry_after` seconds until the next try."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")


# -- accounts -------------------------------------------------------------------------------------

def normalise_email(raw: str) -> tuple[str, str]:
    """(address as stored, lower-cased key), validated with email-validator like imported contacts."""
    try:
        return parse_email(raw)
    except FieldProblem as exc:
        raise AdminError(str(exc)) from None


def find_admin(session: Session, email: str) -> AdminUser | None:
    """The account with this address (any case), or None."""
    return session.execute(select(AdminUser).where(AdminUser.email_key == _login_key(email))).scalars().first()


def get_admin(session: Session, email: str) -> AdminUser:
    """The account with this address; UnknownAdmin when there is none."""
    user = find_admin(session, email)
    if user is None:
        raise UnknownAdmin(f"no admin account {email.strip()!r}")
    return user


def list_admins(session: Session) -> list[AdminUser]:
    """Every account, by address."""
    return list(session.execute(select(AdminUser).order_by(AdminUser.email_key)).scalars())


def count_admins(session: Session) -> int:
    """How many accounts exist (disabled ones included)."""
    return session.execute(select(func.count()).select_from(AdminUser)).scalar_one()


def create_admin(session: Session, email: str, password: str, *, role: str | None = None,
                 now: datetime) -> AdminUser:
    """Add an account; without `role` the first account is an admin and later ones viewers."""
    address, key = normalise_email(email)
    if session.execute(select(AdminUser.id).where(AdminUser.email_key == key)).first() is not None:
        raise AdminExists(f"an admin account {address!r} already exists")
    if role is None:
        # Least privilege, except that a fresh install needs someone who can do everything.
        role = AdminRole.admin.value if count_admins(session) == 0 else AdminRole.viewer.value
    user = AdminUser(email=address, email_key=key, password_hash=hash_password(password), role=_role(role),
                     created_at=now, updated_at=now)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, email: str, password: str, *, now: datetime) -> AdminUser:
    """Change the password; every session of the account ends (its session version is bumped)."""
    user = get_admin(session, email)
    user.password_hash = hash_password(password)
    _end_sessions(user, now)
    return user


def set_role(session: Session, email: str, role: str, *, now: datetime) -> AdminUser:
    """Make the account an admin or a viewer (sessions read the role on every request)."""
    user = get_admin(session, email)
    user.role = _role(role)
    user.updated_at = now
    session.flush()
    return user


def disable(session: Session, email: str, *, now: datetime) -> AdminUser:
    """Stop the account from logging in; its sessions end at once."""
    user = get_admin(session, email)
    if user.disabled_at is None:
        user.disabled_at = now
    _end_sessions(user, now)
    return user


def enable(session: Session, email: str, *, now: datetime) -> AdminUser:
    """Let a disabled account log in again (with its existing password)."""
    user = get_admin(session, email)
    user.disabled_at = None
    user.updated_at = now
    session.flush()
    return user


def end_sessions(engine: Engine, user_id: int, *, now: datetime) -> None:
    """End every session of the account (log out everywhere)."""
    with session_scope(engine) as session:
        session.execute(update(AdminUser).where(AdminUser.id == user_id).values(
            session_version=AdminUser.session_version + 1, updated_at=now))


def session_user(session: Session, user_id: object, version: object) -> AdminUser | None:
    """The account a session names, if it still exists, is enabled and its session version matches."""
    if not isinstance(user_id, int) or not isinstance(version, int) or isinstance(user_id, bool):
        return None
    user = session.get(AdminUser, user_id)
    if user is None or user.disabled_at is not None or user.session_version != version:
        return None
    return user


def check_password(password: str) -> None:
    """Raise WeakPassword unless the password is long enough (and not absurdly long)."""
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"the password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"the password must be at most {MAX_PASSWORD} characters long")


def hash_password(password: str) -> str:
    """The scrypt hash of an acceptable password; WeakPassword otherwise."""
    check_password(password)
    return generate_password_hash(password, method=PASSWORD_METHOD)


def _end_sessions(user: AdminUser, now: datetime) -> None:
    user.session_version += 1
    user.updated_at = now


def _role(role: str) -> str:
    if role not in ROLES:
        raise AdminError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


# -- logging in -----------------------------------------------------------------------------------

def authenticate(engine: Engine, email: str, password: str, *, client: str, now: datetime,
                 limit: RateLimit = DEFAULT_LIMIT) -> AdminUser:
    """The enabled account matching `email` and `password`; LoginThrottled or LoginFailed otherwise.

    Takes the engine rather than a session: a failure must be recorded even though an exception
    is raised, and the ~0.1 s password check must not run inside a write transaction (on SQLite
    that would hold the write lock the senders need).
    """
    key = _login_key(email)
    client = client[:100]
    with Session(read_only(engine)) as session:
        wait = _throttled_for(session, key, client, now=now, limit=limit)
        if wait:
            raise LoginThrottled(wait)
        user = session.execute(select(AdminUser).where(AdminUser.email_key == key)).scalars().first()
    # One path for every case: a password check always runs (against a dummy hash for an unknown
    # address, so the time taken does not tell which addresses have accounts).
    stored = user.password_hash if user is not None else _DUMMY_HASH
    matches = len(password) <= MAX_PASSWORD and check_password_hash(stored, password)
    ok = matches and user is not None and user.disabled_at is None
    with session_scope(engine) as session:
        if not ok:
            # Old rows are never counted again; dropping them here keeps the table at one window's worth.
            session.execute(delete(LoginFailure).where(LoginFailure.at <= now - limit.window))
            session.add(LoginFailure(email_key=key, client=client, at=now))
        else:
            session.execute(delete(LoginFailure).where(LoginFailure.email_key == key))
            session.execute(update(AdminUser).where(AdminUser.id == user.id).values(last_login_at=now))
            user.last_login_at = now
    if not ok:
        raise LoginFailed()
    return user


def _throttled_for(session: Session, key: str, client: str, *, now: datetime, limit: RateLimit) -> int:
    """Seconds until another attempt is allowed for this address and client; 0 when it is allowed now."""
    waits = [
        _wait(session, LoginFailure.email_key == key, limit.per_email, now=now, window=limit.window),
        _wait(session, LoginFailure.client == client, limit.per_client, now=now, window=limit.window),
    ]
    return max(waits)


def _wait(session: Session, where, allowed: int, *, now: datetime, window: timedelta) -> int:
    # The `allowed`-th most recent failure in the window: once it leaves the window, one more try is allowed.
    times = session.execute(select(LoginFailure.at).where(where, LoginFailure.at > now - window)
                         .order_by(LoginFailure.at.desc()).limit(allowed)).scalars().all()
    if len(times) < allowed:
        return 0
    return max(1, math.ceil((times[-1] + window - now).total_seconds()))


def _login_key(email: str) -> str:
    """The lookup key for a typed address: its normalised key, or (if it is no valid address) a lower-cased form."""
    try:
        return normalise_email(email)[1]
    except AdminError:
        # An invalid address has no account but still counts towards the rate limit. Control
        # characters become U+FFFD: PostgreSQL refuses NUL in text, and the key stays unlike any
        # real address (dropping them would turn "ann\0@example.com" into a real key).
        return "".join(ch if ch.isprintable() else "\ufffd" for ch in email.strip()).lower()[:320]


#: Checked for an unknown address: same method and cost as real hashes, of a random password that
#: was thrown away. Fixed rather than made at start-up, so not even the first check takes longer.
_DUMMY_HASH = ("scrypt:32768:8:1$NGlCtuCSNnbMfEvi$d63df7fb39212537f399b5dbbf350b8c0c58b66050cd276f63c73f26e21fb73c"
               "9708de8e7e2b71b84e608519560ccf2b2c7550081032467b53392dadf93ea151")
