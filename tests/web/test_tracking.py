"""Tracking routes: /r/<token> counts a click and redirects only to a link of the mail's run; /o/<token>.gif opens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from engine.db import session_scope
from engine.models import Delivery, DeliveryEvent, Link, LinkClick
from engine.web.tracking import PIXEL

from .factories import T0, make_campaign, make_contact, make_delivery, make_run

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def mail(db):
    """Alice's delivery of run 1 with two links; run 2 (Bob) has its own link; run 3 is a test run."""
    with session_scope(db) as s:
        campaign = make_campaign(s)
        run1 = make_run(s, campaign)
        run2 = make_run(s, campaign, occurrence_at=T0 + timedelta(days=1))
        test_run = make_run(s, campaign, occurrence_at=T0 + timedelta(days=2), is_test=True)
        alice = make_contact(s, "alice@example.com")
        bob = make_contact(s, "bob@example.com")
        links = [Link(run_id=run1.id, url="https://example.com/spring?utm=mail&x=1", created_at=T0),
                 Link(run_id=run1.id, url="https://example.com/ünïcode path", created_at=T0),
                 Link(run_id=run2.id, url="https://example.com/bob-only", created_at=T0),
                 Link(run_id=test_run.id, url="https://example.com/test", created_at=T0)]
        s.add_all(links)
        s.flush()
        return {
            "delivery": make_delivery(s, run1, alice, status="sent").id,
            "bob": make_delivery(s, run2, bob, status="sent").id,
            "test": make_delivery(s, test_run, alice, status="sent").id,
            "spring": links[0].id, "unicode": links[1].id, "bob_link": links[2].id, "test_link": links[3].id,
        }


def click_url(signer, delivery_id, link_id) -> str:
    return f"/r/{signer.sign_ids('click', delivery_id, link_id)}"


def pixel_url(signer, delivery_id) -> str:
    return f"/o/{signer.sign('open', delivery_id)}.gif"


def state(db, delivery_id) -> dict:
    with Session(db) as s:
        d = s.get(Delivery, delivery_id)
        return {
            "opened_at": d.opened_at, "open_count": d.open_count, "clicked_at": d.clicked_at,
            "click_count": d.click_count,
            "clicks": {c.link_id: (c.first_at, c.last_at, c.count)
                       for c in s.exec(select(LinkClick).where(LinkClick.delivery_id == delivery_id)).all()},
            "events": [(e.type, e.occurred_at, e.data) for e in s.exec(
                select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id)
                .order_by(DeliveryEvent.id)).all()],
        }


def nothing_recorded(db, *delivery_ids) -> bool:
    with Session(db) as s:
        return (not s.exec(select(LinkClick)).all() and not s.exec(select(DeliveryEvent)).all()
                and all(s.get(Delivery, d).open_count == s.get(Delivery, d).click_count == 0
                        and s.get(Delivery, d).opened_at is None and s.get(Delivery, d).clicked_at is None
                        for d in delivery_ids))


def test_a_click_redirects_to_the_links_url_and_records_the_first_click(client, db, signer, clock, mail):
    response = client.get(click_url(signer, mail["delivery"], mail["spring"]))
    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.com/spring?utm=mail&x=1"
    assert response.headers["Cache-Control"] == "no-store"
    got = state(db, mail["delivery"])
    assert got["clicked_at"] == T0 and got["click_count"] == 1
    assert got["opened_at"] == T0 and got["open_count"] == 0  # a click implies an open; no pixel was loaded
    assert got["clicks"] == {mail["spring"]: (T0, T0, 1)}
    assert got["events"] == [("clicked", T0, {"url": "https://example.com/spring?utm=mail&x=1",
                                              "link_id": mail["spring"]}),
                             ("opened", T0, {"via": "click"})]


def test_clicking_again_counts_but_keeps_the_first_click(client, db, signer, clock, mail):
    url = click_url(signer, mail["delivery"], mail["spring"])
    client.get(url)
    later = T0 + timedelta(hours=3)
    clock.set(later)
    assert client.get(url).status_code == 302
    got = state(db, mail["delivery"])
    assert got["clicks"] == {mail["spring"]: (T0, later, 2)}
    assert got["clicked_at"] == T0 and got["click_count"] == 2 and got["opened_at"] == T0
    assert [e[0] for e in got["events"]] == ["clicked", "opened"]  # repeats only move the counters
    clock.set(later + timedelta(minutes=1))
    response = client.get(click_url(signer, mail["delivery"], mail["unicode"]))
    assert response.headers["Location"] == "https://example.com/%C3%BCn%C3%AFcode%20path"
    got = state(db, mail["delivery"])
    assert got["click_count"] == 3 and got["clicked_at"] == T0 and len(got["clicks"]) == 2
    assert [e[0] for e in got["events"]] == ["clicked", "opened", "clicked"]


