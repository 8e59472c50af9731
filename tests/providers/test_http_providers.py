"""The five HTTP API providers against local stubs that check the documented request and replay its answers."""

from __future__ import annotations

import base64
import socket
import time
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from email.utils import format_datetime
from importlib.metadata import version

import pytest

from engine.errors import ProviderError
from engine.providers import Outcome, provider_factory
from engine.config import load_settings
from tests.providers.http_support import ENV, HEADERS, HTTP_PROVIDERS, UNSUBSCRIBE, message, provider
from tests.providers.stubs import APIS, Answer, Expect, MailgunApi, PostmarkApi, ResendApi, SesApi, Stub
from tests.support.smtpd import free_port


def stub_for(name: str, **kwargs) -> Stub:
    return Stub(APIS[name](Expect(headers=dict(HEADERS)), **kwargs))


@pytest.fixture(params=HTTP_PROVIDERS)
def name(request):
    return request.param


def test_a_message_is_accepted_with_the_providers_id_and_the_exact_request(name):
    with stub_for(name) as stub:
        p = provider(name, stub.url)
        result = p.send(message())
        p.close()
    assert stub.problems == []
    assert result.outcome is Outcome.sent and result.error is None
    assert len(stub.seen) == 1
    seen = stub.seen[0]
    assert seen.headers["user-agent"] == f"valuemail/{version('valuemail')}"
    expected_id = {
        "postmark": lambda: result.provider_message_id == stub.api.last_id,
        "sendgrid": lambda: result.provider_message_id == "sg1AbCdEfGhIjKlMn",
        "mailgun": lambda: result.provider_message_id == "20270320090000.1.abcdef@mg.example.com",
        "resend": lambda: result.provider_message_id == stub.api.delivered[0],
        "ses": lambda: result.provider_message_id == "0102018e00000001-abcdef-000000",
    }[name]
    assert expected_id(), result.provider_message_id


def test_postmark_request_fields():
    with stub_for("postmark", message_stream="newsletters") as stub:
        p = provider("postmark", stub.url, message_stream="newsletters")
        assert p.send(message()).outcome is Outcome.sent
    assert stub.problems == []
    seen = stub.seen[0]
    assert seen.headers["x-postmark-server-token"] == "test-token"
    assert seen.json() == {
        "From": "Example Shop <news@example.com>", "To": "Ann Smit <ann@example.net>",
        "Subject": "Spring sale: 15% off", "HtmlBody": "<p>Hello Ann, <b>15%</b> off.</p>",
        "TextBody": "Hello Ann, 15% off.", "ReplyTo": "help@example.com",
        "Headers": [{"Name": "List-Unsubscribe", "Value": UNSUBSCRIBE},
                    {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                    {"Name": "Feedback-ID", "Value": "7:spring-sale:valuemail"}],
        "Tag": "spring-sale", "Metadata": {"valuemail_delivery": "41", "valuemail_run": "7"},
        "MessageStream": "newsletters", "TrackOpens": False, "TrackLinks": "None",
    }


def test_sendgrid_request_fields():
    with stub_for("sendgrid") as stub:
        assert provider("sendgrid", stub.url).send(message()).outcome is Outcome.sent
    assert stub.problems == []
    seen = stub.seen[0]
    assert seen.headers["authorization"] == "Bearer test-token"
    assert seen.json() == {
        "personalizations": [{"to": [{"email": "ann@example.net", "name": "Ann Smit"}],
                              "custom_args": {"valuemail_delivery": "41", "valuemail_run": "7"}}],
        "from": {"email": "news@example.com", "name": "Example Shop"},
        "reply_to": {"email": "help@example.com"},
        "subject": "Spring sale: 15% off",
        "content": [{"type": "text/plain", "value": "Hello Ann, 15% off."},
                    {"type": "text/html", "value": "<p>Hello Ann, <b>15%</b> off.</p>"}],
        "headers": dict(HEADERS),
        "categories": ["spring-sale"],
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                              "open_tracking": {"enable": False}},
    }


def test_mailgun_request_fields_and_eu_base_url():
    with Stub(MailgunApi(Expect(headers=dict(HEADERS)), domain="mg.shop.eu")) as stub:
        # The EU region is only a different base_url; the path and fields are the same.
        assert provider("mailgun", stub.url, domain="mg.shop.eu").send(message()).outcome is Outcome.sent
    assert stub.problems == []
    seen = stub.seen[0]
    assert seen.path == "/v3/mg.shop.eu/messages"
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"api:test-token").decode()
    assert seen.form() == [
        ("from", "Example Shop <news@example.com>"), ("to", "Ann Smit <ann@example.net>"),
        ("subject", "Spring sale: 15% off"), ("text", "Hello Ann, 15% off."),
        ("html", "<p>Hello Ann, <b>15%</b> off.</p>"), ("h:Reply-To", "help@example.com"),
        ("h:List-Unsubscribe", UNSUBSCRIBE), ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("h:Feedback-ID", "7:spring-sale:valuemail"), ("h:Message-Id", "<41.7@valuemail.example.com>"),
        ("o:tag", "spring-sale"), ("o:tracking", "no"), ("v:valuemail_delivery", "41"), ("v:valuemail_run", "7"),
    ]


