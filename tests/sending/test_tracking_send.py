"""Click and open tracking end to end: a real send to a loopback SMTP server, then the links and pixel followed."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine.clock import FixedClock
from engine.models import Delivery, DeliveryEvent, Link, LinkClick, Run
from engine.tokens import TokenSigner
from engine.web import create_app
from engine.web.tracking import PIXEL
from tests.conftest import write_settings
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink

from .test_send import cli, only_spring_sale

BASE = "http://127.0.0.1:8000"
MAILTO = "unsubscribe@example.com"
# Added to the project's copy of the template: a mailto link, and a link whose query needs HTML escaping.
EXTRA = """    <mj-section><mj-column><mj-text>
      <p><a href="mailto:help@example.com">Write to us</a> or read the
         <a href="https://shop.example.com/faq?topic=codes&amp;lang=en">FAQ</a>.</p>
    </mj-text></mj-column></mj-section>
"""
#: Where the tracked links of a spring-sale mail lead: the shop button and logo, two products, the FAQ.
TARGETS = {"https://shop.example.com/spring", "https://shop.example.com/p/tote", "https://shop.example.com/p/lunchbox",
           "https://shop.example.com/faq?topic=codes&lang=en"}


@pytest.fixture
def tracked_shop(project, settings, db):
    only_spring_sale(project)
    template = project / "templates" / "emails" / "seasonal_discount.mjml"
    source = template.read_text()
    footer = '    <mj-include path="partials/footer.mjml" />'
    template.write_text(source.replace(footer, EXTRA + footer))
    return project


def send(project, database_url, db, *args, tracking: str = "opens = true", contacts: int = 3):
    """`valuemail send spring-sale` to a loopback SMTP sink; the parsed messages and the settings used."""
    if contacts:
        add_contacts(db, contacts)
    with SmtpSink() as sink:
        settings = write_settings(project, database_url, extra=(
            f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\ntimeout = 5\n'
            f'[sender]\nunsubscribe_mailto = "{MAILTO}"\n[tracking]\n{tracking}\n'))
        result = cli(settings, "send", "spring-sale", *args)
        assert result.exit_code == 0, result.output
        return [item.parse() for item in sink.messages], settings


def parts(msg) -> tuple[str, str]:
    return msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content()


def hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'<a [^>]*href="([^"]*)"', html)]


def delivery_of(db, msg) -> Delivery:
    with Session(db) as s:
        return s.execute(select(Delivery).where(Delivery.message_id == msg["Message-ID"])).scalar_one()


def own_links(signer, delivery_id) -> dict[str, str]:
    return {"unsubscribe": f"{BASE}/u/{signer.sign('unsubscribe', delivery_id)}",
            "preferences": f"{BASE}/p/{signer.sign('preferences', delivery_id)}",
            "view": f"{BASE}/v/{signer.sign('view', delivery_id)}",
            "coupon": f"{BASE}/k/{signer.sign('coupon', delivery_id)}"}


def resolve(db, signer, delivery_id, url) -> str:
    """The URL a tracked link of `delivery_id` redirects to (checked against the links table)."""
    got_delivery, link_id = signer.unsign_ids("click", url.removeprefix(f"{BASE}/r/"), 2)
    assert got_delivery == delivery_id
    with Session(db) as s:
        return s.get(Link, link_id).url


@pytest.fixture
def app_for(db):
    def make(settings, clock):
        return create_app(settings=settings, engine=db, clock=clock, testing=True)
    return make


def test_every_http_link_is_rewritten_except_our_own_pages_and_mailto(tracked_shop, project, database_url, db):
    messages, settings = send(project, database_url, db)
    signer = TokenSigner(settings.secret_key)
    assert len(messages) == 3
    for msg in messages:
        delivery = delivery_of(db, msg)
        html, text = parts(msg)
        own = own_links(signer, delivery.id)
        found = hrefs(html)
        direct = [h for h in found if not h.startswith(f"{BASE}/r/")]
        assert direct == [own["coupon"], "mailto:help@example.com", own["preferences"], own["unsubscribe"], own["view"]]
        tracked = [h for h in found if h.startswith(f"{BASE}/r/")]
        assert {resolve(db, signer, delivery.id, h) for h in tracked} == TARGETS
        assert len(tracked) == 7  # the logo, the shop button, two per product and the FAQ
        for url in re.findall(r"https?://[^\s()<>]+", text):
            assert url.startswith(f"{BASE}/r/") or url in own.values(), url
        text_targets = {resolve(db, signer, delivery.id, u) for u in re.findall(rf"{BASE}/r/[^\s()]+", text)}
        assert text_targets == TARGETS
        assert "shop.example.com" not in text.replace("help@example.com", "")
        # Unsubscribing stays direct, as RFC 8058 needs.
        assert msg["List-Unsubscribe"] == f"<{own['unsubscribe']}>, <mailto:{MAILTO}?subject=unsubscribe>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        pixel = f'<img src="{BASE}/o/{signer.sign("open", delivery.id)}.gif" width="1" height="1" alt="">'
        assert html.count(pixel) == 1 and html.index(pixel) > html.rindex(own["view"])
        assert re.search(re.escape(pixel) + r"\s*</body>", html)
    with Session(db) as s:
        assert sorted(s.execute(select(Link.url)).scalars()) == sorted(TARGETS)  # one row per URL of the run


def test_following_a_link_redirects_and_counts_first_click_and_repeats(tracked_shop, project, database_url, db,
                                                                       app_for):
    messages, settings = send(project, database_url, db)
    signer = TokenSigner(settings.secret_key)
    msg = messages[0]
    delivery = delivery_of(db, msg)
    html, _ = parts(msg)
    faq = next(h for h in hrefs(html) if h.startswith(f"{BASE}/r/")
               and resolve(db, signer, delivery.id, h).endswith("faq?topic=codes&lang=en"))
    clock = FixedClock(T0)
    client = app_for(settings, clock).test_client()
    first = client.get(faq.removeprefix(BASE))
    assert first.status_code == 302 and first.headers["Location"] == "https://shop.example.com/faq?topic=codes&lang=en"
    clock.set(T0 + timedelta(hours=1))
    assert client.get(faq.removeprefix(BASE)).headers["Location"] == first.headers["Location"]
    with Session(db) as s:
        click = s.execute(select(LinkClick).where(LinkClick.delivery_id == delivery.id)).scalar_one()
        row = s.get(Delivery, delivery.id)
        events = s.execute(select(DeliveryEvent.type).where(DeliveryEvent.delivery_id == delivery.id)
                           .order_by(DeliveryEvent.id)).scalars().all()
        others = s.execute(select(func.count()).select_from(LinkClick)
                           .where(LinkClick.delivery_id != delivery.id)).scalar()
    assert (click.count, click.first_at, click.last_at) == (2, T0, T0 + timedelta(hours=1))
    assert (row.click_count, row.clicked_at, row.opened_at) == (2, T0, T0)
    assert events == ["clicked", "opened"] and others == 0


def test_a_foreign_or_forged_token_never_redirects(tracked_shop, project, database_url, db, app_for):
    first, settings = send(project, database_url, db)
    second, _ = send(project, database_url, db, "--again", contacts=0)
    signer = TokenSigner(settings.secret_key)
    mine = delivery_of(db, first[0])
    theirs = delivery_of(db, second[0])
    assert mine.run_id != theirs.run_id
    with Session(db) as s:
        foreign = s.execute(select(Link.id).where(Link.run_id == theirs.run_id)).scalars().first()
    client = app_for(settings, FixedClock(T0)).test_client()
    genuine = next(h for h in hrefs(parts(first[0])[0]) if h.startswith(f"{BASE}/r/")).removeprefix(BASE)
    token = genuine.removeprefix("/r/")
    forged = [f"/r/{signer.sign_ids('click', mine.id, foreign)}",  # signed, but a link of another run
              f"/r/{TokenSigner('another key').sign_ids('click', mine.id, foreign)}",
              "/r/" + token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
              "/r/" + token.split(".")[0] + "X." + token.split(".")[1]]
    for path in forged:
        response = client.get(path)
        assert response.status_code == 400, path
        assert "Location" not in response.headers and "Invalid link" in response.get_data(as_text=True)
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(LinkClick)).scalar() == 0
        assert s.execute(select(func.count()).where(Delivery.clicked_at.is_not(None))).scalar() == 0


def test_the_pixel_records_one_open_and_counts_loads(tracked_shop, project, database_url, db, app_for):
    messages, settings = send(project, database_url, db)
    msg = messages[0]
    delivery = delivery_of(db, msg)
    src = re.search(rf'<img src="{BASE}(/o/[^"]+\.gif)" width="1"', parts(msg)[0]).group(1)
    clock = FixedClock(T0)
    client = app_for(settings, clock).test_client()
    response = client.get(src)
    assert response.status_code == 200 and response.data == PIXEL and "no-store" in response.headers["Cache-Control"]
    clock.set(T0 + timedelta(days=1))
    client.get(src)
    with Session(db) as s:
        row = s.get(Delivery, delivery.id)
        events = s.execute(select(DeliveryEvent.type, DeliveryEvent.occurred_at)
                           .where(DeliveryEvent.delivery_id == delivery.id)).all()
    assert (row.opened_at, row.open_count, row.click_count) == (T0, 2, 0)
    assert events == [("opened", T0)]


def test_with_both_switches_off_mails_keep_their_links_and_have_no_pixel(tracked_shop, project, database_url, db):
    messages, settings = send(project, database_url, db, tracking="clicks = false\nopens = false")
    signer = TokenSigner(settings.secret_key)
    for msg in messages:
        html, text = parts(msg)
        delivery = delivery_of(db, msg)
        assert f"{BASE}/r/" not in html + text and f"{BASE}/o/" not in html + text
        own = own_links(signer, delivery.id)
        assert set(hrefs(html)) == TARGETS | {"mailto:help@example.com", *own.values()}
        assert msg["List-Unsubscribe"] == f"<{own['unsubscribe']}>, <mailto:{MAILTO}?subject=unsubscribe>"
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Link)).scalar() == 0


def test_opens_only_adds_the_pixel_and_leaves_the_links(tracked_shop, project, database_url, db):
    messages, settings = send(project, database_url, db, tracking="clicks = false\nopens = true")
    html, text = parts(messages[0])
    assert f"{BASE}/r/" not in html + text and html.count(f"{BASE}/o/") == 1
    assert TARGETS <= set(hrefs(html))


def test_a_test_send_has_tracked_links_that_redirect_without_counting(tracked_shop, project, database_url, db,
                                                                      app_for):
    messages, settings = send(project, database_url, db, "--test-to", "marketer@example.org")
    signer = TokenSigner(settings.secret_key)
    msg = messages[0]
    delivery = delivery_of(db, msg)
    with Session(db) as s:
        assert s.get(Run, delivery.run_id).is_test
    html, _ = parts(msg)
    tracked = [h for h in hrefs(html) if h.startswith(f"{BASE}/r/")]
    assert {resolve(db, signer, delivery.id, h) for h in tracked} == TARGETS
    client = app_for(settings, FixedClock(T0)).test_client()
    response = client.get(tracked[0].removeprefix(BASE))
    assert response.status_code == 302 and response.headers["Location"] in TARGETS
    pixel = re.search(rf'<img src="{BASE}(/o/[^"]+\.gif)"', html).group(1)
    assert client.get(pixel).data == PIXEL
    with Session(db) as s:
        row = s.get(Delivery, delivery.id)
        assert (row.click_count, row.open_count, row.clicked_at, row.opened_at) == (0, 0, None, None)
        assert s.execute(select(func.count()).select_from(LinkClick)).scalar() == 0
