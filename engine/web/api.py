"""The REST API under /api/v1: JSON in and out, authenticated by an API key (`Authorization: Bearer`).

Writes go through the CSV importers (engine.importing), so a contact, order or event sent here
follows exactly the rules of an import: natural keys, idempotent upserts, an unsubscribed contact
never re-subscribed, an erased address never created again. Each endpoint is declared once with
`endpoint(...)`, which registers the Flask route and its entry in the OpenAPI document together.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterable, Mapping

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from werkzeug.exceptions import HTTPException

from .. import api_keys
from ..api_keys import InvalidApiKey
from ..db import read_only, session_scope
from ..errors import NotFound, ValuemailError
from ..importing import contacts as contact_import
from ..importing import events as event_import
from ..importing import orders as order_import
from ..importing.lookup import resolve_contacts
from ..importing.result import ImportResult, SourceRow
from ..models import Contact, ContactTag, Delivery, DeliveryEvent, Event, Order, Run
from . import ledger
from .api_models import (
    MAX_BIGINT, MAX_EMAIL_LENGTH, BatchCounts, BatchResult, ContactBatch, ContactIn, ContactOut, ContactResult,
    DeliveriesQuery, DeliveryCounts, DeliveryDetail, DeliveryOut, DeliveryPage, EventBatch, EventIn, EventOut,
    EventResult, FieldError, ItemResult, Operation, OrderBatch, OrderIn, OrderOut, OrderResult, PathParam, RunOut,
    RunPage, RunsQuery, TimelineEntry, build_openapi,
)
from .context import db_session, web_context

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)

#: Bodies of single-item requests are small; a batch of 1000 items fits comfortably in the larger limit.
SINGLE_BODY_LIMIT = 64 * 1024
BATCH_BODY_LIMIT = 2 * 1024 * 1024
#: Deeper JSON is refused before anything walks or stores it (json.dumps would hit Python's recursion limit).
MAX_JSON_DEPTH = 32
#: At most this many text problems are listed for one body.
MAX_REPORTED = 20

_OPERATIONS: list[Operation] = []

EMAIL_PARAM = PathParam("path", {"type": "string", "minLength": 1, "maxLength": MAX_EMAIL_LENGTH},
                        "The contact's address, any case (the key is the lower-cased address).")
ORDER_ID_PARAM = PathParam("path", {"type": "string", "minLength": 1, "maxLength": order_import.MAX_ORDER_ID_LENGTH},
                           "The shop's order id (may contain slashes).")
RUN_ID_PARAM = PathParam(f"int(min=1, max={MAX_BIGINT})", {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT})
DELIVERY_ID_PARAM = PathParam(f"int(min=1, max={MAX_BIGINT})",
                              {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT})

DESCRIPTION = """\
Feed contacts, orders and events into Valuemail, and read runs and deliveries.

**Authentication**: every endpoint except this document needs `Authorization: Bearer <key>`, with a
key from `valuemail api-key create NAME`. A missing, unknown or revoked key gets 401.

**Idempotency**: contacts are keyed by their lower-cased address, orders by `order_id`, events by
(contact, type, occurred_at). Sending the same request again changes nothing and answers
`"outcome": "unchanged"`; 201 means created, 200 updated or unchanged. The rules are those of
`valuemail import`: absent or null fields keep the stored value, an unsubscribed contact is never
re-subscribed, an erased address is refused.

