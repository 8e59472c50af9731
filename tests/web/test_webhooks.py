"""POST /webhooks/<provider> end to end on SQLite and PostgreSQL: verified requests change the ledger
once, everything else is refused and logged without its body."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import select
from sqlmodel import Session

from click.testing import CliRunner

from engine.cli import main
from engine.db import session_scope
from engine.models import Contact, Delivery, DeliveryEvent, Suppression, WebhookLog, WebhookNonce
from engine.web import create_app
from engine.web.webhooks import MAX_BODY, configure, fetch
from tests.conftest import write_settings
from tests.support.data import add_contacts
from tests.webhooks.signing import (CERT_URL, MAILGUN_KEY, POSTMARK_PASSWORD, POSTMARK_USER, RESEND_SECRET, TOPIC,
                                    FakeHttp, SendgridSigner, SnsSigner, basic_auth, mailgun_body, mailgun_event,
                                    mailgun_failed, postmark_bounce, postmark_spam_complaint, resend_event,
                                    rsa_certificate, sendgrid_event, ses_bounce, ses_complaint, sns_headers,
                                    svix_headers)

from .factories import T0, make_campaign, make_contact, make_delivery, make_run
from .logins import log_in, make_admin

PROVIDERS = ("ses", "sendgrid", "mailgun", "postmark", "resend")
WEBHOOKS_TOML = f'[webhooks]\n[webhooks.ses]\ntopics = ["{TOPIC}"]\n[webhooks.postmark]\nusername = "{POSTMARK_USER}"\n'


@pytest.fixture(scope="module")
def sns_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sendgrid_signer():
    return SendgridSigner()


@pytest.fixture
def http(sns_key):
    return FakeHttp({CERT_URL: rsa_certificate(sns_key)[1]})


@pytest.fixture
def env(sendgrid_signer):
    return {"SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_signer.public_key, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
            "POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD, "RESEND_WEBHOOK_SECRET": RESEND_SECRET}


@pytest.fixture
def settings(project, database_url, monkeypatch):
    monkeypatch.delenv("VALUEMAIL_CONFIG", raising=False)
    return write_settings(project, database_url, extra=WEBHOOKS_TOML)


@pytest.fixture
def app(settings, db, clock, http, env):
    app = create_app(settings=settings, engine=db, clock=clock, testing=True)
    configure(app, http_get=http, env=env)
    return app


@pytest.fixture
def mail(db):
    """Alice was sent run 1 and is queued in run 2; Bob was sent run 1."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run1, run2 = make_run(s, campaign), make_run(s, campaign, occurrence_at=T0 + timedelta(days=7))
        alice, bob = make_contact(s, "alice@example.com"), make_contact(s, "bob@example.com")
        return {"alice": make_delivery(s, run1, alice, status="sent", provider_message_id="pm-alice").id,
                "alice_next": make_delivery(s, run2, alice).id,
                "bob": make_delivery(s, run1, bob, status="sent").id, "run": run1.id}


@pytest.fixture
def sign(sns_key, sendgrid_signer):
    """sign(provider, kind, recipient, delivery_id, run_id) -> (body, headers) shaped like the provider's docs."""
    sns = SnsSigner(sns_key)

    def build(provider, kind, recipient, delivery_id=None, run_id=None, *, soft=False):
        ids = dict(delivery_id=delivery_id, run_id=run_id)
        if provider == "ses":
            event = ses_complaint(recipient, **ids) if kind == "complaint" else \
                ses_bounce(recipient, bounce_type="Transient" if soft else "Permanent",
                           diagnostic="smtp; 550 5.1.1 user unknown", **ids)
            message = sns.notification(event, version="2")
            return json.dumps(message).encode(), sns_headers(message)
        if provider == "sendgrid":
            event = sendgrid_event("spamreport", recipient, **ids) if kind == "complaint" else \
                sendgrid_event("bounce", recipient, type="blocked" if soft else "bounce", status="5.1.1",
                               reason="smtp; 550 5.1.1 user unknown", **ids)
            body = json.dumps([event]).encode()
            return body, sendgrid_signer.headers(body)
        if provider == "mailgun":
            data = mailgun_event("complained", recipient, **ids) if kind == "complaint" else \
                mailgun_failed(recipient, severity="temporary" if soft else "permanent", **ids)
            if kind != "complaint":
                data["delivery-status"]["description"] = "smtp; 550 5.1.1 user unknown"
            return mailgun_body(data), {"Content-Type": "application/json"}
        if provider == "postmark":
            record = postmark_spam_complaint(recipient, **ids) if kind == "complaint" else \
                postmark_bounce(recipient, type_="SoftBounce" if soft else "HardBounce", **ids)
            if kind != "complaint":
                record["Details"] = "smtp; 550 5.1.1 user unknown"
            return json.dumps(record).encode(), basic_auth()
        event = resend_event("email.complained" if kind == "complaint" else "email.bounced", recipient,
                             bounce_type="Transient" if soft else "Permanent", **ids)
        if kind != "complaint":
            event["data"]["bounce"]["message"] = "smtp; 550 5.1.1 user unknown"
        body = json.dumps(event).encode()
        return body, svix_headers(body)

    return build