def test_resend_request_fields_and_idempotency_key():
    with stub_for("resend") as stub:
        p = provider("resend", stub.url)
        first = p.send(message())
        again = p.send(message())  # a retried request for the same delivery
    assert stub.problems == []
    seen = stub.seen[0]
    assert seen.headers["authorization"] == "Bearer test-token"
    assert seen.headers["idempotency-key"] == "<41.7@valuemail.example.com>"
    assert seen.json() == {
        "from": "Example Shop <news@example.com>", "to": ["ann@example.net"], "subject": "Spring sale: 15% off",
        "html": "<p>Hello Ann, <b>15%</b> off.</p>", "text": "Hello Ann, 15% off.", "reply_to": "help@example.com",
        "headers": dict(HEADERS),
        "tags": [{"name": "valuemail_delivery", "value": "41"}, {"name": "valuemail_run", "value": "7"},
                 {"name": "campaign", "value": "spring-sale"}],
    }
    # Resend delivers a key it has seen once: the retry returns the same id and sends nothing.
    assert first.provider_message_id == again.provider_message_id and len(stub.api.delivered) == 1


def test_resend_tag_values_are_made_safe():
    with stub_for("resend") as stub:
        msg = message()
        msg = type(msg)(**{**msg.__dict__, "tag": "spring sale/2027.v2"})
        assert provider("resend", stub.url).send(msg).outcome is Outcome.sent
    assert stub.problems == []
    assert stub.seen[0].json()["tags"][-1] == {"name": "campaign", "value": "spring_sale_2027_v2"}


def test_ses_request_fields_raw_mime_and_signature():
    with Stub(SesApi(Expect(headers=dict(HEADERS)), configuration_set="newsletters")) as stub:
        sent = message()
        result = provider("ses", stub.url, configuration_set="newsletters").send(sent)
    assert stub.problems == [] and result.outcome is Outcome.sent
    seen = stub.seen[0]
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=test-token/")
    assert "/eu-west-1/ses/aws4_request" in seen.headers["authorization"]
    data = seen.json()
    assert data["FromEmailAddress"] == "news@example.com"
    assert data["Destination"] == {"ToAddresses": ["ann@example.net"]}
    assert data["ConfigurationSetName"] == "newsletters"
    assert data["EmailTags"] == [{"Name": "valuemail_delivery", "Value": "41"}, {"Name": "valuemail_run", "Value": "7"},
                                 {"Name": "campaign", "Value": "spring-sale"}]
    raw = base64.b64decode(data["Content"]["Raw"]["Data"])
    assert raw == sent.data
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE and parsed["Message-ID"] == "<41.7@valuemail.example.com>"


def test_ses_temporary_credentials_sign_the_session_token():
    env = {**ENV, "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE"}
    with Stub(SesApi(Expect(headers=dict(HEADERS)), session_token="FwoGZXIvYXdzEXAMPLE")) as stub:
        result = provider("ses", stub.url, env=env, session_token_env="AWS_SESSION_TOKEN").send(message())
    assert stub.problems == [] and result.outcome is Outcome.sent
    assert "x-amz-security-token" in stub.seen[0].headers["authorization"]


def test_ses_region_sets_the_scope_and_the_default_endpoint():
    with Stub(SesApi(Expect(headers=dict(HEADERS)), region="us-east-2")) as stub:
        assert provider("ses", stub.url, region="us-east-2").send(message()).outcome is Outcome.sent
        # Signed for the wrong region, the stub (like AWS) refuses the signature.
        wrong = provider("ses", stub.url, region="eu-west-1").send(message())
    assert wrong.outcome is Outcome.temporary and wrong.unavailable and wrong.code == 403
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in wrong.error
    p = provider("ses", "", region="ap-southeast-2")
    assert p.options.base_url == "https://email.ap-southeast-2.amazonaws.com"


def test_invalid_recipient_is_permanent(name):
    with stub_for(name) as stub:
        result = provider(name, stub.url).send(message("invalid@example.net"))
    assert stub.problems == []
    assert result.outcome is Outcome.permanent and not result.unavailable
    assert {"postmark": "ErrorCode 406", "sendgrid": "personalizations.0.to.0.email: Does not contain a valid",
            "mailgun": "not a valid address", "resend": "validation_error",
            "ses": "MessageRejected"}[name] in result.error


