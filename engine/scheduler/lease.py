"""A lease in the database so that exactly one scheduler is active across processes (SQLite too)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine

from ..db import upsert_insert
from ..models import Lease


def acquire(engine: Engine, name: str, holder: str, *, now: datetime, ttl_seconds: float) -> bool:
    """Take or renew lease `name` for `holder` until now + ttl; False while someone else holds it."""
    expires = now + timedelta(seconds=ttl_seconds)
    with engine.begin() as conn:
        renewed = conn.execute(update(Lease).where(
            Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now),
        ).values(holder=holder, expires_at=expires)).rowcount
        if renewed:
            return True
        insert = upsert_insert(conn, Lease)
        created = conn.execute(insert.values(name=name, holder=holder, expires_at=expires)
                               .on_conflict_do_nothing(index_elements=["name"]).returning(Lease.name)).first()
        return created is not None


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up at once (on a clean shutdown), so another process can take over."""
    with engine.begin() as conn:
        conn.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                     .values(expires_at=datetime(1970, 1, 1, tzinfo=timezone.utc)))
