"""The REST API under /api/v1: key auth, idempotent upserts through the importers, reads, errors."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine import api_keys, privacy
from engine.db import session_scope
from engine.models import ApiKey, Contact, ContactTag, DeliveryEvent, Event, Order

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

API = "/api/v1"


@pytest.fixture
def key(db) -> str:
    with session_scope(db) as s:
        return api_keys.create(s, "shop", now=T0 - timedelta(days=1)).key


@pytest.fixture
def auth(key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count(db, model) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def contact_row(db, key: str) -> Contact | None:
    with Session(db) as s:
        return s.execute(select(Contact).where(Contact.email_key == key)).scalars().first()


def errors_of(response) -> list[tuple[str, str]]:
    assert response.is_json, response.get_data(as_text=True)
    return [(e["field"], e["message"]) for e in response.get_json()["errors"]]


def fields_of(response) -> list[str]:
    return [field for field, _ in errors_of(response)]


# -- authentication ---------------------------------------------------------------------------------

def test_requests_without_a_key_get_401_with_a_bearer_challenge(client, db):
    for method, path in [("PUT", "/contacts/a@example.com"), ("POST", "/events"), ("GET", "/runs"),
                         ("GET", "/runs/1"), ("GET", "/deliveries/1"), ("POST", "/contacts/batch")]:
        response = client.open(API + path, method=method, json={"first_name": "A"})
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert fields_of(response) == ["Authorization"]
    assert count(db, Contact) == 0


@pytest.mark.parametrize("header", ["Bearer", "Bearer vm_nope", "Basic dXNlcjpwYXNz", "Bearer vm_00000000_secret",
                                    "Bearer vm_\x00_x", "Token {key}", "Bearer {key}x", "Bearer {wrong}"])
def test_wrong_keys_get_401(client, db, key, header):
    prefix = key.split("_")[1]
    header = header.format(key=key, wrong=f"vm_{prefix}_{'A' * 43}")
    response = client.put(f"{API}/contacts/a@example.com", json={}, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="valuemail", error="invalid_token"'
    assert fields_of(response) == ["Authorization"]
    assert count(db, Contact) == 0


def test_a_revoked_key_gets_401_at_once(client, db, key, auth):
    assert client.get(f"{API}/runs", headers=auth).status_code == 200
    with session_scope(db) as s:
        api_keys.revoke(s, key.split("_")[1], now=T0)
    response = client.get(f"{API}/runs", headers=auth)
    assert response.status_code == 401
    assert errors_of(response) == [("Authorization", "the API key was revoked")]


def test_the_key_is_stored_only_as_its_hash(db, key):
    with Session(db) as s:
        row = s.execute(select(ApiKey.__table__)).one()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.split("_", 2)[2]
    assert not any(isinstance(v, str) and (key in v or secret in v) for v in row)


def test_last_use_is_written_at_most_once_a_minute(client, db, clock, auth):
    def last_used():
        with Session(db) as s:
            return s.execute(select(ApiKey.last_used_at)).scalar_one()

    assert last_used() is None
    client.get(f"{API}/runs", headers=auth)
    assert last_used() == T0
    clock.set(T0 + timedelta(seconds=59))
    client.get(f"{API}/runs", headers=auth)
    assert last_used() == T0
    clock.set(T0 + timedelta(seconds=61))
    client.put(f"{API}/contacts/a@example.com", json={}, headers=auth)
    assert last_used() == T0 + timedelta(seconds=61)


def test_the_openapi_document_needs_no_key_and_describes_every_route(app, client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200 and response.is_json
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "vm_<prefix>_<secret>",
        "description": "A key from `valuemail api-key create NAME`."}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routed.add((method.lower(), _template(rule)))
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert routed == documented
    assert doc["paths"][f"{API}/openapi.json"]["get"]["security"] == []
    put = doc["paths"][f"{API}/contacts/{{email}}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ContactIn"}
    assert {"200", "201", "400", "401", "413", "415", "422"} <= set(put["responses"])
    # Request schemas come from the pydantic models: unknown fields are refused, limits are stated.
    contact_in = doc["components"]["schemas"]["ContactIn"]
    assert contact_in["additionalProperties"] is False and "first_name" in contact_in["properties"]


def _template(rule) -> str:
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)


# -- contacts ---------------------------------------------------------------------------------------

def test_put_contact_is_idempotent(client, db, auth):
    body = {"first_name": "Alice", "country": "nl", "tags": ["VIP", " gold "], "attributes": {"plan": "pro"}}
    first = client.put(f"{API}/contacts/Alice@Example.com", json=body, headers=auth)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert first.get_json()["outcome"] == "created"
    contact = first.get_json()["contact"]
    assert contact["email"] == "Alice@example.com" and contact["country"] == "NL"
    assert contact["tags"] == ["gold", "vip"] and contact["attributes"] == {"plan": "pro"}
    assert contact["status"] == "subscribed"

    second = client.put(f"{API}/contacts/Alice@Example.com", json=body, headers=auth)
    assert second.status_code == 200 and second.get_json()["outcome"] == "unchanged"
    assert count(db, Contact) == 1
    assert contact_row(db, "alice@example.com").updated_at == T0
    # Another spelling names the same contact (keyed by the lower-cased address) and stores that spelling.
    respelled = client.put(f"{API}/contacts/alice@example.com", json=body, headers=auth)
    assert respelled.get_json()["outcome"] == "updated" and respelled.get_json()["contact"]["email"] == "alice@example.com"
    assert count(db, Contact) == 1

    third = client.put(f"{API}/contacts/alice@example.com", json={"last_name": "Smith", "tags": []}, headers=auth)
    assert third.status_code == 200 and third.get_json()["outcome"] == "updated"
    updated = third.get_json()["contact"]
    # Absent fields keep their values; tags is the whole set.
    assert updated["first_name"] == "Alice" and updated["last_name"] == "Smith" and updated["tags"] == []
    assert count(db, Contact) == 1 and count(db, ContactTag) == 0


def test_null_and_absent_fields_keep_stored_values(client, db, auth):
    client.put(f"{API}/contacts/bob@example.com", json={"first_name": "Bob", "tags": ["a"]}, headers=auth)
    response = client.put(f"{API}/contacts/bob@example.com",
                          json={"first_name": None, "tags": None, "attributes": {"x": "1"}}, headers=auth)
    assert response.get_json()["outcome"] == "updated"
    contact = response.get_json()["contact"]
    assert contact["first_name"] == "Bob" and contact["tags"] == ["a"] and contact["attributes"] == {"x": "1"}


def test_an_unsubscribed_contact_is_not_resubscribed(client, db, auth):
    with session_scope(db) as s:
        make_contact(s, "gone@example.com", status="unsubscribed")
    response = client.put(f"{API}/contacts/gone@example.com", json={"status": "subscribed", "first_name": "G"},
                          headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["outcome"] == "updated" and body["contact"]["first_name"] == "G"
    assert body["contact"]["status"] == "unsubscribed"
    assert [w["field"] for w in body["warnings"]] == ["status"]
    assert contact_row(db, "gone@example.com").status == "unsubscribed"
    # The API can unsubscribe, though.
    client.put(f"{API}/contacts/x@example.com", json={}, headers=auth)
    off = client.put(f"{API}/contacts/x@example.com", json={"status": "unsubscribed"}, headers=auth)
    assert off.get_json()["contact"]["status"] == "unsubscribed" and off.get_json()["warnings"] == []


def test_an_erased_address_is_refused_with_a_field_error(client, db, clock, auth):
    with session_scope(db) as s:
        contact_id = make_contact(s, "erase.me@example.com").id
    with session_scope(db) as s:
        privacy.erase(s, contact_id, now=T0)
    for path, body in [("/contacts/Erase.Me@example.com", {"first_name": "Again"})]:
        response = client.put(API + path, json=body, headers=auth)
        assert response.status_code == 422
        ((field, message),) = errors_of(response)
        assert field == "email" and "erased" in message
    batch = client.post(f"{API}/contacts/batch", json={"contacts": [{"email": "erase.me@example.com"}]},
                        headers=auth)
    assert batch.get_json()["results"][0]["outcome"] == "rejected"
    assert batch.get_json()["results"][0]["errors"][0]["field"] == "email"
    assert contact_row(db, "erase.me@example.com") is None and count(db, Contact) == 1


@pytest.mark.parametrize("email, body, field, reason", [
    ("ann@example.com", {"first_name": "Ann\r\nBcc: all@example.com"}, "first_name", "line break or control character"),
    ("ann@example.com", {"last_name": "\u202etimS"}, "last_name", "right-to-left override or an invisible character"),
    ("üser2@example.com", {"first_name": "U"}, "email", "Internationalized characters before the @-sign"),
])
def test_names_that_break_headers_and_non_ascii_local_parts_are_refused(client, db, auth, email, body, field, reason):
    response = client.put(f"{API}/contacts/{email}", json=body, headers=auth)
    assert response.status_code == 422
    ((got_field, message),) = errors_of(response)
    assert got_field == field and reason in message and count(db, Contact) == 0


@pytest.mark.parametrize("email, body, expected", [
    ("a@example.com", {"fist_name": "A"}, [("fist_name", "unknown field")]),
    ("a@example.com", {"first_name": 5}, [("first_name", "Input should be a valid string")]),
    ("a@example.com", {"first_name": "x" * 201}, [("first_name", "String should have at most 200 characters")]),
    ("a@example.com", {"tags": ["ok", 7]}, [("tags[1]", "Input should be a valid string")]),
    ("a@example.com", {"attributes": {"size": 42}}, [("attributes.size", "Input should be a valid string")]),
    ("a@example.com", {"status": "maybe"}, [("status", "Input should be 'subscribed' or 'unsubscribed'")]),
    ("a@example.com", {"country": "UK"},
     [("country", "unknown country 'UK' (ISO 3166-1 alpha-2 code expected; did you mean GB?)")]),
    ("a@example.com", {"country": "XX", "timezone": "Mars/Base"}, [("country", None), ("timezone", None)]),
    ("a@example.com", {"created_at": "yesterday"}, [("created_at", None)]),
    ("a@example.com", {"tags": ["t" * 101]}, [("tags[0]", None)]),
    ("not-an-address", {}, [("email", None)]),
    ("a@example.com", {"first_name": "nul\x00"}, [("first_name", "contains a NUL character")]),
    ("a%00b@example.com", {}, [("email", "contains a NUL character")]),
    ("a@example.com", {"attributes": {"k\x00": "v"}}, [("attributes", "a field name contains a NUL character")]),
    ("a@example.com", [], [("body", None)]),
    ("a@example.com", "text", [("body", None)]),
    ("a@example.com", None, [("body", None)]),
])
def test_bad_contact_payloads_get_field_errors(client, db, auth, email, body, expected):
    response = client.put(f"{API}/contacts/{email}", data=json.dumps(body), content_type="application/json",
                          headers=auth)
    assert response.status_code == 422, response.get_data(as_text=True)
    got = errors_of(response)
    assert [f for f, _ in got] == [f for f, _ in expected]
    for (_, message), (_, want) in zip(got, expected):
        assert want is None or message == want
    assert count(db, Contact) == 0


@pytest.mark.parametrize("raw, content_type, status, field", [
    (b"{bad json", "application/json", 400, "body"),
    (b"", "application/json", 400, "body"),
    (b'{"first_name": NaN}', "application/json", 400, "body"),
    (b'{"first_name": Infinity}', "application/json", 400, "body"),
    (b'{"first_name": "\xff"}', "application/json", 400, "body"),
    (b'{"first_name": ' + b"9" * 5000 + b"}", "application/json", 400, "body"),
    (b"[" * 30000 + b"]" * 30000, "application/json", 400, "body"),
    (b'{"attributes": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "application/json", 422, "attributes.a.a.a.a.a.a.a.a."
     "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"),
    (b'{"first_name": "\\ud800"}', "application/json", 422, "first_name"),
    (b'{"first_name": "A"}', "text/plain", 415, "Content-Type"),
    (b'{"first_name": "A"}', None, 415, "Content-Type"),
    (b'first_name=A', "application/x-www-form-urlencoded", 415, "Content-Type"),
    (b'{"first_name": "' + b"a" * 70000 + b'"}', "application/json", 413, "body"),
])
def test_malformed_bodies_get_4xx_never_500(client, db, auth, raw, content_type, status, field):
    response = client.put(f"{API}/contacts/a@example.com", data=raw, content_type=content_type, headers=auth)
    assert response.status_code == status, response.get_data(as_text=True)
    assert fields_of(response)[0] == field
    assert count(db, Contact) == 0


def test_json_with_a_charset_or_a_vendor_type_is_json(client, auth):
    for content_type in ["application/json; charset=utf-8", "application/merge-patch+json"]:
        response = client.put(f"{API}/contacts/a@example.com", data=b'{"first_name": "A"}',
                              content_type=content_type, headers=auth)
        assert response.status_code in (200, 201), content_type


# -- contact batches --------------------------------------------------------------------------------

def test_a_contact_batch_reports_each_item(client, db, auth):
    with session_scope(db) as s:
        make_contact(s, "old@example.com", status="unsubscribed")
    items = [
        {"email": "new@example.com", "first_name": "New"},
        {"email": "bad-address"},
        {"email": "old@example.com", "status": "subscribed"},
        {"email": "new@example.com", "first_name": "Newer"},  # the same contact again: applied in order
        {"email": "NEW@example.com", "country": "UK"},
        {"email": "new@example.com", "first_name": "Newer"},
    ]
    response = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert [r["outcome"] for r in body["results"]] == [
        "created", "rejected", "unchanged", "updated", "rejected", "unchanged"]
    assert [r["index"] for r in body["results"]] == list(range(6))
    assert body["counts"] == {"created": 1, "updated": 1, "unchanged": 2, "rejected": 2}
    assert [e["field"] for e in body["results"][1]["errors"]] == ["email"]
    assert [e["field"] for e in body["results"][4]["errors"]] == ["country"]
    assert body["results"][2]["warnings"][0]["field"] == "status"
    assert contact_row(db, "new@example.com").first_name == "Newer"
    assert contact_row(db, "new@example.com").country is None
    assert contact_row(db, "old@example.com").status == "unsubscribed"
    assert count(db, Contact) == 2


def test_a_batch_that_breaks_the_schema_is_refused_whole(client, db, auth):
    items = [{"email": "fine@example.com"}, {"email": 7}, "not an object", {"email": "x@example.com", "nmae": "X"}]
    response = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert response.status_code == 422
    assert fields_of(response) == ["contacts[1].email", "contacts[2]", "contacts[3].nmae"]
    assert count(db, Contact) == 0


@pytest.mark.parametrize("body, field", [
    ({"contacts": []}, "contacts"),
    ({"contacts": [{"email": "a@example.com"}] * 1001}, "contacts"),
    ({"contacts": {"email": "a@example.com"}}, "contacts"),
    ({"items": []}, "contacts"),
    ([], "body"),
])
def test_a_bad_batch_envelope_is_refused_whole(client, db, auth, body, field):
    response = client.post(f"{API}/contacts/batch", json=body, headers=auth)
    assert response.status_code == 422
    assert field in fields_of(response)
    assert count(db, Contact) == 0


def test_batches_may_be_larger_than_single_requests(client, db, auth):
    # 1.5 MB: over the app's 1 MB form limit and the API's 64 KiB for one item, within the 2 MiB for batches.
    items = [{"email": f"big{i}@example.com", "attributes": {"note": "n" * 15000}} for i in range(100)]
    response = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert response.status_code == 200 and response.get_json()["counts"]["created"] == 100
    items = [{"email": f"huge{i}@example.com", "attributes": {"note": "n" * 30000}} for i in range(100)]
    response = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert response.status_code == 413 and fields_of(response) == ["body"]
    assert count(db, Contact) == 100


def test_a_full_batch_of_1000_contacts(client, db, auth):
    items = [{"email": f"user{i}@example.com", "first_name": f"User {i}", "tags": ["api"]} for i in range(1000)]
    first = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert first.status_code == 200 and first.get_json()["counts"]["created"] == 1000
    again = client.post(f"{API}/contacts/batch", json={"contacts": items}, headers=auth)
    assert again.get_json()["counts"] == {"created": 0, "updated": 0, "unchanged": 1000, "rejected": 0}
    assert count(db, Contact) == 1000 and count(db, ContactTag) == 1000


# -- orders -----------------------------------------------------------------------------------------

@pytest.fixture
def alice(client, auth):
    assert client.put(f"{API}/contacts/alice@example.com", json={}, headers=auth).status_code == 201


@pytest.mark.usefixtures("alice")
def test_put_order_is_idempotent_and_follows_status_changes(client, db, auth):
    body = {"email": "Alice@Example.com", "placed_at": "2027-03-01T10:00", "total": 49.9}
    first = client.put(f"{API}/orders/2027/0001", json=body, headers=auth)
    assert first.status_code == 201, first.get_data(as_text=True)
    order = first.get_json()["order"]
    # Naive times are in the app timezone (Europe/Amsterdam); the default currency comes from config.
    assert order == {"order_id": "2027/0001", "email": "alice@example.com", "placed_at": "2027-03-01T09:00:00Z",
                     "total": "49.90", "currency": "EUR", "margin": None, "status": "placed",
                     "updated_at": "2027-03-20T08:00:00Z"}
    same = client.put(f"{API}/orders/2027/0001", json={**body, "total": "49.90"}, headers=auth)
    assert same.status_code == 200 and same.get_json()["outcome"] == "unchanged"
    shipped = client.put(f"{API}/orders/2027/0001", json={**body, "status": "shipped", "margin": "0.4"}, headers=auth)
    assert shipped.status_code == 200 and shipped.get_json()["outcome"] == "updated"
    assert shipped.get_json()["order"]["status"] == "shipped" and shipped.get_json()["order"]["margin"] == 0.4
    with Session(db) as s:
        (row,) = s.execute(select(Order)).scalars().all()
    assert row.order_id == "2027/0001" and row.status == "shipped" and row.total_cents == 4990


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("order_id, body, fields", [
    ("O-1", {"email": "nobody@example.com", "placed_at": "2027-03-01", "total": 1}, ["email"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": -1}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": "1,50"}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1.005}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 10**20}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1e300}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": True}, ["total"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1, "margin": 2}, ["margin"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1, "currency": "XXX"}, ["currency"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1, "status": "lost"}, ["status"]),
    ("O-1", {"email": "alice@example.com", "placed_at": "when?", "total": 1}, ["placed_at"]),
    ("O-1", {"email": "alice@example.com"}, ["placed_at", "total"]),
    ("x" * 101, {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1}, ["order_id"]),
    ("%20", {"email": "alice@example.com", "placed_at": "2027-03-01", "total": 1}, ["order_id"]),
])
def test_bad_orders_get_field_errors(client, db, auth, order_id, body, fields):
    response = client.put(f"{API}/orders/{order_id}", json=body, headers=auth)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert sorted(fields_of(response)) == fields
    assert count(db, Order) == 0


@pytest.mark.usefixtures("alice")
def test_an_order_batch(client, db, auth):
    orders = [{"order_id": f"B-{i}", "email": "alice@example.com", "placed_at": "2027-03-02", "total": i}
              for i in range(3)]
    orders.append({"order_id": "B-9", "email": "ghost@example.com", "placed_at": "2027-03-02", "total": 1})
    response = client.post(f"{API}/orders/batch", json={"orders": orders}, headers=auth)
    assert response.get_json()["counts"] == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 1}
    assert response.get_json()["results"][3]["errors"][0]["field"] == "email"
    assert count(db, Order) == 3


# -- events -----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("alice")
def test_post_event_is_idempotent_by_email_type_and_instant(client, db, auth):
    body = {"email": "alice@example.com", "type": "trial_started", "occurred_at": "2027-03-01T10:00:00+01:00",
            "data": {"plan": "pro", "seats": 3}}
    first = client.post(f"{API}/events", json=body, headers=auth)
    assert first.status_code == 201
    assert first.get_json()["event"] == {"email": "alice@example.com", "type": "trial_started",
                                         "occurred_at": "2027-03-01T09:00:00Z", "data": {"plan": "pro", "seats": 3}}
    # The same instant written in UTC, the address in another case: the same event.
    same = client.post(f"{API}/events", json={**body, "email": "ALICE@example.com",
                                                "occurred_at": "2027-03-01T09:00:00Z"}, headers=auth)
    assert same.status_code == 200 and same.get_json()["outcome"] == "unchanged"
    no_data = client.post(f"{API}/events", json={k: v for k, v in body.items() if k != "data"}, headers=auth)
    assert no_data.get_json()["outcome"] == "unchanged"
    changed = client.post(f"{API}/events", json={**body, "data": {"plan": "team"}}, headers=auth)
    assert changed.status_code == 200 and changed.get_json()["outcome"] == "updated"
    assert count(db, Event) == 1


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("body, fields", [
    ({"email": "ghost@example.com", "type": "trial_started", "occurred_at": "2027-03-01"}, ["email"]),
    ({"email": "alice@example.com", "type": "", "occurred_at": "2027-03-01"}, ["type"]),
    ({"email": "alice@example.com", "type": "t" * 101, "occurred_at": "2027-03-01"}, ["type"]),
    ({"email": "alice@example.com", "type": "x", "occurred_at": "2027-13-01"}, ["occurred_at"]),
    ({"email": "alice@example.com", "type": "x", "occurred_at": "2027-03-01", "data": [1]}, ["data"]),
    ({"email": "alice@example.com", "type": "x", "occurred_at": "2027-03-01", "data": {"n": 1e400}}, ["body"]),
    ({"email": "alice@example.com", "type": "x", "occurred_at": "2027-03-01", "data": {"a": "\x00"}}, ["data.a"]),
    ({"type": "x"}, ["email", "occurred_at"]),
])
def test_bad_events_get_field_errors(client, db, auth, body, fields):
    response = client.post(f"{API}/events", data=json.dumps(body), content_type="application/json", headers=auth)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    assert sorted(fields_of(response)) == fields
    assert count(db, Event) == 0


@pytest.mark.usefixtures("alice")
def test_an_event_batch(client, db, auth):
    events = [{"email": "alice@example.com", "type": "login", "occurred_at": f"2027-03-0{i + 1}"} for i in range(3)]
    response = client.post(f"{API}/events/batch", json={"events": events + events[:1]}, headers=auth)
    assert response.get_json()["counts"] == {"created": 3, "updated": 0, "unchanged": 1, "rejected": 0}
    assert count(db, Event) == 3


# -- runs and deliveries ----------------------------------------------------------------------------

@pytest.fixture
def ledger_rows(db):
    """Three runs; the newest has 7 deliveries (4 sent, 2 failed, 1 queued), one with a timeline."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        runs = [make_run(s, campaign, occurrence_at=T0 + timedelta(days=i), total=7 if i == 2 else 0)
                for i in range(3)]
        deliveries = []
        for i, status in enumerate(["sent", "failed", "sent", "queued", "sent", "failed", "sent"]):
            contact = make_contact(s, f"r{i}@example.com")
            deliveries.append(make_delivery(s, runs[2], contact, status=status,
                                            sent_at=T0 if status == "sent" else None).id)
        s.add_all([DeliveryEvent(delivery_id=deliveries[0], type="opened", occurred_at=T0 + timedelta(hours=2)),
                   DeliveryEvent(delivery_id=deliveries[0], type="delivered", occurred_at=T0 + timedelta(hours=1),
                                 data={"provider": "outbox"})])
        return {"runs": [r.id for r in runs], "deliveries": deliveries}


