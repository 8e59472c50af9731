"""Turn domain exceptions and HTTP errors into friendly pages; users never see a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, make_response, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from ..errors import NotFound, ValuemailError
from ..tokens import BadToken

log = logging.getLogger(__name__)

_TITLES = {
    400: "This request could not be handled",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    500: "Something went wrong",
}


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on `app`."""
    app.register_error_handler(BadToken, _bad_token)
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(ValuemailError, _domain_error)
    app.register_error_handler(HTTPException, _http)
    # Unhandled exceptions reach Flask as InternalServerError (outside testing); Flask logs them.
    app.register_error_handler(InternalServerError, _internal)


def error_page(status: int, message: str, *, title: str | None = None):
    """A rendered error page and its status."""
    return render_template("errors/error.html", status=status, title=title or _TITLES.get(status, "Error"),
                           message=message), status


def _bad_token(_exc: BadToken):
    return error_page(400, "This link is not valid. It may have been cut off or changed; "
                           "please open it again from the original mail.", title="Invalid link")


def _csrf(_exc: CSRFError):
    return error_page(400, "This form has expired or was not sent from this site. "
                           "Please reload the page and try again.", title="Please try again")


def _not_found(_exc: NotFound):
    return error_page(404, "What this link points to no longer exists.")


def _domain_error(exc: ValuemailError):
    log.exception("unhandled domain error: %s", exc)
    return error_page(500, "We could not complete this request. Please try again later.")


def _http(exc: HTTPException):
    status = exc.code or 500
    if status < 400:  # redirects raised as exceptions pass through untouched
        return exc
    messages = {
        404: "There is no page at this address.",
        405: "This page does not accept that kind of request.",
    }
    response = make_response(error_page(status, messages.get(status, "The request could not be handled.")))
    for name, value in exc.get_headers():  # e.g. Allow on 405; our page sets its own Content-Type
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _internal(_exc: InternalServerError):
    return error_page(500, "We could not complete this request. Please try again later.")