def post(client, provider, body, headers):
    return client.post(f"/webhooks/{provider}", data=body, headers=headers)


def state(db) -> dict:
    """Everything a webhook may change, except the log."""
    with Session(db) as s:
        return {
            "events": sorted((e.delivery_id, e.type, json.dumps(e.data, sort_keys=True))
                             for e in s.execute(select(DeliveryEvent)).scalars()),
            "suppressions": sorted((r.email_key, r.reason, r.note) for r in s.execute(select(Suppression)).scalars()),
            "deliveries": sorted((d.id, d.status) for d in s.execute(select(Delivery)).scalars()),
            "contacts": sorted((c.email_key, c.status) for c in s.execute(select(Contact)).scalars()),
        }


def logs(db) -> list[tuple[str, str, str]]:
    with Session(db) as s:
        return [(r.provider, r.status, r.detail) for r in s.execute(select(WebhookLog).order_by(WebhookLog.id)).scalars()]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_verified_hard_bounce_is_on_the_timeline_suppresses_and_is_applied_once(client, db, sign, mail, provider):
    body, headers = sign(provider, "bounce", "alice@example.com", mail["alice"], mail["run"])
    response = post(client, provider, body, headers)
    assert response.status_code == 200, response.json
    assert response.json["applied"] == 1
    with Session(db) as s:
        [event] = s.execute(select(DeliveryEvent)).scalars().all()
        assert (event.delivery_id, event.type, event.data["kind"], event.data["provider"]) == \
            (mail["alice"], "bounced", "hard", provider)
        assert "550 5.1.1 user unknown" in event.data["diagnostic"]
        [row] = s.execute(select(Suppression)).scalars().all()
        assert (row.email_key, row.reason) == ("alice@example.com", "hard_bounce")
        assert row.note.startswith(f"{provider} bounced: ") and "550 5.1.1" in row.note
        assert s.get(Delivery, mail["alice_next"]).status == "skipped"
        assert s.get(Delivery, mail["bob"]).status == "sent"
    assert logs(db) == [(provider, "accepted", "1 applied, 1 suppressed")]
    before = state(db)
    again = post(client, provider, body, headers)
    # A token or Svix id seen before is a replay (refused); the others are answered and change nothing.
    assert again.status_code == (403 if provider in ("mailgun", "resend") else 200)
    assert state(db) == before


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_complaint_suppresses_at_once(client, db, sign, mail, provider):
    body, headers = sign(provider, "complaint", "bob@example.com", mail["bob"])
    assert post(client, provider, body, headers).status_code == 200
    with Session(db) as s:
        assert [(r.email_key, r.reason) for r in s.execute(select(Suppression)).scalars()] == \
            [("bob@example.com", "complaint")]
        assert [e.type for e in s.execute(select(DeliveryEvent)).scalars()] == ["complained"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_three_soft_bounces_suppress_two_do_not(client, db, sign, mail, provider):
    for n in range(3):
        body, headers = sign(provider, "bounce", "alice@example.com", mail["alice"], soft=True)
        assert post(client, provider, body, headers).status_code == 200
        with Session(db) as s:
            reasons = [r.reason for r in s.execute(select(Suppression)).scalars()]
        assert reasons == ([] if n < 2 else ["soft_bounce"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tampered_request_is_refused_logged_and_changes_nothing(client, db, sign, mail, provider, caplog):
    body, headers = sign(provider, "bounce", "alice@example.com", mail["alice"])
    if provider == "postmark":
        headers = basic_auth(password="guess")
    elif provider == "mailgun":
        # Mailgun signs timestamp + token only (its documented scheme), so the signature itself is forged.
        forged = json.loads(body)
        forged["signature"]["signature"] = forged["signature"]["signature"][::-1]
        body = json.dumps(forged).replace("alice@example.com", "bob@example.com").encode()
    else:
        body = body.replace(b"alice@example.com", b"bob@example.com")
    before = state(db)
    with caplog.at_level(logging.WARNING, logger="engine.web.webhooks"):
        response = post(client, provider, body, headers)
    assert response.status_code == (401 if provider == "postmark" else 403)
    if provider == "postmark":
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="valuemail webhooks"')
    assert state(db) == before
    [(name, status, detail)] = logs(db)
    assert (name, status) == (provider, "refused")
    assert "bob@example.com" not in detail and "alice@example.com" not in detail  # the body is never stored
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_stale_signatures_are_refused(client, db, sendgrid_signer, mail):
    body = json.dumps([sendgrid_event("spamreport", "bob@example.com")]).encode()
    response = post(client, "sendgrid", body, sendgrid_signer.headers(body, at=T0 - timedelta(seconds=301)))
    assert response.status_code == 403 and "tolerance" in response.json["error"]
    stale = mailgun_body(mailgun_event("complained", "bob@example.com"), at=T0 - timedelta(minutes=10))
    assert post(client, "mailgun", stale, {"Content-Type": "application/json"}).status_code == 403
    assert [s for _, s, _ in logs(db)] == ["refused", "refused"]
    assert state(db)["suppressions"] == []


def test_a_resend_retry_with_the_same_svix_id_changes_nothing(client, db, mail):
    body = json.dumps(resend_event("email.bounced", "alice@example.com", delivery_id=mail["alice"])).encode()
    assert post(client, "resend", body, svix_headers(body, msg_id="msg_retry")).status_code == 200
    before = state(db)
    retry = post(client, "resend", body, svix_headers(body, msg_id="msg_retry", at=T0 + timedelta(seconds=5)))
    assert retry.status_code == 200 and retry.json["duplicates"] == 1
    assert state(db) == before


def test_a_mailgun_token_is_single_use_even_with_another_event(client, db, mail):
    first = mailgun_body(mailgun_event("delivered", "bob@example.com", delivery_id=mail["bob"]), token="t" * 50)
    second = mailgun_body(mailgun_failed("bob@example.com", delivery_id=mail["bob"]), token="t" * 50)
    assert post(client, "mailgun", first, {}).status_code == 200
    response = post(client, "mailgun", second, {})
    assert response.status_code == 403 and "replayed" in response.json["error"]
    assert state(db)["suppressions"] == []


def test_subscription_confirmation_gets_the_url_once_and_only_when_valid(client, db, http, sns_key):
    sns = SnsSigner(sns_key)
    message = sns.subscription(version="2")
    http.pages[message["SubscribeURL"]] = b"<ConfirmSubscriptionResponse/>"
    forged = dict(message, Token="forged")
    assert post(client, "ses", json.dumps(forged).encode(), sns_headers(forged)).status_code == 403
    assert message["SubscribeURL"] not in http.calls
    response = post(client, "ses", json.dumps(message).encode(), sns_headers(message))
    assert response.status_code == 200
    assert http.calls.count(message["SubscribeURL"]) == 1
    assert logs(db)[-1][:2] == ("ses", "accepted") and "confirmed" in logs(db)[-1][2]


def test_sns_certificate_or_confirmation_failures_are_502_so_sns_retries(client, db, http, sns_key, mail):
    sns = SnsSigner(sns_key)
    message = sns.subscription()  # its SubscribeURL is not served by the fake getter
    response = post(client, "ses", json.dumps(message).encode(), sns_headers(message))
    assert response.status_code == 502 and "confirming the subscription" in response.json["error"]
    http.pages.clear()  # the certificate cannot be fetched either (it was cached, so use a new URL)
    other = SnsSigner(sns_key, cert_url=CERT_URL.replace(".pem", "-2.pem"))
    message = other.notification(ses_bounce("alice@example.com", delivery_id=mail["alice"]))
    response = post(client, "ses", json.dumps(message).encode(), sns_headers(message))
    assert response.status_code == 502 and "signing certificate" in response.json["error"]
    assert [s for _, s, _ in logs(db)] == ["refused", "refused"] and state(db)["suppressions"] == []


@pytest.mark.parametrize("topic, url", [
    ("arn:aws:sns:eu-west-1:999999999999:someone-else", CERT_URL),
    (TOPIC, "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"),
    (TOPIC, "https://sns.eu-west-1.evil.example/SimpleNotificationService-x.pem"),
    (TOPIC, "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.crt"),
])
def test_sns_topic_and_certificate_url_rules(client, db, http, sns_key, mail, topic, url):
    message = SnsSigner(sns_key).notification(ses_bounce("alice@example.com", delivery_id=mail["alice"]),
                                              topic=topic, SigningCertURL=url)
    assert post(client, "ses", json.dumps(message).encode(), sns_headers(message)).status_code == 403
    assert http.calls == []
    assert logs(db)[0][1] == "refused" and state(db)["suppressions"] == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unconfigured_provider_refuses_everything_with_a_clear_log_line(project, database_url, db, clock, http,
                                                                           sign, mail, provider, caplog):
    bare = create_app(settings=write_settings(project, database_url), engine=db, clock=clock, testing=True)
    configure(bare, http_get=http, env={})
    body, headers = sign(provider, "bounce", "alice@example.com", mail["alice"])
    with caplog.at_level(logging.ERROR, logger="engine.web.webhooks"):
        response = post(bare.test_client(), provider, body, headers)
    assert response.status_code == 403
    assert logs(db)[0][1] == "refused" and "not configured" in logs(db)[0][2]
    [record] = [r for r in caplog.records if "is not configured" in r.getMessage()]
    assert ("topics" if provider == "ses" else "$") in record.getMessage()
    assert state(db)["suppressions"] == [] and http.calls == []


def test_unknown_provider_malformed_and_oversized_bodies(client, db, sendgrid_signer):
    assert post(client, "sparkpost", b"{}", {}).status_code == 404
    bad = b'[{"event": "bounce",'
    response = post(client, "sendgrid", bad, sendgrid_signer.headers(bad))
    assert response.status_code == 400 and "not valid JSON" in response.json["error"]
    response = post(client, "postmark", b"\xff\xfe", basic_auth())
    assert response.status_code == 400 and "UTF-8" in response.json["error"]
    assert post(client, "ses", b"{nope", {}).status_code == 400
    huge = b"[" + b" " * MAX_BODY + b"]"
    assert post(client, "sendgrid", huge, sendgrid_signer.headers(huge)).status_code == 413
    assert [status for _, status, _ in logs(db)] == ["refused"] * 4


def test_an_event_for_an_address_never_mailed_is_ignored_and_logged(client, db, sign, mail):
    body, headers = sign("postmark", "bounce", "stranger@example.com", mail["alice"])
    response = post(client, "postmark", body, headers)
    assert response.status_code == 200 and response.json["unmatched"] == 1
    assert logs(db) == [("postmark", "ignored", "0 applied, 1 for addresses never mailed")]
    with Session(db) as s:
        assert s.execute(select(Contact).where(Contact.email_key == "stranger@example.com")).first() is None
    assert state(db)["suppressions"] == []


def test_nonces_older_than_the_retention_are_forgotten(client, db, mail):
    with session_scope(db) as s:
        s.add(WebhookNonce(provider="mailgun", nonce="token:old", seen_at=T0 - timedelta(days=31)))
        s.add(WebhookNonce(provider="mailgun", nonce="token:recent", seen_at=T0 - timedelta(days=1)))
    body = mailgun_body(mailgun_event("delivered", "bob@example.com", delivery_id=mail["bob"]))
    assert post(client, "mailgun", body, {}).status_code == 200
    with Session(db) as s:
        nonces = {n.nonce for n in s.execute(select(WebhookNonce)).scalars()}
    assert "token:old" not in nonces and "token:recent" in nonces


def test_the_delivery_page_shows_the_bounce_reason(app, client, db, sign, mail):
    body, headers = sign("sendgrid", "bounce", "alice@example.com", mail["alice"])
    assert post(client, "sendgrid", body, headers).status_code == 200
    make_admin(db)
    admin = app.test_client()
    assert log_in(admin).status_code == 302
    html = admin.get(f"/admin/deliveries/{mail['alice']}").text
    assert 'id="bounce-reason"' in html and "hard bounce (sendgrid): smtp; 550 5.1.1 user unknown" in html


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=5), max_leaves=20)


def _shaped(provider, value):
    """Random JSON in the places each provider puts its payload, so verified requests reach the parsers."""
    if provider == "sendgrid":
        return [value, {"event": "bounce", "type": value, "email": value, "sg_event_id": "x",
                        "valuemail_delivery": value}]
    if provider == "mailgun":
        return {"event": "failed", "severity": value, "recipient": value, "message": value, "user-variables": value,
                "delivery-status": value, "id": value, "timestamp": value}
    if provider == "postmark":
        return {"RecordType": "Bounce", "Type": value, "Email": value, "Metadata": value, "MessageID": value,
                "BouncedAt": value, "ID": value}
    if provider == "resend":
        return {"type": "email.bounced", "created_at": value, "data": value}
    return {"eventType": "Bounce", "bounce": value, "mail": value}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fuzzed_bodies_never_fail_the_server(client, db, sns_key, sendgrid_signer, mail, provider):
    sns = SnsSigner(sns_key)

    @hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=JSONISH, raw=st.binary(max_size=64), signed_raw=st.booleans())
    def check(value, raw, signed_raw):
        payload = _shaped(provider, value)
        body = raw if signed_raw else json.dumps(payload).encode()
        if provider == "ses":
            message = sns.notification(payload) if not signed_raw else \
                sns.notification({}, Message=raw.decode("latin-1"))
            body, headers = json.dumps(message).encode(), sns_headers(message)
        elif provider == "sendgrid":
            headers = sendgrid_signer.headers(body)
        elif provider == "mailgun":
            body = mailgun_body(payload) if not signed_raw else raw
            headers = {}
        elif provider == "postmark":
            headers = basic_auth()
        else:
            headers = svix_headers(body)
        response = post(client, provider, body, headers)
        assert response.status_code in (200, 400, 401, 403), response.data
        assert response.is_json

    check()


