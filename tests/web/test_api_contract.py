"""The REST API against its own OpenAPI document, with schemathesis.

The document is loaded from the running app (GET /api/v1/openapi.json) and every operation is
called with schema-conforming (positive) and schema-violating (negative) requests generated from
it, with a valid key, through the WSGI app. Each response must be below 500, have a documented
status code, content type and headers, and match the documented schema; negative requests must be
refused with a 4xx. A few hand-written successful calls make sure the 200/201 bodies, which random
data seldom reaches, are checked against the schema too.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)

from engine import api_keys
from engine.db import session_scope
from engine.models import DeliveryEvent
from engine.web import create_app

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
#: Per operation and mode; 10 operations x 2 modes x 2 databases stay well under a minute.
EXAMPLES = 25


@pytest.fixture
def api_app(settings, db, clock):
    app = create_app(settings=settings, engine=db, clock=clock, testing=True)
    # TESTING would re-raise a crash inside the test client; what matters is what a client gets.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return app


@pytest.fixture
def auth(db) -> dict[str, str]:
    with session_scope(db) as s:
        key = api_keys.create(s, "schemathesis", now=T0).key
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def seeded(db) -> dict[str, int]:
    """A contact, a run with a delivery and its timeline, so that reads have something to return."""
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        alice = make_contact(s, "alice@example.com")
        delivery = make_delivery(s, run, alice, status="sent", sent_at=T0)
        s.add(DeliveryEvent(delivery_id=delivery.id, type="delivered", occurred_at=T0 + timedelta(minutes=1),
                            data={"provider": "outbox"}))
        return {"run": run.id, "delivery": delivery.id}


@pytest.fixture
def schema(api_app):
    # Explicit, so that no schemathesis.toml lying around changes the test. A body over the size
    # limit is refused with 413, which schemathesis does not count as a rejection by default.
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": ["400", "401", "404", "405", "413", "415", "422"]}}})
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app, config=config)


def test_the_document_loads_and_covers_every_operation(schema, api_app):
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    documented = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items() for method in item}
    # schemathesis leaves out the document's own URL; every other operation is tested.
    assert operations == documented - {("GET", "/api/v1/openapi.json")}
    assert len(operations) == 10


def test_successful_calls_match_the_schema(schema, auth, seeded):
    ops = {(op.ok().method.upper(), op.ok().path): op.ok() for op in schema.get_all_operations()}
    calls = [
        ("PUT", "/api/v1/contacts/{email}", {"email": "bob@example.com"},
         {"first_name": "Bob", "tags": ["a"], "attributes": {"plan": "pro"}}, None, 201),
        ("PUT", "/api/v1/contacts/{email}", {"email": "bob@example.com"}, {"first_name": "Bob"}, None, 200),
        ("POST", "/api/v1/contacts/batch", {}, {"contacts": [{"email": "c@example.com"}, {"email": "bad"}]}, None, 200),
        ("PUT", "/api/v1/orders/{order_id}", {"order_id": "A-1"},
         {"email": "bob@example.com", "placed_at": "2027-03-01", "total": "12.50", "margin": 0.3}, None, 201),
        ("POST", "/api/v1/orders/batch", {}, {"orders": [{"order_id": "A-2", "email": "bob@example.com",
                                                          "placed_at": "2027-03-01", "total": 5}]}, None, 200),
        ("POST", "/api/v1/events", {}, {"email": "bob@example.com", "type": "trial_started",
                                        "occurred_at": "2027-03-01T10:00Z", "data": {"plan": "pro"}}, None, 201),
        ("POST", "/api/v1/events/batch", {}, {"events": [{"email": "bob@example.com", "type": "x",
                                                          "occurred_at": "2027-03-02"}]}, None, 200),
        ("GET", "/api/v1/runs", {}, None, {"limit": 1}, 200),
        ("GET", "/api/v1/runs/{run_id}", {"run_id": seeded["run"]}, None, None, 200),
        ("GET", "/api/v1/runs/{run_id}/deliveries", {"run_id": seeded["run"]}, None, {"status": ["sent"]}, 200),
        ("GET", "/api/v1/deliveries/{delivery_id}", {"delivery_id": seeded["delivery"]}, None, None, 200),
        ("PUT", "/api/v1/contacts/{email}", {"email": "nope"}, {"country": "UK"}, None, 422),
    ]
    for method, path, params, body, query, status in calls:
        kwargs = {"path_parameters": params, "query": query, "headers": dict(auth)}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        case = ops[(method, path)].Case(**kwargs)
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == status, (method, path, response.text)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_conform_to_the_schema(schema, auth, seeded, mode):
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])
    for result in schema.get_all_operations():
        operation = result.ok()

        @hsettings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                   phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        # The key is fixed in the strategy, so that negative cases never count a removed key as their mutation.
        @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
        def call(case):
            case.call_and_validate(checks=checks)

        call()