**Errors**: 4xx responses carry `{"errors": [{"field": ..., "message": ...}]}`; 400 malformed JSON,
413 body too large, 415 not JSON, 422 field-level problems. Text must not contain NUL characters.
"""


class ApiProblem(Exception):
    """A request the API refuses: an HTTP status and the field-level errors to report."""

    def __init__(self, status: int, errors: Iterable[tuple[str, str]], headers: Mapping[str, str] | None = None):
        self.status = status
        self.errors = list(errors)
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {self.errors}")


# -- declaring endpoints ----------------------------------------------------------------------------

def endpoint(method: str, path: str, *, summary: str, tag: str, description: str = "", auth: bool = True,
             body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             path_params: dict[str, PathParam] | None = None, responses: dict[int, tuple[Any, str]],
             body_limit: int = SINGLE_BODY_LIMIT) -> Callable:
    """Register a view at `path` (OpenAPI template) and describe it in the OpenAPI document."""
    path_params = path_params or {}

    def decorator(view: Callable) -> Callable:
        operation_id = view.__name__
        rule = re.sub(r"\{(\w+)\}", lambda m: f"<{path_params[m.group(1)].converter}:{m.group(1)}>", path)

        @functools.wraps(view)
        def wrapped(**kwargs: Any) -> Response:
            # Set before anything reads the body: werkzeug then refuses a bigger one with 413.
            request.max_content_length = body_limit
            if auth:
                _authenticate()
            for name, value in kwargs.items():
                if isinstance(value, str):
                    _refuse_bad_text({name: value})
            return view(**kwargs)

        bp.add_url_rule(rule, endpoint=operation_id, view_func=wrapped, methods=[method])
        _OPERATIONS.append(Operation(method=method, path=path, operation_id=operation_id, summary=summary,
                                     description=description, tag=tag, auth=auth, body=body, query=query,
                                     path_params=path_params, responses=responses))
        return wrapped

    return decorator


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every endpoint (built once: it only changes with the code)."""
    try:
        doc_version = version("valuemail")
    except PackageNotFoundError:
        doc_version = "0"
    return build_openapi(_OPERATIONS, prefix=bp.url_prefix or "", version=doc_version, description=DESCRIPTION)


# -- requests and responses -------------------------------------------------------------------------

def _json(model: BaseModel | dict, status: int = 200) -> Response:
    body = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    response = current_app.json.response(body)
    response.status_code = status
    return response