def test_runs_are_listed_newest_first_with_keyset_pages(client, auth, ledger_rows):
    first = client.get(f"{API}/runs?limit=2", headers=auth)
    assert first.status_code == 200
    page = first.get_json()
    newest, middle, oldest = reversed(ledger_rows["runs"])
    assert [r["id"] for r in page["runs"]] == [newest, middle] and page["next_before"] == middle
    assert page["runs"][0]["counts"] == {"queued": 1, "claimed": 0, "sent": 4, "failed": 2, "skipped": 0, "uncertain": 0}
    assert page["runs"][0]["campaign_id"] == "spring-sale" and page["runs"][0]["campaign_name"] == "Spring sale"
    rest = client.get(f"{API}/runs?limit=2&before={page['next_before']}", headers=auth).get_json()
    assert [r["id"] for r in rest["runs"]] == [oldest] and rest["next_before"] is None


def test_one_run_with_counts(client, auth, ledger_rows):
    run_id = ledger_rows["runs"][2]
    body = client.get(f"{API}/runs/{run_id}", headers=auth).get_json()
    assert body["id"] == run_id and body["total"] == 7 and body["status"] == "sending"
    assert body["counts"]["sent"] == 4 and body["progress"] == 85


def test_deliveries_of_a_run_page_by_id_and_filter_by_status(client, auth, ledger_rows):
    run_id, ids = ledger_rows["runs"][2], ledger_rows["deliveries"]
    seen, url = [], f"{API}/runs/{run_id}/deliveries?limit=3"
    while url:
        page = client.get(url, headers=auth).get_json()
        seen += [d["id"] for d in page["deliveries"]]
        url = page["next_after"] and f"{API}/runs/{run_id}/deliveries?limit=3&after={page['next_after']}"
    assert seen == ids
    failed = client.get(f"{API}/runs/{run_id}/deliveries?status=failed", headers=auth).get_json()
    assert [d["id"] for d in failed["deliveries"]] == [ids[1], ids[5]]
    both = client.get(f"{API}/runs/{run_id}/deliveries?status=failed&status=queued", headers=auth).get_json()
    assert [d["id"] for d in both["deliveries"]] == [ids[1], ids[3], ids[5]]
    found = client.get(f"{API}/runs/{run_id}/deliveries?email=R4@", headers=auth).get_json()
    assert [d["email"] for d in found["deliveries"]] == ["r4@example.com"]


