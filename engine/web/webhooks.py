"""POST /webhooks/<provider>: bounce, complaint and delivery reports, verified before anything is read.

Every request ends in one `webhook_log` row: accepted, ignored (verified, but nothing of ours to
do), or refused (unverified, replayed, malformed, or the provider is not configured); bodies are
never stored. A verified request is applied in one transaction, so a failure half-way leaves
nothing behind and the provider's retry applies it whole.
"""

from __future__ import annotations

import logging
import os

import requests
from flask import Blueprint, Flask, current_app, jsonify, request
from sqlmodel import Session

from .. import bounces, webhooks
from ..db import session_scope
from ..models import WebhookLog
from ..webhooks.base import (WebhookDeps, WebhookMalformed, WebhookNotConfigured, WebhookRefused, WebhookRequest,
                             WebhookUpstreamError)
from .context import web_context

log = logging.getLogger(__name__)

#: The largest body accepted: SendGrid posts batches of up to 768 KB, SNS messages are at most 256 KB.
MAX_BODY = 1024 * 1024
#: Certificates and subscription URLs are small; anything bigger is not what SNS serves.
MAX_FETCH = 64 * 1024
FETCH_TIMEOUT = 10
_EXTENSION = "valuemail.webhooks"

bp = Blueprint("webhooks", __name__)


@bp.record_once
def _exempt_from_csrf(state) -> None:
    # Providers cannot carry a CSRF token; each request is authenticated by its signature instead.
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)


def configure(app: Flask, *, http_get=None, env=None) -> None:
    """Give the app's webhooks their I/O: the HTTP getter for SNS (certificates, confirmations) and the environment."""
    app.extensions[_EXTENSION] = WebhookDeps(http_get=http_get or fetch,
                                             env=os.environ if env is None else env)


@bp.post("/webhooks/<provider>")
def receive(provider: str):
    """Verify one provider request and apply its events."""
    if provider not in webhooks.BUILDERS:
        return jsonify(error=f"no webhook for provider {provider!r}"), 404
    ctx = web_context()
    now = ctx.clock.now()
    remote = (request.remote_addr or "")[:64]
    if (request.content_length or 0) > MAX_BODY:
        return _refuse(ctx.engine, provider, remote, now, f"body larger than {MAX_BODY} bytes", 413)
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return _refuse(ctx.engine, provider, remote, now, f"body larger than {MAX_BODY} bytes", 413)
    settings = ctx.settings.webhooks
    try:
        verifier = webhooks.verifier(provider, settings, deps=_deps())
        parsed = verifier.parse(WebhookRequest(body=body, headers={k.lower(): v for k, v in request.headers.items()},
                                               now=now))
        with session_scope(ctx.engine) as session:
            for nonce in parsed.nonces:
                if not bounces.claim_nonce(session, provider=provider, nonce=nonce, now=now):
                    raise WebhookRefused("replayed request: its token or id was seen before")
            applied = bounces.apply_events(session, parsed.events, provider=provider, settings=settings,
                                           clock=ctx.clock)
            bounces.forget_nonces(session, now=now)
            status = "accepted" if applied.applied or parsed.note else "ignored"
            detail = "; ".join(filter(None, (parsed.note, applied.summary() if parsed.events else "",
                                             f"{parsed.ignored} not acted on" if parsed.ignored else "")))
            session.add(WebhookLog(provider=provider, received_at=now, status=status, detail=detail[:500],
                                   remote=remote))
    except WebhookNotConfigured as exc:
        log.error("%s webhook is not configured, refusing every request: %s", provider, exc.reason)
        return _refuse(ctx.engine, provider, remote, now, f"not configured: {exc.reason}", exc.status)
    except WebhookRefused as exc:
        response, code = _refuse(ctx.engine, provider, remote, now, exc.reason, exc.status)
        if exc.challenge:
            response.headers["WWW-Authenticate"] = exc.challenge
        return response, code
    except WebhookMalformed as exc:
        return _refuse(ctx.engine, provider, remote, now, f"malformed: {exc}", 400)
    except WebhookUpstreamError as exc:
        # Not the sender's fault: 502 makes SNS retry once the certificate or confirmation URL answers.
        return _refuse(ctx.engine, provider, remote, now, str(exc), 502)
    return jsonify(status=status, events=len(parsed.events), applied=applied.applied,
                   duplicates=applied.duplicates, unmatched=applied.unmatched, ignored=parsed.ignored), 200


def _refuse(engine, provider: str, remote: str, now, reason: str, status: int):
    log.warning("%s webhook from %s refused (%s): %s", provider, remote or "?", status, reason)
    with Session(engine) as session:
        session.add(WebhookLog(provider=provider, received_at=now, status="refused", detail=reason[:500],
                               remote=remote))
        session.commit()
    return jsonify(error=reason), status


def _deps() -> WebhookDeps:
    deps = current_app.extensions.get(_EXTENSION)
    if deps is None:
        configure(current_app)
        deps = current_app.extensions[_EXTENSION]
    return deps


def fetch(url: str) -> bytes:
    """GET `url` (already checked to be an SNS URL) with a timeout and a size cap."""
    with requests.get(url, timeout=FETCH_TIMEOUT, stream=True, allow_redirects=False) as response:
        # Not raise_for_status: a redirect could lead off the SNS hosts, so only a 200 counts.
        if response.status_code != 200:
            raise OSError(f"{url} answered HTTP {response.status_code}")
        body = response.raw.read(MAX_FETCH + 1, decode_content=True)
    if len(body) > MAX_FETCH:
        raise OSError(f"{url} answered more than {MAX_FETCH} bytes")
    return body