def _errors(status: int, errors: Iterable[tuple[str, str]], headers: Mapping[str, str] | None = None) -> Response:
    response = _json({"errors": [FieldError(field=f, message=m).model_dump() for f, m in errors]}, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _authenticate() -> None:
    """Check the request's key (401 if it is not good) and note its use at most once a minute."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.partition(" ")
    if not header:
        raise InvalidApiKey("an API key is required: send `Authorization: Bearer <key>`")
    if scheme.lower() != "bearer":
        raise InvalidApiKey("use the Bearer scheme: `Authorization: Bearer <key>`")
    context = web_context()
    now = context.clock.now()
    # Its own short read, not the request's session: a writing request's session holds SQLite's write
    # lock from its first statement, and the last-used write below would then wait on itself.
    with Session(read_only(context.engine)) as session:
        key = api_keys.verify(session, token.strip())
    if api_keys.use_is_due(key, now=now):
        try:
            with session_scope(context.engine) as session:
                api_keys.record_use(session, key.id, now=now)
        except OperationalError:
            # "Last used" is for humans; a busy database must not fail the request over it.
            log.warning("could not record the use of API key %s", key.prefix)


def _read_json() -> Any:
    """The request body parsed as JSON: 415 if it is not sent as JSON, 400 if it does not parse, 422 for bad text."""
    if not request.is_json:
        raise ApiProblem(415, [("Content-Type", "send the body as application/json")])
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiProblem(400, [("body", "the body is empty; send a JSON object")])
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ApiProblem(400, [("body", "the JSON is nested too deeply")]) from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers of more than 4300 digits
        raise ApiProblem(400, [("body", f"the body is not valid JSON: {exc}")]) from None
    _refuse_bad_text(data)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_bad_text(data: Any) -> None:
    """422 when any text in `data` holds a NUL (PostgreSQL refuses it) or a lone surrogate, or nests too deep."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack and len(problems) < MAX_REPORTED:
        where, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            problems.append((where or "body", f"nested more than {MAX_JSON_DEPTH} levels deep"))
            continue
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                problems.append((where or "body", problem))
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = _text_problem(key)
                if problem:
                    problems.append((where or "body", f"a field name {problem}"))
                    continue
                stack.append((f"{where}.{key}" if where else key, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))
    if problems:
        raise ApiProblem(422, problems)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _validate(model: type[BaseModel], data: Any, *, unknown: str = "unknown field") -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiProblem(422, _pydantic_errors(exc.errors(), unknown=unknown)) from None


def _pydantic_errors(errors: Iterable[Mapping[str, Any]], *, unknown: str = "unknown field") -> list[tuple[str, str]]:
    found = []
    for error in errors:
        where = _loc(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            message = unknown
        elif kind == "missing":
            message = "is required"
        else:
            message = error["msg"]
        found.append((where or "body", message))
    return found


def _loc(loc: Iterable[Any]) -> str:
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where


def _query(model: type[BaseModel]) -> BaseModel:
    """The query string validated by `model`: unknown or repeated parameters are refused, like unknown body fields."""
    values: dict[str, Any] = {}
    repeated = []
    for name in request.args:
        items = request.args.getlist(name)
        info = model.model_fields.get(name)
        if info is not None and getattr(info.annotation, "__origin__", None) is list:
            values[name] = items  # repeated: ?status=sent&status=failed
        elif len(items) > 1:
            repeated.append((name, "given more than once"))
        else:
            values[name] = items[0]
    if repeated:
        raise ApiProblem(422, repeated)
    _refuse_bad_text(values)
    return _validate(model, values, unknown="unknown query parameter")


# -- applying rows through the importers ------------------------------------------------------------

def _problem(message: str, columns: Iterable[str]) -> tuple[str, str]:
    """(field, message) for an importer's reject reason: the field it names first."""
    # The importers speak of "tag" for one of the tags, "order status", and "contact" for the address.
    names = {**{c: c for c in columns}, "tag": "tags", "order status": "status", "contact": "email"}
    best: tuple[int, int, str] | None = None
    for word, name in names.items():
        match = re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", message)
        if match and (best is None or (match.start(), -len(word)) < best[:2]):
            best = (match.start(), -len(word), name)
    if best is None:
        return "body", message
    where = best[2]
    prefix = f"{where}: "
    return where, message[len(prefix):] if message.startswith(prefix) else message


@dataclass(slots=True)
class _Applied:
    """The outcome of one row (created, updated, unchanged or rejected), its record and what to report."""

    outcome: str
    record: Any = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _apply(session: Session, handler: Any, values: dict[str, Any], columns: Iterable[str]) -> _Applied:
    """Validate and upsert one row with an importer's handler, in the request's transaction."""
    # What run_import does for a batch of one, called directly: each problem stays a separate field
    # error (the runner joins them into one reason), and the runner's PostgreSQL planner settings for
    # thousand-key lookups would only cost three statements per item here. NUL characters, which the
    # runner also checks, were refused with the request's other text problems.
    record, problems = handler.validate(SourceRow(line=1, values=values))
    if problems or record is None:
        return _Applied("rejected", errors=[_problem(p, columns) for p in problems or ["invalid row"]])
    result = ImportResult()
    refused = handler.apply(session.connection(), [record], result)
    if refused:
        return _Applied("rejected", errors=[_problem(reason, columns) for _record, reason in refused])
    warnings = []
    if result.kept_unsubscribed:
        warnings.append(("status", "the contact unsubscribed and stays unsubscribed: only they can subscribe "
                                   "again, from their preference page"))
    outcome = "created" if result.inserted else "updated" if result.updated else "unchanged"
    return _Applied(outcome, record=record, warnings=warnings)


def _fields(model: BaseModel) -> dict[str, Any]:
    # Absent and null are the same: the importers leave a stored value alone for both.
    return {name: value for name, value in model if value is not None}


def _contact_handler() -> contact_import.ContactHandler:
    context = web_context()
    return contact_import.ContactHandler(settings=context.settings, clock=context.clock)


def _order_handler() -> order_import.OrderHandler:
    context = web_context()
    return order_import.OrderHandler(settings=context.settings, clock=context.clock)


def _event_handler() -> event_import.EventHandler:
    context = web_context()
    return event_import.EventHandler(settings=context.settings, clock=context.clock)


def _run_batch(items_field: str, batch_model: type[BaseModel], handler: Any, columns: Iterable[str]) -> Response:
    """Apply a batch item by item in one transaction.

    A request that breaks the schema (a wrong type, an unknown field, in any item) is a broken
    integration and is refused whole with 422, naming e.g. `contacts[3].email`. Items of the right
    shape that the importers refuse (a bad address, an erased one, an unknown contact) are data:
    they are reported in `results` and the other items are applied.
    """
    batch = _validate(batch_model, _read_json())
    session = db_session()
    counts = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    results = []
    for index, item in enumerate(getattr(batch, items_field)):
        applied = _apply(session, handler, _fields(item), columns)
        counts[applied.outcome] += 1
        results.append(ItemResult(index=index, outcome=applied.outcome,
                                  errors=[FieldError(field=f, message=m) for f, m in applied.errors],
                                  warnings=[FieldError(field=f, message=m) for f, m in applied.warnings]))
    session.commit()
    return _json(BatchResult(counts=BatchCounts(**counts), results=results))


def _single(applied: _Applied) -> int:
    """The HTTP status of a single upsert (422 raised for a rejected one)."""
    if applied.outcome == "rejected":
        raise ApiProblem(422, applied.errors)
    return 201 if applied.outcome == "created" else 200


# -- contacts ---------------------------------------------------------------------------------------

@endpoint("PUT", "/contacts/{email}", tag="contacts", summary="Create or update a contact",
          description="Idempotent: the same request again answers `unchanged`. Absent or null fields keep the "
                      "stored value; `tags` replaces the tag set; `attributes` sets the named attributes.",
          path_params={"email": EMAIL_PARAM}, body=ContactIn,
          responses={201: (ContactResult, "Created."), 200: (ContactResult, "Updated or unchanged (see `outcome`).")})
def put_contact(email: str) -> Response:
    """PUT /contacts/{email}: create or update one contact."""
    payload = _validate(ContactIn, _read_json())
    session = db_session()
    applied = _apply(session, _contact_handler(), {**_fields(payload), "email": email}, contact_import.COLUMNS)
    status = _single(applied)
    contact = _contact_out(session, applied.record.key)
    session.commit()
    return _json(ContactResult(outcome=applied.outcome, contact=contact,
                               warnings=[FieldError(field=f, message=m) for f, m in applied.warnings]), status)


@endpoint("POST", "/contacts/batch", tag="contacts", summary="Create or update up to 1000 contacts",
          description="Items are applied in order in one transaction, each with the rules of PUT /contacts/{email}. "
                      "An item the importer refuses (e.g. a bad or erased address) is reported in `results` and the "
                      "others are applied; a request that breaks the schema in any item is refused whole (422).",
          body=ContactBatch, body_limit=BATCH_BODY_LIMIT,
          responses={200: (BatchResult, "Per-item outcomes, in request order.")})
def contacts_batch() -> Response:
    """POST /contacts/batch: create or update up to 1000 contacts."""
    return _run_batch("contacts", ContactBatch, _contact_handler(), contact_import.COLUMNS)


def _contact_out(session: Session, key: str) -> ContactOut:
    contact = session.execute(select(Contact).where(Contact.email_key == key)).scalars().one()
    tags = session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact.id).order_by(ContactTag.tag))
    return ContactOut(email=contact.email, first_name=contact.first_name, last_name=contact.last_name,
                      country=contact.country, language=contact.language, timezone=contact.timezone,
                      status=contact.status, tags=list(tags.scalars()), attributes=dict(contact.attributes or {}),
                      created_at=contact.created_at, updated_at=contact.updated_at)