def test_one_delivery_with_its_timeline(client, auth, ledger_rows):
    delivery_id = ledger_rows["deliveries"][0]
    body = client.get(f"{API}/deliveries/{delivery_id}", headers=auth).get_json()
    assert body["id"] == delivery_id and body["status"] == "sent" and body["sent_at"] == "2027-03-20T08:00:00Z"
    assert body["timeline"] == [
        {"type": "delivered", "occurred_at": "2027-03-20T09:00:00Z", "data": {"provider": "outbox"}},
        {"type": "opened", "occurred_at": "2027-03-20T10:00:00Z", "data": {}},
    ]


@pytest.mark.usefixtures("ledger_rows")
@pytest.mark.parametrize("path, status, field", [
    ("/runs/999999", 404, "request"),
    ("/runs/999999/deliveries", 404, "request"),
    ("/deliveries/999999", 404, "request"),
    ("/runs/0", 404, "request"),
    ("/runs/abc", 404, "request"),
    ("/runs/99999999999999999999999", 404, "request"),
    ("/deliveries/-1", 404, "request"),
    ("/runs?limit=0", 422, "limit"),
    ("/runs?limit=abc", 422, "limit"),
    ("/runs?limt=5", 422, "limt"),
    ("/runs?limit=1&limit=2", 422, "limit"),
    ("/runs?before=999999", 422, "before"),
    ("/runs?before=99999999999999999999999", 422, "before"),
    ("/runs/1/deliveries?status=lost", 422, "status[0]"),
    ("/runs/1/deliveries?email=%00", 422, "email"),
    ("/runs/1/deliveries?after=-5", 422, "after"),
    ("/nowhere", 404, "request"),
    ("", 404, "request"),
])
def test_bad_reads_get_json_errors(client, auth, path, status, field):
    response = client.get(API + path, headers=auth)
    assert response.status_code == status, response.get_data(as_text=True)
    assert fields_of(response) == [field]


def test_a_wrong_method_gets_a_json_405(client, auth):
    response = client.delete(f"{API}/contacts/a@example.com", headers=auth)
    assert response.status_code == 405 and fields_of(response) == ["request"]
    assert "PUT" in response.headers["Allow"]
