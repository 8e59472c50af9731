"""Property tests: random and mutated tokens on every public route never give a 500 and never change data.

The routes come from the app's URL map (everything outside the admin area and static files), so a
public route added later is fuzzed without touching this file. Each converter argument is filled
with random text, genuine tokens for the wrong purpose, one-character mutations of genuine tokens,
or genuinely signed odd delivery ids; requests are GETs and POSTs with random form bodies (with and
without the RFC 8058 one-click field). A request may only change the database when its token is
valid for the route's purpose (and, on /u/, only as a one-click POST: the CSRF form needs a real
CSRF token, which random bodies never carry). Click tokens carry [delivery id, link id]: genuine
ones for links of the delivery's own run, of another run and of no run, and odd pairs, are thrown
at every route too; a click counts only for a link of the delivery's own run.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from itsdangerous import URLSafeSerializer
from sqlalchemy import delete, select
from sqlmodel import Session

from engine.campaigns import load_campaign
from engine.db import session_scope
from engine.models import (Campaign, Contact, Delivery, DeliveryEvent, KindOptOut, Link, LinkClick, Order, Run,
                           Suppression, SurveyAnswer, SurveyResponse)
from engine.tokens import PURPOSES, BadToken
from engine.web import create_app

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

#: The token purpose each known public endpoint checks; endpoints added later fall back to "any genuine token".
ROUTE_PURPOSE = {
    "public.unsubscribe": "unsubscribe",
    "preferences.page": "preferences",
    "preferences.save": "preferences",
    "preferences.resubscribe": "preferences",
    "preferences.download": "preferences",
    "preferences.erase": "preferences",
    "coupons.page": "coupon",
    "public.view_in_browser": "view",
    "public.survey_answer": "survey",
    "surveys.page": "survey",
    "tracking.click": "click",
    "tracking.open_pixel": "open",
}
#: Endpoints that write only from a CSRF-protected form, which random requests never carry a valid token for.
CSRF_ONLY_WRITES = {"surveys.page", "preferences.save", "preferences.resubscribe", "preferences.erase"}
PRIVATE_BLUEPRINTS = {"admin", "static"}
_ARG = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
TOKEN_CHARS = string.ascii_letters + string.digits + "-_."
MAX_BIGINT = 2**63 - 1
ODD_IDS = [0, -1, -(2**63), MAX_BIGINT, MAX_BIGINT + 1, 2**64, 10**30, True, False, None, "1", 1.0, 1.5, [1],
           {"id": 1}, ""]


def odd_pairs(world) -> list:
    """Click payloads a signer could be made to carry that are not [existing delivery, link of its run]."""
    delivery, link = world["clicks"][0]
    return [[delivery], [delivery, link, link], [delivery, 0], [0, link], [delivery, -1], [True, link],
            [delivery, True], [delivery, "1"], [delivery, 1.0], [delivery, MAX_BIGINT + 1], [MAX_BIGINT, link],
            [delivery, None], [[delivery], link], {"d": delivery, "l": link}, [world["gone"], link],
            [delivery, world["foreign_link"]], [delivery, world["no_link"]]]

FUZZ = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture
def fuzz_app(settings, db, clock):
    app = create_app(settings=settings, engine=db, clock=clock, testing=True,
                     view_renderer=lambda session, delivery_id: "<p>Your mail</p>")
    # TESTING would re-raise a crash in the test; the property is about what a visitor gets: never a 500.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return app


@pytest.fixture
def fuzz_client(fuzz_app):
    return fuzz_app.test_client()


@pytest.fixture
def world(db, settings):
    """A plain delivery, a survey invitation (with its campaign as sent), and the id of a deleted delivery."""
    survey = load_campaign(settings.campaigns_dir / "order-survey.toml", settings=settings, segment_names=None,
                           today=None)
    with session_scope(db) as s:
        run = make_run(s, make_campaign(s))
        alice = make_contact(s, "alice@example.com")
        plain = make_delivery(s, run, alice).id
        bob = make_contact(s, "bob@example.com")
        s.add(Campaign(id=survey.id, name="Survey", kind="post_purchase_survey", values=[], definition={},
                       source_hash="0" * 64, synced_at=T0))
        s.flush()
        survey_run = make_run(s, s.get(Campaign, survey.id), occurrence_at=T0 + timedelta(days=1))
        survey_run.definition = survey.as_json()
        s.add(Order(order_id="O-1", contact_id=bob.id, placed_at=T0 - timedelta(days=8), total_cents=4990,
                    currency="EUR", status="delivered", updated_at=T0))
        invitation = make_delivery(s, survey_run, bob, status="sent", data={"order_id": "O-1"}).id
        gone = make_delivery(s, run, bob).id
        # Tracked links: one in each run; a click of the other run's link is refused.
        link = Link(run_id=run.id, url="https://example.com/spring", created_at=T0)
        survey_link = Link(run_id=survey_run.id, url="https://example.com/survey-help", created_at=T0)
        s.add_all([link, survey_link])
        s.flush()
        link_ids = (link.id, survey_link.id)
    with session_scope(db) as s:
        s.execute(delete(Delivery).where(Delivery.id == gone))
    questions = [(q.key, q.type, list(q.options or ())) for q in survey.section.questions]
    return {"existing": [plain, invitation], "gone": gone, "questions": questions,
            "clicks": [(plain, link_ids[0]), (invitation, link_ids[1])], "links": list(link_ids),
            "foreign_link": link_ids[1], "no_link": max(link_ids) + 1}


def public_rules(app) -> list:
    """Every URL rule outside the admin area and static files."""
    rules = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else None
        if blueprint not in PRIVATE_BLUEPRINTS and rule.endpoint != "static":
            rules.append(rule)
    return sorted(rules, key=lambda r: (r.rule, r.endpoint))


def rule_args(rule) -> list[str]:
    return _ARG.findall(rule.rule)


def build_path(rule, values: dict[str, str]) -> str:
    return _ARG.sub(lambda m: values[m.group(1)], rule.rule)


def snapshot(db) -> dict:
    """Everything a public page could change."""
    with Session(db) as s:
        return {
            "contacts": sorted(s.exec(select(Contact.id, Contact.email, Contact.status, Contact.language,
                                             Contact.erased_at, Contact.updated_at)).all(), key=repr),
            "optouts": sorted(s.exec(select(KindOptOut.contact_id, KindOptOut.kind)).all()),
            "deliveries": sorted(s.exec(select(Delivery.id, Delivery.status, Delivery.last_error)).all()),
            "suppressions": sorted(s.exec(select(Suppression.email_key, Suppression.reason)).all()),
            "responses": sorted(s.exec(select(SurveyResponse.id, SurveyResponse.updated_at,
                                              SurveyResponse.submitted_at)).all()),
            "answers": sorted(s.exec(select(SurveyAnswer.response_id, SurveyAnswer.question,
                                            SurveyAnswer.value_number, SurveyAnswer.value_text)).all(),
                              key=repr),
            "tracking": sorted(s.exec(select(Delivery.id, Delivery.opened_at, Delivery.open_count,
                                             Delivery.clicked_at, Delivery.click_count)).all(), key=repr),
            "clicks": sorted(s.exec(select(LinkClick.delivery_id, LinkClick.link_id, LinkClick.count)).all()),
            "events": sorted(s.exec(select(DeliveryEvent.delivery_id, DeliveryEvent.type)).all()),
        }


# -- strategies -------------------------------------------------------------------------------------

def odd_serializer(settings, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key, salt=f"valuemail.{purpose}")


def tokens(signer, settings, world):
    ids = world["existing"] + [world["gone"]]
    links = world["links"] + [world["no_link"]]
    genuine = (st.builds(signer.sign, st.sampled_from(PURPOSES), st.sampled_from(ids))
               | st.builds(lambda d, l: signer.sign_ids("click", d, l), st.sampled_from(ids), st.sampled_from(links)))

    @st.composite
    def mutated(draw):
        token = draw(genuine)
        op = draw(st.sampled_from(["change", "insert", "delete"]))
        i = draw(st.integers(0, len(token) - (0 if op == "insert" else 1)))
        char = draw(st.sampled_from(TOKEN_CHARS) | st.characters())
        if op == "change":
            return token[:i] + char + token[i + 1:]
        if op == "insert":
            return token[:i] + char + token[i:]
        return token[:i] + token[i + 1:]

    odd_signed = st.builds(lambda purpose, value: odd_serializer(settings, purpose).dumps(value),
                           st.sampled_from(PURPOSES),
                           st.sampled_from(ODD_IDS + odd_pairs(world)) | st.integers()
                           | st.integers(min_value=world["gone"]) | st.lists(st.integers(), max_size=3))
    special = st.sampled_from(["", ".", "..", "/", "%", "%%", "%00", "%2F", "%2e%2e", "../..", "a/b", "\x00",
                               "null", "None", "true", "0", "-1", "1e999", "NaN", " ", "\u202e", "\ud7ff\uffff",
                               "A" * 5000, "é" * 3000, "%" * 2000, "/." * 500])
    text = st.text(max_size=400) | st.text(alphabet=TOKEN_CHARS, max_size=120)
    return st.one_of(genuine, mutated(), mutated(), odd_signed, special, text)


def segment_values():
    """Free-form path segments (question and value of /s/ links and any other argument)."""
    return st.one_of(st.sampled_from(["recommend", "delivery", "why", "improve", "price", "0", "5", "9", "10", "11",
                                      "-1", "1.5", "", "..", "%", "%00"]),
                     st.text(max_size=200), st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=30),
                     st.integers().map(str), st.just("x" * 5000))


def form_bodies():
    keys = st.sampled_from(["List-Unsubscribe", "csrf_token", "answer", "email"]) | st.text(max_size=30)
    form = st.dictionaries(keys, st.text(max_size=100), max_size=5)
    return st.tuples(form, st.sampled_from([None, "One-Click", " One-Click ", "one-click", "One-Click\x00"]))


def encode(value: str, raw: bool) -> str:
    # Properly quoted, or loosely: '/', '%' and '.' left as they are, as a hand-edited URL would have them.
    return quote(value, safe="/%.~" if raw else "")


# -- the properties ---------------------------------------------------------------------------------

def check(client, db, signer, world, rule, method, values, form, raw_body):
    """Send one request and check it: below 500, and data unchanged unless the token allowed a change."""
    path = build_path(rule, values)
    before = snapshot(db)
    if method == "GET":
        response = client.get(path)
    elif raw_body is not None:
        body, content_type = raw_body
        response = client.post(path, data=body, content_type=content_type)
    else:
        response = client.post(path, data=form)
    assert response.status_code < 500, (method, path, form, response.status_code)
    if snapshot(db) == before:
        return
    token = unquote(values.get("token", ""))
    purposes = [ROUTE_PURPOSE[rule.endpoint]] if rule.endpoint in ROUTE_PURPOSE else list(PURPOSES)
    valid = False
    for purpose in purposes:
        try:
            if purpose == "click":
                valid = valid or signer.unsign_ids("click", token, 2) in world["clicks"]
            else:
                valid = valid or signer.unsign(purpose, token) in world["existing"]
        except BadToken:
            pass
    one_click = method == "POST" and raw_body is None and (form or {}).get("List-Unsubscribe", "").strip() == "One-Click"
    if rule.endpoint == "public.unsubscribe":
        valid = valid and one_click
    if rule.endpoint in CSRF_ONLY_WRITES:
        valid = False
    assert valid, f"{method} {path} changed data without a token valid for it"


def test_public_routes_are_enumerated_from_the_url_map(fuzz_app):
    endpoints = {rule.endpoint for rule in public_rules(fuzz_app)}
    assert set(ROUTE_PURPOSE) <= endpoints
    assert "healthz" in endpoints
    assert not any(e.startswith("admin.") for e in endpoints)


def test_the_test_signs_odd_ids_like_the_app(settings, signer):
    # The odd-id tokens below are only meaningful if they are signed exactly as the app signs.
    for purpose in PURPOSES:
        assert odd_serializer(settings, purpose).dumps(7) == signer.sign(purpose, 7)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_genuinely_signed_odd_ids_on_every_route(fuzz_client, fuzz_app, db, signer, settings, world, method):
    rules = [r for r in public_rules(fuzz_app) if "token" in rule_args(r)]
    for rule in rules:
        for purpose in PURPOSES:
            for value in [*ODD_IDS, world["gone"], *(odd_pairs(world) if purpose == "click" else ())]:
                values = {arg: "recommend" for arg in rule_args(rule)}
                values["token"] = odd_serializer(settings, purpose).dumps(value)
                check(fuzz_client, db, signer, world, rule, method, values, {"List-Unsubscribe": "One-Click"}, None)


@FUZZ
@given(data=st.data())
def test_random_requests_on_public_routes_never_fail(fuzz_client, fuzz_app, db, signer, settings, world, data):
    rule = data.draw(st.sampled_from(public_rules(fuzz_app)), label="rule")
    raw = data.draw(st.booleans(), label="raw")
    values = {}
    for arg in rule_args(rule):
        strategy = tokens(signer, settings, world) if arg == "token" else segment_values()
        values[arg] = encode(data.draw(strategy, label=arg), raw)
    method = data.draw(st.sampled_from(["GET", "POST"]), label="method")
    form, one_click = data.draw(form_bodies(), label="form")
    if one_click is not None:
        form = {**form, "List-Unsubscribe": one_click}
    raw_body = data.draw(st.none() | st.tuples(
        st.binary(max_size=300),
        st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data",
                         "multipart/form-data; boundary=x", "text/plain", "application/json"])), label="raw_body")
    check(fuzz_client, db, signer, world, rule, method, values, form, raw_body)


@FUZZ
@given(data=st.data())
def test_survey_links_with_random_answers_never_fail(fuzz_client, fuzz_app, db, signer, settings, world, data):
    """A genuine survey token with random or near-valid question and value segments."""
    rule = next(r for r in public_rules(fuzz_app) if r.endpoint == "public.survey_answer")
    delivery_id = data.draw(st.sampled_from(world["existing"] + [world["gone"]]), label="delivery")
    key, kind, options = data.draw(st.sampled_from(world["questions"]), label="question")
    question = data.draw(st.just(key) | segment_values(), label="question segment")
    near = [str(v) for v in range(-1, 12)] + options + [o.lower().replace(" ", "-") for o in options]
    value = data.draw(st.sampled_from(near) | segment_values(), label="value segment")
    raw = data.draw(st.booleans(), label="raw")
    values = {"token": signer.sign("survey", delivery_id), "question": encode(question, raw),
              "value": encode(value, raw)}
    check(fuzz_client, db, signer, world, rule, "GET", values, None, None)