@pytest.mark.parametrize("provider_name, behaviour, outcome, unavailable, text", [
    ("postmark", "badrequest", Outcome.permanent, False, "ErrorCode 300: Invalid 'To' address"),
    ("postmark", "paused", Outcome.temporary, True, "ErrorCode 412"),
    ("ses", "badrequest", Outcome.permanent, False, "BadRequestException: Missing final '@domain'"),
    ("ses", "paused", Outcome.temporary, True, "SendingPausedException"),
])
def test_documented_errors_per_provider(provider_name, behaviour, outcome, unavailable, text):
    with stub_for(provider_name) as stub:
        result = provider(provider_name, stub.url).send(message(f"{behaviour}@example.net"))
    assert stub.problems == []
    assert result.outcome is outcome and result.unavailable is unavailable and text in result.error


def test_rate_limited_is_throttled_with_retry_after(name):
    with stub_for(name) as stub:
        result = provider(name, stub.url).send(message("ratelimit@example.net"))
    assert stub.problems == []
    assert result.outcome is Outcome.temporary and result.throttled and not result.unavailable
    expected = {"postmark": 7, "sendgrid": 30, "mailgun": 5, "resend": 1, "ses": 2}[name]
    # SendGrid gives a reset time, read against its own Date header (whole seconds).
    assert expected - 1.5 <= result.retry_after <= expected


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_make_the_provider_unavailable(name, status):
    with stub_for(name) as stub:
        result = provider(name, stub.url).send(message(f"error{status}@example.net"))
    assert result.outcome is Outcome.temporary and result.unavailable and result.code == status
    assert not result.throttled


def test_no_answer_after_the_request_went_out_is_uncertain_and_the_next_send_works(name):
    with stub_for(name) as stub:
        p = provider(name, stub.url, read_timeout=0.5)
        hung = p.send(message("hang@example.net"))  # the stub never answers: only the read timeout ends it
        dropped = p.send(message("drop@example.net", delivery=42))
        after = p.send(message("ann@example.net", delivery=43))
    assert hung.outcome is Outcome.uncertain and not hung.unavailable and "read timeout=0.5" in hung.error
    assert dropped.outcome is Outcome.uncertain and not dropped.unavailable
    assert after.outcome is Outcome.sent
    # The stub did receive the whole request both times: the provider may well have sent them.
    assert [s.body != b"" for s in stub.seen] == [True, True, True]


def test_a_closed_port_is_unavailable_and_nothing_is_sent(name):
    result = provider(name, f"http://127.0.0.1:{free_port()}").send(message())
    assert result.outcome is Outcome.temporary and result.unavailable and not result.throttled
    assert result.error.startswith(f"{name} unreachable: NewConnectionError: ") and "Connection refused" in result.error


def test_a_connect_timeout_is_unavailable(name):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting times out.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        queued = []
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            queued.append(client)
        time.sleep(0.2)
        result = provider(name, f"http://127.0.0.1:{port}", connect_timeout=0.5).send(message())
        for client in queued:
            client.close()
    assert result.outcome is Outcome.temporary and result.unavailable
    assert "ConnectTimeoutError" in result.error and "connect timeout=0.5" in result.error


