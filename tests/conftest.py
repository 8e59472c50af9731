"""Shared fixtures: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

from engine.config import load_settings
from engine.db import make_engine
from engine.migrate import upgrade

from tests.support.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = [b for b in os.environ.get("VALUEMAIL_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
#: The instant every `valuemail` command in the tests acts as of (time runs on from there): the
#: example campaigns are dated (the spring sale runs 2027-03-20 to 04-03), so the suite must not
#: depend on the day it runs. Commands given `tick --at` still use their own instant.
AS_OF = "2027-03-20T09:00:00+01:00"

# Property tests draw the same examples on every run (a failure is reproduced by running the test
# again, and CI cannot fail on a draw no one saw before); no example database is kept between runs.
# `--hypothesis-profile=explore` draws new ones, for a search for new bugs by hand.
hypothesis_settings.register_profile("valuemail", derandomize=True, database=None, deadline=None)
hypothesis_settings.register_profile("explore", database=None, deadline=None, max_examples=1000)
hypothesis_settings.load_profile("valuemail")


@pytest.fixture(autouse=True)
def _as_of(monkeypatch):
    # Through the environment, so subprocesses (crash tests, browser flows, benchmarks) inherit it.
    monkeypatch.setenv("VALUEMAIL_AS_OF", AS_OF)


@pytest.fixture
def system_clock(monkeypatch):
    """Commands run on the real clock: for tests that date their data from it (or patch it)."""
    monkeypatch.delenv("VALUEMAIL_AS_OF")


@pytest.fixture(scope="session")
def pg_admin_url():
    """URL of a PostgreSQL server for the session: $VALUEMAIL_TEST_PG_URL or a private cluster."""
    given = os.environ.get("VALUEMAIL_TEST_PG_URL")
    if given:
        yield given
        return
    server = PostgresServer().start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_admin_url):
    """A migrated template database; each test clones it, which is much faster than migrating."""
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"vm_template_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    template_url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(template_url)
    upgrade(engine)
    engine.dispose()
    yield admin, name
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, migrated database: SQLite file or PostgreSQL clone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'valuemail.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    admin, template = request.getfixturevalue("pg_template")
    name = f"vm_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    base = str(admin.url.render_as_string(hide_password=False)).rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def project(tmp_path) -> Path:
    """A project directory with the repository's campaigns and templates copied in."""
    root = tmp_path / "project"
    root.mkdir()
    for folder in ("campaigns", "templates"):
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, root / folder)
    return root


def write_settings(project: Path, database_url: str, *, sending: dict | None = None, extra: str = ""):
    """Write the test project's config.toml ([sending] from `sending`, other tables in `extra`) and load it."""
    values = {"concurrency": 2, "batch_size": 50, "retry_base_seconds": 0, **(sending or {})}
    config = project / "config.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n[sending]\n'
        + "".join(f"{key} = {value!r}\n" for key, value in values.items()) + extra
    )
    return load_settings(config, env={}, secret_key="test-secret-key")


@pytest.fixture
def settings(project, database_url, monkeypatch):
    """Settings for a test project on the parametrised database, with outbox under its var/."""
    monkeypatch.delenv("VALUEMAIL_CONFIG", raising=False)
    monkeypatch.setenv("VALUEMAIL_SECRET_KEY", "test-secret-key")
    return write_settings(project, database_url)


@pytest.fixture
def db(settings):
    """An Engine on the test database."""
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()
