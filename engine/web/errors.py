"""Turn domain exceptions and HTTP errors into friendly pages; users never see a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, has_request_context, make_response, render_template, request
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

#: The texts of the pages a visitor most often meets, in the languages of the recipient pages.
#: A broken link names no contact, so the browser's Accept-Language chooses.
_TEXTS = {
    "en": {
        "bad_token_title": "Invalid link",
        "bad_token": "This link is not valid. It may have been cut off or changed; please open it again from the "
                     "original mail.",
        "csrf_title": "Please try again",
        "csrf": "This form has expired or was not sent from this site. Please reload the page and try again.",
        "gone_title": "Not found", "gone": "What this link points to no longer exists.",
        "no_page": "There is no page at this address.",
        "failed_title": "Something went wrong", "failed": "We could not complete this request. Please try again later.",
    },
    "nl": {
        "bad_token_title": "Ongeldige link",
        "bad_token": "Deze link is niet geldig. Misschien is hij afgebroken of veranderd; open hem opnieuw vanuit de "
                     "oorspronkelijke e-mail.",
        "csrf_title": "Probeer het opnieuw",
        "csrf": "Dit formulier is verlopen of niet vanaf deze site verstuurd. Laad de pagina opnieuw en probeer het "
                "nog eens.",
        "gone_title": "Niet gevonden", "gone": "Waar deze link naar wijst, bestaat niet meer.",
        "no_page": "Op dit adres staat geen pagina.",
        "failed_title": "Er ging iets mis", "failed": "We konden dit verzoek niet afhandelen. Probeer het later opnieuw.",
    },
}


def _text(key: str) -> str:
    return _TEXTS[_lang()][key]


def _lang() -> str:
    return request.accept_languages.best_match(list(_TEXTS), default="en") if has_request_context() else "en"


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on `app`."""
    app.register_error_handler(BadToken, _bad_token)
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(ValuemailError, _domain_error)
    app.register_error_handler(HTTPException, _http)
    # Unhandled exceptions reach Flask as InternalServerError (outside testing); Flask logs them.
    app.register_error_handler(InternalServerError, _internal)


def error_page(status: int, message: str, *, title: str | None = None, lang: str | None = None):
    """A rendered error page and its status."""
    return render_template("errors/error.html", status=status, title=title or _TITLES.get(status, "Error"),
                           message=message, lang=lang or _lang()), status


def _bad_token(_exc: BadToken):
    return error_page(400, _text("bad_token"), title=_text("bad_token_title"))


def _csrf(_exc: CSRFError):
    return error_page(400, _text("csrf"), title=_text("csrf_title"))


def _not_found(_exc: NotFound):
    return error_page(404, _text("gone"), title=_text("gone_title"))


def _domain_error(exc: ValuemailError):
    log.exception("unhandled domain error: %s", exc)
    return error_page(500, _text("failed"), title=_text("failed_title"))


def _http(exc: HTTPException):
    status = exc.code or 500
    if status < 400:  # redirects raised as exceptions pass through untouched
        return exc
    messages = {
        404: _text("no_page"),
        405: "This page does not accept that kind of request.",
    }
    response = make_response(error_page(status, messages.get(status, "The request could not be handled.")))
    for name, value in exc.get_headers():  # e.g. Allow on 405; our page sets its own Content-Type
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _internal(_exc: InternalServerError):
    return error_page(500, _text("failed"), title=_text("failed_title"))
