"""Tracking routes: /r/<token> records a click and redirects, /o/<token>.gif records an open.

Both are GETs that write, so each takes its own writing session (`session_scope`), not the
request's read-only one. HEAD requests (link scanners, prefetchers) get the same answer and
record nothing. The redirect target is always the `links` row the token names, and only when
that link belongs to the run of the token's delivery; anything else is the friendly 400 page.
The pixel never fails: a bad token or a database hiccup still gets the image, recording nothing,
because a broken image in a mail helps nobody.
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, redirect, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.urls import iri_to_uri

from .. import tracking
from ..db import session_scope
from ..errors import ValuemailError
from ..tokens import BadToken
from .context import web_context

log = logging.getLogger(__name__)

bp = Blueprint("tracking", __name__)

#: A 1x1 transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@bp.get("/r/", defaults={"token": ""})
@bp.get("/r/<token>")
def click(token: str):
    """Record a click of a tracked link and redirect (302) to the URL the mail contained."""
    ctx = web_context()
    delivery_id, link_id = ctx.signer.unsign_ids("click", token, 2)
    with session_scope(ctx.engine) as session:
        outcome = tracking.record_click(session, delivery_id=delivery_id, link_id=link_id, now=ctx.clock.now(),
                                        count=request.method == "GET")
    try:
        location = iri_to_uri(outcome.url)
    except ValueError:
        # Registered URLs are checked when the mail is composed; this only guards the header.
        raise BadToken("this link cannot be followed") from None
    response = redirect(location, code=302)
    # Every click should reach us again, never a cached redirect.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/o/.gif", defaults={"token": ""})
@bp.get("/o/<token>.gif")
def open_pixel(token: str):
    """Record an open and answer the 1x1 GIF, whatever the token (nothing is recorded for a bad one)."""
    ctx = web_context()
    if request.method == "GET":
        try:
            delivery_id = ctx.signer.unsign("open", token)
            with session_scope(ctx.engine) as session:
                tracking.record_open(session, delivery_id=delivery_id, now=ctx.clock.now())
        except BadToken:
            pass
        except (ValuemailError, SQLAlchemyError):
            log.exception("could not record an open")
    response = Response(PIXEL, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0, private"
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    return response
