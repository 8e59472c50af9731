"""Fixtures for the web app: an app on the parametrised test database and its test client."""

from __future__ import annotations

import pytest

from engine.clock import FixedClock
from engine.tokens import TokenSigner
from engine.web import create_app

from .factories import T0
from .logins import log_in, make_admin


@pytest.fixture
def clock():
    return FixedClock(T0)


@pytest.fixture
def app(settings, db, clock):
    return create_app(settings=settings, engine=db, clock=clock, testing=True)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def signer(settings):
    return TokenSigner(settings.secret_key)


@pytest.fixture
def admin_client(app, db):
    """A test client logged in as admin@example.com (role admin)."""
    make_admin(db)
    client = app.test_client()
    assert log_in(client).status_code == 302
    return client