# -- orders -----------------------------------------------------------------------------------------

@endpoint("PUT", "/orders/{order_id}", tag="orders", summary="Create or update an order",
          description="Idempotent by order id; send it again with a new `status` as the order moves on "
                      "(placed, paid, shipped, delivered, returned, cancelled). The contact must exist.",
          path_params={"order_id": ORDER_ID_PARAM}, body=OrderIn,
          responses={201: (OrderResult, "Created."), 200: (OrderResult, "Updated or unchanged (see `outcome`).")})
def put_order(order_id: str) -> Response:
    """PUT /orders/{order_id}: create or update one order."""
    payload = _validate(OrderIn, _read_json())
    session = db_session()
    applied = _apply(session, _order_handler(), {**_fields(payload), "order_id": order_id}, order_import.COLUMNS)
    status = _single(applied)
    order = _order_out(session, applied.record.key)
    session.commit()
    return _json(OrderResult(outcome=applied.outcome, order=order), status)


@endpoint("POST", "/orders/batch", tag="orders", summary="Create or update up to 1000 orders",
          description="Items are applied in order in one transaction, each with the rules of PUT /orders/{order_id}.",
          body=OrderBatch, body_limit=BATCH_BODY_LIMIT,
          responses={200: (BatchResult, "Per-item outcomes, in request order.")})
def orders_batch() -> Response:
    """POST /orders/batch: create or update up to 1000 orders."""
    return _run_batch("orders", OrderBatch, _order_handler(), order_import.COLUMNS)


