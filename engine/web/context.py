"""Per-app dependencies and the one database session each request uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import Flask, current_app, g, request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..clock import Clock
from ..config import Settings
from ..db import read_only
from ..tokens import TokenSigner

#: Renders the HTML of one delivery for "view in browser", given a session and the delivery id.
ViewRenderer = Callable[[Session, int], str]

_EXTENSION = "valuemail"


@dataclass(frozen=True)
class WebContext:
    """What the views need, passed to create_app and kept on the app, not in module globals."""

    settings: Settings
    engine: Engine
    clock: Clock
    signer: TokenSigner
    view_renderer: ViewRenderer | None = None


def install(app: Flask, context: WebContext) -> None:
    """Attach `context` to `app` and close each request's session when its app context ends."""
    app.extensions[_EXTENSION] = context
    app.teardown_appcontext(_close_session)


def web_context() -> WebContext:
    """The dependencies of the app handling the current request."""
    return current_app.extensions[_EXTENSION]


def db_session() -> Session:
    """The request's session, opened on first use; views commit explicitly, teardown rolls back the rest."""
    session = g.get("_vm_session")
    if session is None:
        engine = web_context().engine
        if request.method in ("GET", "HEAD"):
            engine = read_only(engine)  # page views never wait behind the sending workers
        session = Session(engine, expire_on_commit=False)
        g._vm_session = session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("_vm_session", None)
    if session is not None:
        # close() rolls back anything uncommitted, so a failed request never half-applies.
        session.close()
