"""Request and response models of the REST API, and the OpenAPI document derived from them.

The models check the shape of a request (types, lengths, unknown fields); what a value means
(a real country, an ISO 8601 instant, an existing contact) is checked by the importers in
engine.importing, the same code that reads CSV files, so both paths follow one set of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictStr, WithJsonSchema
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from ..importing import contacts as contact_import
from ..importing import events as event_import
from ..importing import orders as order_import
from ..models import ContactStatus, DeliveryStatus, OrderStatus, TRANSACTIONAL_ONLY

MAX_BIGINT = 2**63 - 1
MAX_BATCH_ITEMS = 1000
MAX_EMAIL_LENGTH = 320
MAX_NAME_LENGTH = 200  # first_name and last_name, as the contact importer allows

ContactStatusName = Literal[tuple(s.value for s in ContactStatus)]  # type: ignore[valid-type]
OrderStatusName = Literal[tuple(s.value for s in OrderStatus)]  # type: ignore[valid-type]
DeliveryStatusName = Literal[tuple(s.value for s in DeliveryStatus)]  # type: ignore[valid-type]
Outcome = Literal["created", "updated", "unchanged"]


def _amount(value: Any) -> str:
    """A JSON number or decimal string, as the decimal text the importers parse."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        # A float's repr is the shortest text that reads back as it: 49.9 stays "49.9", never 49.899999….
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if number.is_zero():
            return "0"
        # format(..., "f") writes every digit: an exponent like 1e999999999 would be a gigabyte of zeros.
        if not number.is_finite() or not -40 < number.adjusted() < 40:
            raise PydanticCustomError("amount_range", "number out of range")
        return format(number, "f")
    raise PydanticCustomError("amount_type", 'must be a number or a decimal string such as "49.90"')


#: An amount: a JSON number or a string holding a decimal number (dot as separator).
Amount = Annotated[str, PlainValidator(_amount), WithJsonSchema(
    {"type": ["number", "string"], "examples": ["49.90", 49.9],
     "description": "A decimal number: a JSON number or a string such as \"49.90\" (dot as separator)."})]


class _In(BaseModel):
    # Unknown fields are refused: a typo such as "fist_name" must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactIn(_In):
    """A contact's fields; absent or null leaves the stored value alone (a new contact gets defaults)."""

    first_name: Optional[StrictStr] = Field(None, max_length=MAX_NAME_LENGTH)
    last_name: Optional[StrictStr] = Field(None, max_length=MAX_NAME_LENGTH)
    country: Optional[StrictStr] = Field(None, max_length=100, description="ISO 3166-1 alpha-2 code, e.g. NL.")
    language: Optional[StrictStr] = Field(None, max_length=100, description="ISO 639-1 code, e.g. nl.")
    timezone: Optional[StrictStr] = Field(None, max_length=100, description="IANA name, e.g. Europe/Amsterdam.")
    status: Optional[ContactStatusName] = Field(
        None, description="`unsubscribed` unsubscribes. `subscribed` never re-subscribes a contact who "
                          "unsubscribed (only they can opt back in); the response then carries a warning.")
    tags: Optional[list[Annotated[StrictStr, Field(max_length=contact_import.MAX_TAG_LENGTH)]]] = Field(
        None, max_length=1000, description="The contact's whole tag set (lower-cased); [] removes every tag.")
    created_at: Optional[StrictStr] = Field(
        None, max_length=100, description="ISO 8601 date or timestamp; without an offset, in the app timezone.")
    attributes: Optional[dict[StrictStr, StrictStr]] = Field(
        None, description="Custom attributes to set; attributes not named here are kept.")


class ContactItem(ContactIn):
    """One contact in a batch: its address and its fields."""

    email: StrictStr = Field(max_length=MAX_EMAIL_LENGTH, description="The contact's address (the key, any case).")


