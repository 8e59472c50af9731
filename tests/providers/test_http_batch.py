"""`send_batch` of the HTTP providers: batch endpoints (Postmark, Resend), requests in flight, throttling, lost answers.

The stubs check every field of every entry; nothing here depends on timing: concurrency is seen by
the stub's own count of requests waiting for an answer, with answers held until enough arrive.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter

import pytest

from engine.config import load_settings
from engine.providers import Outcome, provider_factory
from tests.providers.http_support import ENV, HEADERS, UNSUBSCRIBE, delivery, message, messages, provider
from tests.providers.stubs import APIS, Answer, Expect, PostmarkApi, ResendApi, Stub

ONE_AT_A_TIME = ("sendgrid", "mailgun", "ses")


def stub_for(name: str, **kwargs) -> Stub:
    return Stub(APIS[name](Expect(headers=dict(HEADERS))), **kwargs)


def ids_given(stub: Stub) -> dict[int, str]:
    """The provider id the stub answered for each delivery it accepted."""
    return {int(metadata["valuemail_delivery"]): provider_id for metadata, provider_id in stub.api.sent}


def assert_ids_in_order(stub: Stub, sent, results) -> None:
    given = ids_given(stub)
    for m, r in zip(sent, results):
        if r.outcome is Outcome.sent:
            assert r.provider_message_id == given[delivery(m)]


def test_postmark_sends_a_batch_to_email_batch_with_every_field_of_every_message():
    sent = [message("ann@example.net", delivery=41), message("bob@example.net", delivery=42)]
    with stub_for("postmark") as stub:
        p = provider("postmark", stub.url)
        results = p.send_batch(sent)
        p.close()
    assert stub.problems == []
    assert len(stub.seen) == 1 and stub.seen[0].path == "/email/batch"
    seen = stub.seen[0]
    assert (seen.headers["x-postmark-server-token"], seen.headers["accept"]) == ("test-token", "application/json")

    def entry(to: str, delivery: int) -> dict:
        return {
            "From": "Example Shop <news@example.com>", "To": f"Ann Smit <{to}>",
            "Subject": "Spring sale: 15% off", "HtmlBody": "<p>Hello Ann, <b>15%</b> off.</p>",
            "TextBody": "Hello Ann, 15% off.", "ReplyTo": "help@example.com",
            "Headers": [{"Name": "List-Unsubscribe", "Value": UNSUBSCRIBE},
                        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                        {"Name": "Feedback-ID", "Value": "7:spring-sale:valuemail"}],
            "Tag": "spring-sale", "Metadata": {"valuemail_delivery": str(delivery), "valuemail_run": "7"},
            "MessageStream": "broadcast", "TrackOpens": False, "TrackLinks": "None",
        }

    assert seen.json() == [entry("ann@example.net", 41), entry("bob@example.net", 42)]
    assert [r.outcome for r in results] == [Outcome.sent] * 2
    assert [r.provider_message_id for r in results] == [ids_given(stub)[41], ids_given(stub)[42]]


def test_resend_sends_a_batch_to_emails_batch_permissive_with_a_key_from_the_message_ids():
    sent = [message("ann@example.net", delivery=41), message("bob@example.net", delivery=42)]
    with stub_for("resend") as stub:
        p = provider("resend", stub.url)
        results = p.send_batch(sent)
        p.close()
    assert stub.problems == []
    assert len(stub.seen) == 1 and stub.seen[0].path == "/emails/batch"
    seen = stub.seen[0]
    assert seen.headers["authorization"] == "Bearer test-token"
    assert seen.headers["x-batch-validation"] == "permissive"
    digest = hashlib.sha256(b"<41.7@valuemail.example.com>\n<42.7@valuemail.example.com>").hexdigest()
    assert seen.headers["idempotency-key"] == f"valuemail-batch-{digest}"

    def entry(to: str, delivery: int) -> dict:
        return {
            "from": "Example Shop <news@example.com>", "to": [to], "subject": "Spring sale: 15% off",
            "html": "<p>Hello Ann, <b>15%</b> off.</p>", "text": "Hello Ann, 15% off.", "reply_to": "help@example.com",
            "headers": dict(HEADERS),
            "tags": [{"name": "valuemail_delivery", "value": str(delivery)}, {"name": "valuemail_run", "value": "7"},
                     {"name": "campaign", "value": "spring-sale"}],
        }

    assert seen.json() == [entry("ann@example.net", 41), entry("bob@example.net", 42)]
    assert [r.provider_message_id for r in results] == stub.api.delivered


@pytest.mark.parametrize("behaviour, outcome, unavailable, text", [
    ("badrequest", Outcome.permanent, False, "postmark ErrorCode 300: Invalid 'To' address"),
    ("invalid", Outcome.permanent, False, "postmark ErrorCode 406: You tried to send to recipient(s) that have been"),
    ("paused", Outcome.temporary, True, "postmark ErrorCode 412: Your account is pending approval"),
])
def test_a_postmark_error_code_inside_a_batch_answer_is_that_messages_alone(behaviour, outcome, unavailable, text):
    sent = messages(6, special={3: behaviour})
    with stub_for("postmark") as stub:
        results = provider("postmark", stub.url).send_batch(sent)
    assert stub.problems == [] and len(stub.seen) == 1
    assert [r.outcome for r in results] == [outcome if i == 3 else Outcome.sent for i in range(6)]
    assert results[3].unavailable is unavailable and results[3].error.startswith(text)
    assert_ids_in_order(stub, sent, results)


def test_a_resend_invalid_recipient_inside_a_batch_fails_that_delivery_alone():
    sent = messages(6, special={1: "invalid", 4: "invalid"})
    with stub_for("resend") as stub:
        results = provider("resend", stub.url).send_batch(sent)
    assert stub.problems == [] and len(stub.seen) == 1
    assert [r.outcome for r in results] == [Outcome.permanent if i in (1, 4) else Outcome.sent for i in range(6)]
    assert results[1].error == f"resend: validation_error: {ResendApi.INVALID_TO}"
    # The ids of the created emails come in request order, the refused ones left out.
    assert [r.provider_message_id for r in results if r.outcome is Outcome.sent] == stub.api.delivered
    assert_ids_in_order(stub, sent, results)


@pytest.mark.parametrize("name, sizes", [("postmark", [500, 500, 200]), ("resend", [100] * 12)])
def test_a_large_batch_is_split_at_the_endpoints_limit(name, sizes):
    sent = messages(1200)
    with stub_for(name) as stub:
        results = provider(name, stub.url).send_batch(sent)
    assert stub.problems == []
    assert sorted(len(stub.api.recipients(s)) for s in stub.seen) == sorted(sizes)
    assert [r.outcome for r in results] == [Outcome.sent] * 1200
    assert Counter(stub.received()) == Counter(m.recipient for m in sent)
    assert_ids_in_order(stub, sent, results)


@pytest.mark.parametrize("name", ONE_AT_A_TIME)
def test_providers_without_a_batch_endpoint_keep_concurrency_requests_in_flight(name):
    sent = messages(50)
    # Every answer waits until 8 requests are waiting: a provider with fewer in flight would time out.
    with stub_for(name, hold_until=8) as stub:
        p = provider(name, stub.url, concurrency=8)
        results = p.send_batch(sent)
        p.close()
    assert stub.problems == []
    assert [r.outcome for r in results] == [Outcome.sent] * 50, {r.error for r in results}
    assert stub.max_in_flight == 8
    assert len(stub.seen) == 50 and len({s.client_port for s in stub.seen}) <= 8  # 8 keep-alive connections
    assert_ids_in_order(stub, sent, results)


def test_the_batch_requests_of_one_call_go_at_once():
    with stub_for("postmark", hold_until=3) as stub:
        results = provider("postmark", stub.url, concurrency=8).send_batch(messages(1200))
    assert stub.problems == [] and stub.max_in_flight == 3
    assert [r.outcome for r in results] == [Outcome.sent] * 1200


def test_concurrency_comes_from_the_sending_settings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[provider]\nname = "sendgrid"\n[sending]\nconcurrency = 12\n')
    assert provider_factory(load_settings(config, env={}, secret_key="k"), env=ENV)().options.concurrency == 12


def test_a_429_in_the_middle_throttles_the_rest_and_sends_nothing_twice_postmark():
    sent = messages(1200, special={700: "ratelimit"})
    with stub_for("postmark") as stub:
        results = provider("postmark", stub.url, concurrency=1).send_batch(sent)
    assert stub.problems == []
    assert [r.outcome for r in results[:500]] == [Outcome.sent] * 500
    throttled = results[500:]
    assert all(r.outcome is Outcome.temporary and r.throttled and r.retry_after == 7.0 for r in throttled)
    assert all(r.error.startswith("not sent: postmark HTTP 429") for r in results[1000:])
    # The third request never went: the stub saw the first two, each message once.
    assert stub.received() == [m.recipient for m in sent[:1000]]


def test_a_429_in_the_middle_throttles_the_rest_and_sends_nothing_twice_one_request_each():
    sent = messages(30, special={12: "ratelimit"})
    with stub_for("sendgrid") as stub:
        results = provider("sendgrid", stub.url, concurrency=1).send_batch(sent)
    assert [r.outcome for r in results[:12]] == [Outcome.sent] * 12
    assert all(r.throttled and 0 < r.retry_after <= 30 for r in results[12:])  # from X-RateLimit-Reset
    assert stub.received() == [m.recipient for m in sent[:13]]


def test_a_429_with_many_requests_in_flight_never_sends_a_message_twice():
    sent = messages(60, special={20: "ratelimit"})
    with stub_for("sendgrid") as stub:
        results = provider("sendgrid", stub.url, concurrency=8).send_batch(sent)
    received = Counter(stub.received())
    assert max(received.values()) == 1
    # Whatever was in flight when the 429 came finished; everything else came back throttled, unsent.
    for m, r in zip(sent, results):
        assert r.outcome is Outcome.sent or (r.throttled and r.retry_after is not None), r
        assert (r.outcome is Outcome.sent) == (m.recipient in received and "ratelimit" not in m.recipient)
    assert results[20].throttled and not results[20].error.startswith("not sent")


def test_a_dropped_connection_makes_exactly_that_requests_messages_uncertain():
    # (A read timeout takes the same path; it is tested with single messages, where no other
    # request's answer can be slower than the short timeout.)
    sent = messages(1200, special={600: "drop"})
    with stub_for("postmark") as stub:
        results = provider("postmark", stub.url, concurrency=3).send_batch(sent)
    assert stub.problems == []
    assert [r.outcome for r in results] == [Outcome.uncertain if 500 <= i < 1000 else Outcome.sent for i in range(1200)]
    assert all("no complete answer after the request was sent" in r.error for r in results[500:1000])
    assert Counter(stub.received()) == Counter(m.recipient for m in sent)  # all went out, once


def test_a_dropped_connection_is_uncertain_for_that_one_message_of_a_provider_without_batches():
    sent = messages(20, special={7: "drop"})
    with stub_for("mailgun") as stub:
        results = provider("mailgun", stub.url, concurrency=4).send_batch(sent)
    assert [r.outcome for r in results] == [Outcome.uncertain if i == 7 else Outcome.sent for i in range(20)]
    assert stub.unanswered == [sent[7].recipient]


@pytest.mark.parametrize("name, variable", [("postmark", "POSTMARK_TOKEN"), ("resend", "RESEND_API_KEY"),
                                            ("ses", "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")])
def test_refused_credentials_fail_every_message_unavailable_and_stop_the_batch(name, variable):
    wrong = {**ENV, "POSTMARK_TOKEN": "x", "RESEND_API_KEY": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    with stub_for(name) as stub:
        results = provider(name, stub.url, env=wrong, concurrency=1).send_batch(messages(1200))
    assert all(r.outcome is Outcome.temporary and r.unavailable and f"check {variable}" in r.error for r in results)
    assert len(stub.seen) == 1  # the first refusal stopped the rest: it would have been refused too


def test_a_server_error_fails_that_requests_messages_unavailable_and_the_unsent_ones_go_elsewhere():
    sent = messages(1200, special={600: "error503"})
    with stub_for("postmark") as stub:
        results = provider("postmark", stub.url, concurrency=1).send_batch(sent)
    assert [r.outcome for r in results[:500]] == [Outcome.sent] * 500
    assert all(r.outcome is Outcome.temporary and r.unavailable and r.code == 503 for r in results[500:])
    assert all(r.error.startswith("not sent: ") for r in results[1000:]) and len(stub.seen) == 2


def test_a_whole_batch_refused_by_resend_fails_each_of_its_messages():
    api = ResendApi(Expect(headers=dict(HEADERS)))
    api.respond = lambda seen, behaviours: Answer.json(422, {
        "statusCode": 422, "name": "validation_error", "message": "The `emails` field must contain at most 100 items."})
    with Stub(api) as stub:
        results = provider("resend", stub.url).send_batch(messages(3))
    assert all(r.outcome is Outcome.permanent and "at most 100 items" in r.error for r in results)


@pytest.mark.parametrize("name, body", [
    ("postmark", [{"ErrorCode": 0, "Message": "OK", "MessageID": "only-one"}]),
    ("postmark", {"ErrorCode": 0, "Message": "OK"}),
    ("resend", {"data": [{"id": "only-one"}]}),
    ("resend", {"data": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "errors": [{"index": 0, "message": "bad"}]}),
])
def test_a_success_that_does_not_say_which_messages_were_taken_is_uncertain(name, body):
    api = APIS[name](Expect(headers=dict(HEADERS)))
    api.respond = lambda seen, behaviours: Answer.json(200, body)
    with Stub(api) as stub:
        results = provider(name, stub.url).send_batch(messages(3))
    assert stub.problems == []
    assert all(r.outcome is Outcome.uncertain and "without one result per" in r.error for r in results)


def test_resend_deduplicates_exactly_the_same_batch_sent_again():
    sent = messages(5)
    with stub_for("resend") as stub:
        p = provider("resend", stub.url)
        first = p.send_batch(sent)
        again = p.send_batch(sent)
        other = p.send_batch(sent[:4])
    assert stub.problems == []
    assert [r.provider_message_id for r in again] == [r.provider_message_id for r in first]
    # Another set of Message-IDs is another request to Resend: those emails are sent again.
    assert stub.seen[2].headers["idempotency-key"] != stub.seen[0].headers["idempotency-key"]
    assert len(stub.api.delivered) == 9 and all(r.outcome is Outcome.sent for r in other)


def test_a_resend_batch_sent_again_with_other_content_is_uncertain_not_failed():
    """After a crash the same deliveries may be rendered again (new link tokens): Resend refuses the
    key with another payload, and the messages it took the first time must not be failed or resent."""
    import dataclasses

    sent = messages(3)
    rerendered = [dataclasses.replace(m, html=m.html + "<!-- again -->") for m in sent]
    with stub_for("resend") as stub:
        p = provider("resend", stub.url)
        assert all(r.outcome is Outcome.sent for r in p.send_batch(sent))
        again = p.send_batch(rerendered)
    assert [r.outcome for r in again] == [Outcome.uncertain] * 3
    assert "invalid_idempotent_request" in again[0].error and len(stub.api.delivered) == 3


def test_close_stops_the_worker_threads_and_the_next_batch_opens_new_connections():
    with stub_for("sendgrid") as stub:
        p = provider("sendgrid", stub.url, concurrency=2)
        assert all(r.outcome is Outcome.sent for r in p.send_batch(messages(4)))
        assert any(t.name.startswith("sendgrid-http") for t in threading.enumerate())
        p.close()
        assert not any(t.name.startswith("sendgrid-http") for t in threading.enumerate())
        assert all(r.outcome is Outcome.sent for r in p.send_batch(messages(4, start=2000)))
        p.close()
    before, after = {s.client_port for s in stub.seen[:4]}, {s.client_port for s in stub.seen[4:]}
    assert len(before) <= 2 and len(after) <= 2 and not before & after


def test_send_goes_to_the_single_message_endpoint_of_a_batch_provider():
    with stub_for("postmark") as stub, Stub(PostmarkApi(Expect(headers=dict(HEADERS)))) as other:
        assert provider("postmark", stub.url).send(message()).outcome is Outcome.sent
        assert provider("postmark", other.url).send_batch([message()])[0].outcome is Outcome.sent
    assert [s.path for s in stub.seen + other.seen] == ["/email", "/email/batch"]