def test_after_a_hard_bounce_the_next_send_skips_the_address(project, settings, db, client):
    """A real send through the outbox, a Postmark bounce for one recipient, then the campaign again."""
    (project / "campaigns" / "segments.toml").write_text("[gold]\nattributes = { tier = \"gold\" }\n\n[everyone]\n")
    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in ("spring-sale.toml", "segments.toml"):
            other.unlink()
    add_contacts(db, 3)
    outbox = settings.var_dir / "outbox"

    def send(*args):
        result = CliRunner().invoke(main, ["--config", settings.source, "send", "spring-sale", *args],
                                    env={"VALUEMAIL_SECRET_KEY": "test-secret-key"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output

    def recipients() -> list[str]:
        return sorted(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["To"].addresses[0].addr_spec
                      for p in outbox.glob("*.eml"))

    send()
    assert recipients() == ["user0@example.com", "user1@example.com", "user2@example.com"]
    with Session(db) as s:
        sent = s.execute(select(Delivery).where(Delivery.email == "user1@example.com")).scalars().one()
    body = json.dumps(postmark_bounce("user1@example.com", delivery_id=sent.id, run_id=sent.run_id)).encode()
    assert post(client, "postmark", body, basic_auth()).json["applied"] == 1
    send("--again")
    assert recipients() == ["user0@example.com", "user0@example.com", "user1@example.com", "user2@example.com",
                            "user2@example.com"]


@pytest.fixture
def loopback():
    """A local HTTP server: /cert.pem (a PEM), /big (too large), /moved (a redirect), anything else 404."""
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/cert.pem":
                self._answer(200, pem)
            elif self.path == "/big":
                self._answer(200, b"x" * (70 * 1024))
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/cert.pem")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._answer(404, b"no")

        def _answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pem
    server.shutdown()
    server.server_close()


def test_the_default_fetcher_takes_only_a_small_200_answer(loopback):
    base, pem = loopback
    assert fetch(f"{base}/cert.pem") == pem
    for path, message in (("/big", "more than"), ("/moved", "HTTP 302"), ("/missing", "HTTP 404")):
        with pytest.raises(OSError, match=message):
            fetch(f"{base}{path}")
