"""Database engines and sessions for SQLite and PostgreSQL, plus portable SQL helpers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from sqlalchemy import DateTime, create_engine, event, types
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlmodel import Session


#: Execution option marking a connection that only reads (SQLite then begins DEFERRED).
READ_ONLY = "valuemail_read_only"


def read_only(engine: Engine) -> Engine:
    """The same engine, for transactions that only read (e.g. web GET requests).

    A transaction begun this way that writes after all may fail with SQLITE_BUSY if another
    writer committed meanwhile, so a handler that writes must not use it.
    """
    return engine.execution_options(**{READ_ONLY: True})


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and serialised writers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction waits on the
        # busy timeout instead of failing with SQLITE_BUSY when another writer got there first.
        # Pure readers (see `read_only`) begin DEFERRED and never queue behind the senders.
        mode = "DEFERRED" if conn.get_execution_options().get(READ_ONLY) else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_postgres(engine_or_session) -> bool:
    """True when the bound database is PostgreSQL."""
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"


def upsert_insert(engine_or_session, table):
    """The dialect's INSERT for `table`, which has `on_conflict_do_nothing` / `on_conflict_do_update`."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = getattr(table, "__table__", table)
    return (postgresql.insert if is_postgres(engine_or_session) else sqlite.insert)(table)


class UTCDateTime(types.TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; use UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class _ValueList(types.TypeDecorator):
    """A list bound as one parameter: a PostgreSQL array, or a JSON array for SQLite's json_each."""

    impl = types.NullType
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return list(value) if dialect.name == "postgresql" else json.dumps(list(value))


class _among(FunctionElement):
    type = types.Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison already: no "= 1" where booleans are integers
    name = "among"


def among(column, values: Iterable) -> ColumnElement:
    """`column IN (values)` with the values as one parameter, so the statement's text is the same
    whatever their number.

    A plain `in_()` renders one placeholder per value: a batch's 500 ids cost SQLAlchemy a
    rendering pass and psycopg a query parse (too long for its cache) on every execution.
    """
    from sqlalchemy import bindparam

    return _among(column, bindparam(None, list(values), type_=_ValueList()))


@compiles(_among, "sqlite")
def _among_sqlite(element, compiler, **kw):
    column, values = list(element.clauses)
    return f"{compiler.process(column, **kw)} IN (SELECT value FROM json_each({compiler.process(values, **kw)}))"


@compiles(_among, "postgresql")
def _among_pg(element, compiler, **kw):
    column, values = list(element.clauses)
    array = compiler.dialect.type_compiler_instance.process(column.type)
    return f"{compiler.process(column, **kw)} = ANY(CAST({compiler.process(values, **kw)} AS {array}[]))"


class days_between(FunctionElement):
    """Days from `start` to `end` as a float, in SQL on SQLite and PostgreSQL."""

    type = types.Float()
    inherit_cache = True
    name = "days_between"


@compiles(days_between, "sqlite")
def _days_sqlite(element, compiler, **kw):
    start, end = list(element.clauses)
    return f"(julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)}))"


@compiles(days_between, "postgresql")
def _days_pg(element, compiler, **kw):
    start, end = list(element.clauses)
    return f"(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)})) / 86400.0)"


def utcnow_param(now: datetime) -> ColumnElement:
    """Bind `now` as a UTC timestamp literal usable in date arithmetic on both databases."""
    from sqlalchemy import bindparam

    return bindparam("now_utc", now, type_=UTCDateTime())