def _order_out(session: Session, order_id: str) -> OrderOut:
    order, email = session.execute(select(Order, Contact.email).join(Contact, Contact.id == Order.contact_id)
                                .where(Order.order_id == order_id)).one()
    return OrderOut(order_id=order.order_id, email=email, placed_at=order.placed_at,
                    total=f"{order.total_cents // 100}.{order.total_cents % 100:02d}", currency=order.currency,
                    margin=order.margin, status=order.status, updated_at=order.updated_at)


# -- events -----------------------------------------------------------------------------------------

@endpoint("POST", "/events", tag="events", summary="Record an event",
          description="Idempotent by (email, type, occurred_at): the same event again answers `unchanged`; "
                      "with other `data` it is `updated`. The contact must exist.",
          body=EventIn,
          responses={201: (EventResult, "Created."), 200: (EventResult, "Updated or unchanged (see `outcome`).")})
def post_event() -> Response:
    """POST /events: record one event."""
    payload = _validate(EventIn, _read_json())
    session = db_session()
    applied = _apply(session, _event_handler(), _fields(payload), event_import.COLUMNS)
    status = _single(applied)
    event = _event_out(session, applied.record)
    session.commit()
    return _json(EventResult(outcome=applied.outcome, event=event), status)


@endpoint("POST", "/events/batch", tag="events", summary="Record up to 1000 events",
          description="Items are applied in order in one transaction, each with the rules of POST /events.",
          body=EventBatch, body_limit=BATCH_BODY_LIMIT,
          responses={200: (BatchResult, "Per-item outcomes, in request order.")})
def events_batch() -> Response:
    """POST /events/batch: record up to 1000 events."""
    return _run_batch("events", EventBatch, _event_handler(), event_import.COLUMNS)


def _event_out(session: Session, record: event_import.EventRecord) -> EventOut:
    contact_id = resolve_contacts(session.connection(), [record.email])[record.email]
    event, email = session.execute(
        select(Event, Contact.email).join(Contact, Contact.id == Event.contact_id)
        .where(Event.contact_id == contact_id, Event.type == record.type, Event.occurred_at == record.occurred_at)
    ).one()
    return EventOut(email=email, type=event.type, occurred_at=event.occurred_at, data=dict(event.data or {}))


# -- runs and deliveries ----------------------------------------------------------------------------

@endpoint("GET", "/runs", tag="runs", summary="List runs, newest occurrence first",
          description="Keyset pagination: pass the response's `next_before` as `?before=` for the next page.",
          query=RunsQuery, responses={200: (RunPage, "A page of runs.")})
def list_runs() -> Response:
    """GET /runs: a page of runs, newest occurrence first."""
    query = _query(RunsQuery)
    session = db_session()
    before = None
    if query.before is not None:
        before = session.get(Run, query.before)
        if before is None:
            raise ApiProblem(422, [("before", f"no run with id {query.before}")])
    page, next_before = ledger.list_runs(session, before=before, limit=query.limit)
    return _json(RunPage(runs=[_run_out(summary) for summary in page], next_before=next_before))


@endpoint("GET", "/runs/{run_id}", tag="runs", summary="One run with its delivery counts per status",
          path_params={"run_id": RUN_ID_PARAM}, responses={200: (RunOut, "The run.")})
def get_run(run_id: int) -> Response:
    """GET /runs/{run_id}: one run with its counts."""
    summary = ledger.run_summary(db_session(), run_id)
    if summary is None:
        raise NotFound(f"no run with id {run_id}")
    return _json(_run_out(summary))


@endpoint("GET", "/runs/{run_id}/deliveries", tag="runs", summary="Deliveries of a run, in id order",
          description="Keyset pagination: pass the response's `next_after` as `?after=` for the next page. "
                      "Filter with `status` (repeatable) and `email` (contains, any case).",
          path_params={"run_id": RUN_ID_PARAM}, query=DeliveriesQuery,
          responses={200: (DeliveryPage, "A page of deliveries.")})
def list_deliveries(run_id: int) -> Response:
    """GET /runs/{run_id}/deliveries: a page of the run's deliveries."""
    query = _query(DeliveriesQuery)
    session = db_session()
    if session.get(Run, run_id) is None:
        raise NotFound(f"no run with id {run_id}")
    statuses = list(dict.fromkeys(query.status)) or list(ledger.STATUS_ORDER)
    deliveries, next_after = ledger.delivery_page(session, run_id=run_id, statuses=statuses, after=query.after,
                                                  email=query.email, limit=query.limit)
    return _json(DeliveryPage(deliveries=[_delivery_out(d) for d in deliveries], next_after=next_after))