class ContactBatch(_In):
    """Contacts to create or update, applied in order in one transaction."""

    contacts: list[ContactItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class OrderIn(_In):
    """An order's fields; currency, margin and status absent or null keep the stored value."""

    email: StrictStr = Field(max_length=MAX_EMAIL_LENGTH, description="The address of an existing contact.")
    placed_at: StrictStr = Field(max_length=100, description="ISO 8601; without an offset, in the app timezone.")
    total: Amount = Field(description="Order total, at most 2 decimals, not negative.")
    currency: Optional[StrictStr] = Field(None, max_length=100, description="ISO 4217 code; default from config.")
    margin: Optional[Amount] = Field(None, description="Margin as a fraction of the total, 0 to 1.")
    status: Optional[OrderStatusName] = Field(None, description="A new order is `placed` unless given.")


class OrderItem(OrderIn):
    """One order in a batch: its id and its fields."""

    order_id: StrictStr = Field(max_length=order_import.MAX_ORDER_ID_LENGTH, description="The shop's order id.")


class OrderBatch(_In):
    """Orders to create or update, applied in order in one transaction."""

    orders: list[OrderItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class EventIn(_In):
    """An event of a contact, identified by (email, type, occurred_at)."""

    email: StrictStr = Field(max_length=MAX_EMAIL_LENGTH, description="The address of an existing contact.")
    type: StrictStr = Field(max_length=event_import.MAX_TYPE_LENGTH,
                            description="trial_started, trial_converted, trial_cancelled or a name of your own.")
    occurred_at: StrictStr = Field(max_length=100, description="ISO 8601; without an offset, in the app timezone.")
    data: Optional[dict[str, Any]] = Field(None, description="Any JSON object; replaces the stored data when given.")


class EventBatch(_In):
    """Events to record, applied in order in one transaction."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class FieldError(_Out):
    """One problem, named by the field (body field, path or query parameter, header) it is about."""

    field: str = Field(description='e.g. "email", "tags[2]", "attributes.colour", "body", "Authorization".')
    message: str


class Errors(_Out):
    """Why a request was refused."""

    errors: list[FieldError]


class ContactOut(_Out):
    """A stored contact."""

    email: str
    first_name: str
    last_name: str
    country: Optional[str]
    language: Optional[str]
    timezone: Optional[str]
    status: Literal[(*(s.value for s in ContactStatus), TRANSACTIONAL_ONLY)]  # type: ignore[valid-type]
    tags: list[str]
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ContactResult(_Out):
    """What a contact upsert did, and the contact as now stored."""

    outcome: Outcome
    contact: ContactOut
    warnings: list[FieldError] = Field(description="Parts of the request that were deliberately not applied.")


class OrderOut(_Out):
    """A stored order."""

    order_id: str
    email: str = Field(description="The contact's address.")
    placed_at: datetime
    total: str = Field(description='Decimal text, e.g. "49.90".')
    currency: str
    margin: Optional[float] = Field(description="null: the configured default margin applies.")
    status: OrderStatusName
    updated_at: datetime


class OrderResult(_Out):
    """What an order upsert did, and the order as now stored."""

    outcome: Outcome
    order: OrderOut


class EventOut(_Out):
    """A stored event."""

    email: str = Field(description="The contact's address.")
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class EventResult(_Out):
    """What an event upsert did, and the event as now stored."""

    outcome: Outcome
    event: EventOut


class ItemResult(_Out):
    """The outcome of one batch item (`index` counts from 0, in request order)."""

    index: int
    outcome: Literal["created", "updated", "unchanged", "rejected"]
    errors: list[FieldError] = Field(description="Why a rejected item was not applied.")
    warnings: list[FieldError]


class BatchCounts(_Out):
    """How many items had each outcome."""

    created: int
    updated: int
    unchanged: int
    rejected: int


class BatchResult(_Out):
    """Per-item outcomes of a batch; every item not rejected is stored."""

    counts: BatchCounts
    results: list[ItemResult]


class DeliveryCounts(_Out):
    """Deliveries of a run per status."""

    queued: int = 0
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0  # the data went out, the answer was lost: maybe delivered, never resent


class RunOut(_Out):
    """One run (one occurrence of a campaign) with its delivery counts."""

    id: int
    campaign_id: str
    campaign_name: Optional[str]
    occurrence_at: datetime
    status: str
    is_test: bool
    transactional: bool
    total: int = Field(description="Recipients planned when the run was populated.")
    pause_reason: str
    created_at: datetime
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    counts: DeliveryCounts
    progress: int = Field(description="Whole percent of deliveries in a final state.")


class RunPage(_Out):
    """Runs, newest occurrence first."""

    runs: list[RunOut]
    next_before: Optional[int] = Field(description="Pass as ?before= for the next page; null on the last page.")


class DeliveryOut(_Out):
    """One delivery: one message of a run to one contact."""

    id: int
    run_id: int
    contact_id: int
    email: str
    segment: str
    status: DeliveryStatusName
    attempts: int
    message_id: Optional[str]
    provider: Optional[str]
    provider_message_id: Optional[str]
    last_error: Optional[str]
    created_at: datetime
    sent_at: Optional[datetime]
    updated_at: datetime
    opened_at: Optional[datetime]
    open_count: int
    clicked_at: Optional[datetime]
    click_count: int


class DeliveryPage(_Out):
    """Deliveries of a run in id order."""

    deliveries: list[DeliveryOut]
    next_after: Optional[int] = Field(description="Pass as ?after= for the next page; null on the last page.")


class TimelineEntry(_Out):
    """Something that happened to a delivery after it was sent."""

    type: str = Field(description="delivered, opened, clicked, bounced, complained or unsubscribed.")
    occurred_at: datetime
    data: dict[str, Any]


class DeliveryDetail(DeliveryOut):
    """A delivery with its timeline, oldest first."""

    timeline: list[TimelineEntry]


class RunsQuery(_In):
    """Query parameters of GET /runs."""

    before: Optional[int] = Field(None, ge=1, le=MAX_BIGINT, description="A run id: runs after it in the list.")
    limit: int = Field(50, ge=1, le=200)


class DeliveriesQuery(_In):
    """Query parameters of GET /runs/{run_id}/deliveries."""

    after: int = Field(0, ge=0, le=MAX_BIGINT, description="A delivery id: deliveries with a greater id.")
    status: list[DeliveryStatusName] = Field(
        default_factory=list, description="Only these statuses (repeat the parameter for several); default all.")
    email: StrictStr = Field("", max_length=MAX_EMAIL_LENGTH, description="Only addresses containing this text.")
    limit: int = Field(100, ge=1, le=1000)


# -- the OpenAPI document ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PathParam:
    """A path parameter: its Flask converter and its JSON schema."""

    converter: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """One endpoint as the OpenAPI document describes it."""

    method: str
    path: str  # OpenAPI template under the blueprint prefix, e.g. /contacts/{email}
    operation_id: str
    summary: str
    description: str = ""
    tag: str = ""
    auth: bool = True
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: dict[str, PathParam] = field(default_factory=dict)
    responses: dict[int, tuple[Any, str]] = field(default_factory=dict)  # status: (model or JSON schema, text)


_ERROR_TEXTS = {
    400: "The body is not valid JSON.",
    401: "No API key, or a malformed, unknown or revoked one.",
    404: "No such resource.",
    413: "The body is too large.",
    415: "The body is not sent as application/json.",
    422: "Field-level problems: wrong types, unknown fields, values the importers refuse.",
    503: "The database is busy or unreachable; try again shortly.",
}


def build_openapi(operations: list[Operation], *, prefix: str, version: str,
                  description: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`; request and response schemas come from the pydantic models."""
    models: dict[tuple[type[BaseModel], str], None] = {}
    for op in operations:
        if op.body is not None:
            models[(op.body, "validation")] = None
        for model, _text in op.responses.values():
            if isinstance(model, type) and issubclass(model, BaseModel):
                models[(model, "serialization")] = None
    models[(Errors, "serialization")] = None
    refs, defs = models_json_schema(list(models), ref_template="#/components/schemas/{model}")

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
        if op.description:
            item["description"] = op.description
        if op.tag:
            item["tags"] = [op.tag]
        params = [{"name": name, "in": "path", "required": True, "schema": p.schema,
                   **({"description": p.description} if p.description else {})}
                  for name, p in op.path_params.items()]
        if op.query is not None:
            params += _query_parameters(op.query)
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(op.body, "validation")]}}}
        responses: dict[str, Any] = {}
        for status, (model, text) in sorted(op.responses.items()):
            schema = refs[(model, "serialization")] if isinstance(model, type) else model  # a model or a plain schema
            responses[str(status)] = _response(text, schema)
        errors = [400, 413, 415, 422] if op.body is not None else []
        if op.query is not None or op.path_params:
            errors += [422]
        if op.path_params:
            errors += [404]
        if op.auth:
            errors += [401]
        for status in sorted(set(errors) | ({503} if op.auth else set())):
            responses.setdefault(str(status), _response(_ERROR_TEXTS[status], refs[(Errors, "serialization")],
                                                        www_authenticate=status == 401))
        item["responses"] = responses
        item["security"] = [{"bearerAuth": []}] if op.auth else []
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Valuemail REST API", "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "vm_<prefix>_<secret>",
                "description": "A key from `valuemail api-key create NAME`."}},
        },
        "security": [{"bearerAuth": []}],
    }


def _response(text: str, schema: dict[str, Any] | None, *, www_authenticate: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": text}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    if www_authenticate:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                    "description": "Bearer, with the error when a key was sent."}}
    return response


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a flat pydantic model (null is never sent in a query string)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if prop.get("type") == "array":
            param.update(style="form", explode=True)
        if description:
            param["description"] = description
        params.append(param)
    return params


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    prop = dict(prop)
    options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        prop.update(options[0])
    elif options:
        prop["anyOf"] = options
    if prop.get("default", 0) is None:
        del prop["default"]
    return prop