def test_refused_credentials_are_unavailable_and_name_the_variable(name):
    wrong = {**ENV, "POSTMARK_TOKEN": "x", "SENDGRID_API_KEY": "x", "MAILGUN_API_KEY": "x", "RESEND_API_KEY": "x",
             "AWS_SECRET_ACCESS_KEY": "x"}
    with stub_for(name) as stub:
        result = provider(name, stub.url, env=wrong).send(message())
    variable = {"postmark": "POSTMARK_TOKEN", "sendgrid": "SENDGRID_API_KEY", "mailgun": "MAILGUN_API_KEY",
                "resend": "RESEND_API_KEY", "ses": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"}[name]
    assert result.outcome is Outcome.temporary and result.unavailable and result.code in (401, 403)
    assert f"check {variable}" in result.error


def test_one_keep_alive_connection_per_instance_until_close(name):
    with stub_for(name) as stub:
        p = provider(name, stub.url)
        for i in range(3):
            assert p.send(message(f"u{i}@example.net", delivery=100 + i)).outcome is Outcome.sent
        p.close()
        assert p.send(message("u9@example.net", delivery=109)).outcome is Outcome.sent
    ports = [s.client_port for s in stub.seen]
    assert len(set(ports[:3])) == 1 and ports[3] != ports[0]


def test_a_keep_alive_connection_the_provider_closed_is_not_mistaken_for_a_lost_answer(name):
    with Stub(APIS[name](Expect(headers=dict(HEADERS))), close_after_answer=True) as stub:
        p = provider(name, stub.url)
        results = []
        for i in range(3):
            results.append(p.send(message(f"u{i}@example.net", delivery=200 + i)))
            time.sleep(0.1)  # the server's close reaches us before the next send
    assert [r.outcome for r in results] == [Outcome.sent] * 3
    assert len({s.client_port for s in stub.seen}) == 3


def test_a_missing_secret_is_a_clear_error_when_the_factory_is_built(name, tmp_path):
    config = tmp_path / "config.toml"
    extra = '\n[provider.mailgun]\ndomain = "mg.example.com"' if name == "mailgun" else ""
    config.write_text(f'[provider]\nname = "{name}"{extra}\n')
    settings = load_settings(config, env={}, secret_key="k")
    variable = {"postmark": "POSTMARK_TOKEN", "sendgrid": "SENDGRID_API_KEY", "mailgun": "MAILGUN_API_KEY",
                "resend": "RESEND_API_KEY", "ses": "AWS_ACCESS_KEY_ID"}[name]
    with pytest.raises(ProviderError, match=f"environment variable {variable} is not set"):
        provider_factory(settings, env={k: v for k, v in ENV.items() if k != variable})
    assert provider_factory(settings, env=ENV)().name == name


def test_mailgun_without_a_domain_is_a_clear_error():
    with pytest.raises(ProviderError, match=r"\[provider.mailgun\] domain is not set"):
        provider("mailgun", "http://127.0.0.1:9", domain="")


def test_sendgrid_leaves_out_headers_it_reserves():
    with stub_for("sendgrid") as stub:
        msg = message()
        msg = type(msg)(**{**msg.__dict__, "headers": HEADERS + (("Reply-To", "x@example.com"),)})
        assert provider("sendgrid", stub.url).send(msg).outcome is Outcome.sent
    assert stub.problems == [] and stub.seen[0].json()["headers"] == dict(HEADERS)


def test_postmark_stub_checks_catch_a_wrong_request():
    """The stubs fail loudly: a request without our List-Unsubscribe headers is caught."""
    with Stub(PostmarkApi(Expect(headers=dict(HEADERS)))) as stub:
        msg = message()
        result = provider("postmark", stub.url).send(type(msg)(**{**msg.__dict__, "headers": ()}))
    assert result.outcome is Outcome.permanent
    assert "Headers: List-Unsubscribe missing" in stub.problems


def test_resend_concurrent_idempotent_request_is_retried_later():
    api = ResendApi(Expect(headers=dict(HEADERS)))
    api.answer = lambda seen, behaviour: Answer.json(
        409, {"statusCode": 409, "name": "concurrent_idempotent_requests",
              "message": "Same idempotency key used while original request is still in progress."})
    with Stub(api) as stub:
        result = provider("resend", stub.url).send(message())
    assert result.outcome is Outcome.temporary and result.retry_after == 1.0 and not result.unavailable


def test_resend_unverified_domain_is_unavailable_without_blaming_the_key():
    api = ResendApi(Expect(headers=dict(HEADERS)))
    api.answer = lambda seen, behaviour: Answer.json(403, {
        "statusCode": 403, "name": "validation_error",
        "message": "You can only send testing emails to your own email address (owner@example.com)."})
    with Stub(api) as stub:
        result = provider("resend", stub.url).send(message())
    assert stub.problems == []
    assert result.outcome is Outcome.temporary and result.unavailable and result.code == 403
    assert "validation_error: You can only send testing emails" in result.error and "check" not in result.error


def test_retry_after_as_an_http_date_is_read_against_the_providers_clock():
    api = PostmarkApi(Expect(headers=dict(HEADERS)))
    # The stub's Date header is its own clock; the HTTP-date is 90 s after it.
    api.answer = lambda seen, behaviour: Answer.json(
        429, {"ErrorCode": 429, "Message": "Rate limit exceeded."},
        **{"Retry-After": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)})
    with Stub(api) as stub:
        result = provider("postmark", stub.url).send(message())
    assert stub.problems == []
    assert result.outcome is Outcome.temporary and result.throttled and 88 <= result.retry_after <= 91


def test_a_proxy_from_the_environment_is_used_and_netrc_is_not(name, monkeypatch, tmp_path):
    # The stub plays the HTTP proxy: it is sent the absolute URL and answers as the API.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.example.invalid login someone password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    with stub_for(name) as stub:
        monkeypatch.setenv("HTTP_PROXY", stub.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        p = provider(name, "http://api.example.invalid")
        result = p.send_batch([message()])[0]
        p.close()
    # (Sent: a Bearer key replaced by the netrc login would have been refused.)
    assert stub.problems == [] and result.outcome is Outcome.sent, result.error
    assert stub.seen[0].headers["host"] == "api.example.invalid"
    if name == "postmark":  # its token is a header of its own: no Authorization may appear
        assert "authorization" not in stub.seen[0].headers