def test_a_link_of_another_run_is_refused_whatever_the_signature(client, db, signer, mail):
    for link_id in (mail["bob_link"], mail["test_link"], mail["test_link"] + 100):
        response = client.get(click_url(signer, mail["delivery"], link_id))
        assert response.status_code == 400 and "Location" not in response.headers
        assert "Invalid link" in response.get_data(as_text=True)
    assert nothing_recorded(db, mail["delivery"], mail["bob"])


@pytest.mark.parametrize("make", [
    lambda signer, mail: click_url(signer, mail["delivery"], mail["spring"])[:-1] + "x",  # altered signature
    lambda signer, mail: click_url(signer, mail["delivery"], mail["spring"]).replace("/r/W", "/r/X"),
    lambda signer, mail: f"/r/{signer.sign('click', mail['delivery'])}",  # a bare id, not [delivery, link]
    lambda signer, mail: f"/r/{signer.sign_ids('open', mail['delivery'], mail['spring'])}",  # another purpose
    lambda signer, mail: f"/r/{signer.sign_ids('click', mail['delivery'], mail['spring'], 1)}",
    lambda signer, mail: "/r/",
    lambda signer, mail: "/r/https:evil.example.com",
])
def test_forged_or_altered_click_tokens_get_the_friendly_400(client, db, signer, mail, make):
    response = client.get(make(signer, mail))
    assert response.status_code == 400 and "Location" not in response.headers
    assert "This link is not valid" in response.get_data(as_text=True)
    assert nothing_recorded(db, mail["delivery"])


def test_a_click_from_a_deleted_delivery_is_a_friendly_404(client, db, signer, mail):
    url = click_url(signer, mail["bob"], mail["bob_link"])
    with session_scope(db) as s:
        s.delete(s.get(Delivery, mail["bob"]))
    response = client.get(url)
    assert response.status_code == 404 and "Location" not in response.headers


def test_test_run_clicks_redirect_without_counting(client, db, signer, mail):
    response = client.get(click_url(signer, mail["test"], mail["test_link"]))
    assert response.status_code == 302 and response.headers["Location"] == "https://example.com/test"
    assert nothing_recorded(db, mail["test"])


def test_a_head_request_redirects_without_counting(client, db, signer, mail):
    response = client.head(click_url(signer, mail["delivery"], mail["spring"]))
    assert response.status_code == 302
    assert nothing_recorded(db, mail["delivery"])


def test_the_pixel_records_the_first_open_once_and_counts_every_load(client, db, signer, clock, mail):
    response = client.get(pixel_url(signer, mail["delivery"]))
    assert response.status_code == 200 and response.mimetype == "image/gif" and response.data == PIXEL
    assert "no-store" in response.headers["Cache-Control"] and "no-cache" in response.headers["Cache-Control"]
    later = T0 + timedelta(days=1)
    clock.set(later)
    client.get(pixel_url(signer, mail["delivery"]))
    got = state(db, mail["delivery"])
    assert got["opened_at"] == T0 and got["open_count"] == 2
    assert got["events"] == [("opened", T0, {"via": "pixel"})]
    assert got["clicked_at"] is None and got["click_count"] == 0


def test_a_pixel_after_a_click_counts_the_load_but_is_not_a_new_first_open(client, db, signer, mail):
    client.get(click_url(signer, mail["delivery"], mail["spring"]))
    client.get(pixel_url(signer, mail["delivery"]))
    got = state(db, mail["delivery"])
    assert got["open_count"] == 1 and [e[0] for e in got["events"]] == ["clicked", "opened"]


@pytest.mark.parametrize("make", [
    lambda signer, mail: pixel_url(signer, mail["delivery"])[:-6] + "x.gif",
    lambda signer, mail: f"/o/{signer.sign('view', mail['delivery'])}.gif",
    lambda signer, mail: "/o/.gif",
    lambda signer, mail: "/o/%00.gif",
    lambda signer, mail: f"/o/{signer.sign('open', 10**12)}.gif",  # no such delivery
    lambda signer, mail: pixel_url(signer, mail["test"]),  # test runs are not counted
])
def test_a_bad_or_uncounted_pixel_still_gets_the_image_and_records_nothing(client, db, signer, mail, make):
    response = client.get(make(signer, mail))
    assert response.status_code == 200 and response.data == PIXEL and response.mimetype == "image/gif"
    assert nothing_recorded(db, mail["delivery"], mail["test"])


def test_a_head_request_for_the_pixel_records_nothing(client, db, signer, mail):
    assert client.head(pixel_url(signer, mail["delivery"])).status_code == 200
    assert nothing_recorded(db, mail["delivery"])


def test_unsubscribing_puts_one_event_on_the_deliverys_timeline(client, db, signer, clock, mail):
    url = f"/u/{signer.sign('unsubscribe', mail['delivery'])}"
    assert client.post(url, data=ONE_CLICK).status_code == 200
    clock.set(T0 + timedelta(minutes=5))
    assert client.post(url, data=ONE_CLICK).status_code == 200  # mail clients repeat the one-click POST
    assert state(db, mail["delivery"])["events"] == [("unsubscribed", T0, {"reason": "unsubscribe"})]