@endpoint("GET", "/deliveries/{delivery_id}", tag="runs", summary="One delivery with its timeline",
          path_params={"delivery_id": DELIVERY_ID_PARAM}, responses={200: (DeliveryDetail, "The delivery.")})
def get_delivery(delivery_id: int) -> Response:
    """GET /deliveries/{delivery_id}: one delivery with its timeline."""
    session = db_session()
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery with id {delivery_id}")
    events = session.execute(select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id)
                          .order_by(DeliveryEvent.occurred_at, DeliveryEvent.id)).scalars()
    timeline = [TimelineEntry(type=e.type, occurred_at=e.occurred_at, data=dict(e.data or {})) for e in events]
    return _json(DeliveryDetail(**_delivery_out(delivery).model_dump(), timeline=timeline))


def _run_out(summary: ledger.RunSummary) -> RunOut:
    run = summary.run
    return RunOut(id=run.id, campaign_id=run.campaign_id, campaign_name=summary.campaign_name,
                  occurrence_at=run.occurrence_at, status=run.status, is_test=run.is_test,
                  transactional=run.transactional, total=run.total, pause_reason=run.pause_reason,
                  created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
                  counts=DeliveryCounts(**{s: n for s, n in summary.counts.items() if s in DeliveryCounts.model_fields}),
                  progress=summary.progress)


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(**{name: getattr(delivery, name) for name in DeliveryOut.model_fields})


# -- the document -----------------------------------------------------------------------------------

@endpoint("GET", "/openapi.json", tag="meta", summary="This OpenAPI document", auth=False,
          responses={200: ({"type": "object"}, "The OpenAPI 3.1 document of this API.")})
def openapi() -> Response:
    """GET /openapi.json: the OpenAPI document."""
    return _json(openapi_document())


# -- errors -----------------------------------------------------------------------------------------

@bp.errorhandler(ApiProblem)
def _api_problem(exc: ApiProblem) -> Response:
    return _errors(exc.status, exc.errors, exc.headers)


@bp.errorhandler(InvalidApiKey)
def _unauthorized(exc: InvalidApiKey) -> Response:
    # RFC 6750: a key that was sent but is no good is an "invalid_token".
    sent = bool(request.headers.get("Authorization", "").strip())
    challenge = 'Bearer realm="valuemail", error="invalid_token"' if sent else 'Bearer realm="valuemail"'
    return _errors(401, [("Authorization", str(exc))], {"WWW-Authenticate": challenge})


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return _errors(404, [("request", str(exc))])


@bp.errorhandler(OperationalError)
def _database_busy(exc: OperationalError) -> Response:
    log.warning("API request failed on the database: %s", exc)
    return _errors(503, [("request", "the database is busy or unreachable; try again shortly")],
                   {"Retry-After": "5"})


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _http_response(exc)


@bp.errorhandler(ValuemailError)
@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("API request failed: %s", exc)
    return _errors(500, [("request", "the request could not be completed")])


def _http_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status < 400:
        return exc  # type: ignore[return-value]  # redirects pass through
    messages = {
        404: ("request", "no such endpoint; see /api/v1/openapi.json"),
        405: ("request", f"{request.method} is not allowed here"),
        413: ("body", f"the body is larger than {request.max_content_length or 0} bytes"),
    }
    where, message = messages.get(status, ("request", exc.description or exc.name))
    headers = {name: value for name, value in exc.get_headers() if name.lower() == "allow"}
    return _errors(status, [(where, message)], headers)


@bp.before_app_request
def _routing_errors() -> Response | None:
    """JSON, not an HTML page, for unknown paths and wrong methods under /api/v1.

    Routing failures belong to no blueprint, so the blueprint's error handlers never see them;
    a before-request hook on the app runs before Flask raises them.
    """
    exc = request.routing_exception
    prefix = bp.url_prefix or ""
    if exc is None or not (request.path == prefix or request.path.startswith(prefix + "/")):
        return None
    if isinstance(exc, HTTPException) and (exc.code or 500) >= 400:
        return _http_response(exc)
    return None
