"""Apply Alembic migrations programmatically (`valuemail db upgrade`), and tell where a database stands.

Alembic is imported only to migrate: reading where a database stands is one query, and the newest
revision is `HEAD` (a test keeps it equal to what the migration scripts define), so `send`,
`tick` and the other commands start without loading Alembic and every migration script.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest revision under migrations/versions (tests/test_migrations.py checks it).
HEAD = "0007"


def alembic_config(url: str):
    """An Alembic config pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database at `engine` up to `revision`."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        try:
            versions = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
        except DBAPIError:
            connection.rollback()
            if inspect(connection).has_table("alembic_version"):
                raise
            return None
    if len(versions) > 1:
        raise RuntimeError(f"the database has {len(versions)} schema heads ({', '.join(versions)}); expected one")
    return versions[0] if versions else None


def head() -> str:
    """The newest revision the packaged migration scripts define (read with Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
