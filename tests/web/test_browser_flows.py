"""Recipient flows in a real browser, as a recipient lives them: a real mail, its links, a phone.

Each flow sends a campaign with the real sender (`valuemail send` / `valuemail tick`, SMTP
provider) to a loopback aiosmtpd server, reads the received message, opens its links in Debian's
Chromium at 375 px against the app served by waitress (as in production, with "view in browser"
wired as `valuemail run` wires it), acts on the pages, and checks the outcome in the database.
Every page visited is checked for phone use (see tests.support.browser.Phone.check) and saved as a
full-page screenshot under test-artifacts/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import insert, select
from sqlmodel import Session

from engine import contests, surveys
from engine.cli import main
from engine.clock import Clock, FixedClock, SystemClock
from engine.commands.web import start_in_thread
from engine.models import (Contact, ContestEntry, Coupon, Delivery, KindOptOut, Order, Run, Suppression,
                           SurveyResponse)
from engine.rendering import Renderer
from engine.sending.view import make_view_renderer
from engine.tokens import TokenSigner
from engine.web import create_app
from tests.conftest import BACKENDS, write_settings
from tests.sending.test_send import only_spring_sale
from tests.support.browser import Mail, Phone, chromium, forge
from tests.support.data import add_contacts
from tests.support.smtpd import SmtpSink, free_port

UTC = timezone.utc
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- the browser, the server under test and the mailbox ------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each flow opens its own phones (contexts) in it."""
    with chromium() as started:
        yield started


@dataclass
class Site:
    """A project whose mails link to a live waitress server, sent through SMTP to a loopback sink."""

    project: Path
    database_url: str
    db: object
    browser: object
    sink: SmtpSink
    settings: object = None
    url: str = ""
    server: object = None
    phones: list[Phone] = field(default_factory=list)

    def start(self, clock: Clock) -> "Site":
        """Settings whose base_url is a free loopback port, then the app (on `clock`) served there by waitress."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.settings = write_settings(
            self.project, self.database_url, sending={"concurrency": 1},
            extra=f'[app]\nbase_url = "{self.url}"\n'
                  f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {self.sink.port}\ntimeout = 5\n')
        app = create_app(settings=self.settings, engine=self.db, clock=clock,
                         view_renderer=make_view_renderer(settings=self.settings,
                                                          renderer=Renderer(self.settings.templates_dir), clock=clock))
        self.server = start_in_thread(app, host="127.0.0.1", port=port)
        assert self.server.url == self.url
        return self

    def stop(self) -> None:
        for phone in self.phones:
            phone.close()
        if self.server is not None:
            self.server.stop()

    def valuemail(self, *args: str) -> str:
        """Run the command line on this project (in-process, as `valuemail --config ...`); its output."""
        result = CliRunner().invoke(main, ["--config", self.settings.source, *args],
                                    env={"VALUEMAIL_SECRET_KEY": "test-secret-key"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def mails(self, since: int = 0) -> dict[str, Mail]:
        """The messages received (from the `since`-th on), by recipient; one each."""
        found: dict[str, Mail] = {}
        for item in self.sink.messages[since:]:
            (to,) = item.recipients
            assert to not in found, f"{to} got two mails"
            found[to] = Mail(item.parse())
        return found

    def phone(self) -> Phone:
        phone = Phone(self.browser, self.url)
        self.phones.append(phone)
        return phone

    @property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.settings.secret_key)


@pytest.fixture
def site(project, database_url, db, browser):
    """Returns start(campaigns, clock): keeps those campaign files, serves the app, returns the Site."""
    with SmtpSink() as sink:
        made = Site(project=project, database_url=database_url, db=db, browser=browser, sink=sink)

        def start(campaigns: tuple[str, ...] = ("spring-sale",), *, clock: Clock | None = None) -> Site:
            if campaigns == ("spring-sale",):
                only_spring_sale(project)  # segments: gold (by attribute) and everyone
            else:
                for path in (project / "campaigns").glob("*.toml"):
                    if path.stem not in (*campaigns, "segments"):
                        path.unlink()
            return made.start(clock or SystemClock())

        try:
            yield start
        finally:
            made.stop()


def contact(db, email: str) -> Contact:
    with Session(db) as s:
        return s.execute(select(Contact).where(Contact.email_key == email)).scalars().one()


def contact_by_id(db, contact_id: int) -> Contact:
    with Session(db) as s:
        return s.get(Contact, contact_id)


def delivery_of(db, email: str, campaign: str) -> Delivery:
    with Session(db) as s:
        return s.execute(select(Delivery).join(Run, Run.id == Delivery.run_id)
                         .where(Delivery.email == email, Run.campaign_id == campaign)
                         .order_by(Delivery.id)).scalars().first()


def add_order(db, contact_id: int, order_id: str, placed_at: datetime, *, total_cents: int = 4990,
              status: str = "delivered") -> None:
    with db.begin() as conn:
        conn.execute(insert(Order).values(order_id=order_id, contact_id=contact_id, placed_at=placed_at,
                                          total_cents=total_cents, currency="EUR", status=status, updated_at=placed_at))


def english_contacts(db, n: int, *, start: int = 0) -> None:
    add_contacts(db, n, start=start, language="en", country="GB")


# -- 1. unsubscribe: the page, the RFC 8058 one-click POST, and the very next send -------------------

@pytest.mark.parametrize("database_url", [b for b in ("sqlite", "postgresql") if b in BACKENDS], indirect=True)
def test_an_unsubscribe_from_the_mail_stops_the_very_next_send(site, db):
    shop = site()
    english_contacts(db, 3)  # user0 unsubscribes in the browser, user1 by one-click POST, user2 stays
    shop.valuemail("send", "spring-sale")
    mails = shop.mails()
    assert sorted(mails) == ["user0@example.com", "user1@example.com", "user2@example.com"]

    mail = mails["user0@example.com"]
    link = mail.link("Unsubscribe")
    assert link.startswith(f"{shop.url}/u/")  # direct, never through the click redirect
    assert mail.message["List-Unsubscribe"] == f"<{link}>"
    phone = shop.phone()
    phone.open(link)
    assert phone.heading() == "Unsubscribe user0@example.com from Example Shop mails?"
    phone.check("flow-unsubscribe-confirm")
    phone.click("#confirm")
    assert phone.heading() == "You are unsubscribed"
    phone.check("flow-unsubscribe-done")
    user0 = contact(db, "user0@example.com")
    assert user0.status == "unsubscribed"
    with Session(db) as s:
        assert s.execute(select(Suppression.reason).where(Suppression.email_key == "user0@example.com")).scalar_one() \
            == "unsubscribe"

    # RFC 8058: the mailbox provider POSTs to the List-Unsubscribe URL, no cookies, no page.
    header = mails["user1@example.com"].message["List-Unsubscribe"]
    assert mails["user1@example.com"].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click = re.fullmatch(r"<(http://[^>]+)>", header).group(1)
    answer = requests.post(one_click, data={"List-Unsubscribe": "One-Click"}, allow_redirects=False, timeout=10)
    assert answer.status_code == 200 and "Location" not in answer.headers and not answer.history
    assert contact(db, "user1@example.com").status == "unsubscribed"

    seen = len(shop.sink.messages)
    assert "started run #2" in shop.valuemail("send", "spring-sale", "--again")
    assert sorted(shop.mails(since=seen)) == ["user2@example.com"]  # nothing for the two who left


# -- 2. preference centre: kinds of mail, language, download my data, erase me ------------------------

@SQLITE
def test_the_preference_centre_saves_choices_downloads_the_data_and_erases(site, db, tmp_path):
    shop = site()
    english_contacts(db, 2)
    alice = contact(db, "user0@example.com")
    add_order(db, alice.id, "EX-1001", datetime(2026, 9, 1, 10, tzinfo=UTC), total_cents=12990, status="shipped")
    add_order(db, alice.id, "EX-1002", datetime(2026, 10, 3, 10, tzinfo=UTC), total_cents=2450)
    shop.valuemail("send", "spring-sale")
    mail = shop.mails()["user0@example.com"]
    link = mail.link("Manage your preferences")
    assert link.startswith(f"{shop.url}/p/")

    phone = shop.phone()
    phone.open(link)
    assert phone.heading() == "Your preferences"
    page = phone.text()
    assert "EX-1001" in page and "EX-1002" in page and "Shipped" in page
    phone.check("flow-prefs")
    offers = phone.page.locator('input[name="kind"][value="seasonal_discount"]')
    assert offers.is_checked()
    offers.uncheck()
    phone.page.locator('select[name="language"]').select_option("nl")
    phone.click("#save")
    # The page now speaks the contact's new language.
    assert phone.heading() == "Je voorkeuren"
    assert "Je keuzes zijn opgeslagen." in phone.text()
    assert not phone.page.locator('input[name="kind"][value="seasonal_discount"]').is_checked()
    phone.check("flow-prefs-saved-nl")
    with Session(db) as s:
        assert s.execute(select(KindOptOut.kind).where(KindOptOut.contact_id == alice.id)).scalars().all() \
            == ["seasonal_discount"]
    assert contact_by_id(db, alice.id).language == "nl"

    # The opt-out holds at the next send: offers go to the other contact only.
    seen = len(shop.sink.messages)
    shop.valuemail("send", "spring-sale", "--again")
    assert sorted(shop.mails(since=seen)) == ["user1@example.com"]

    with phone.page.expect_download() as download:
        phone.page.locator("#download").tap()
    saved = tmp_path / "my-data.json"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "my-data.json"
    data = json.loads(saved.read_text())
    assert data["contact"]["email"] == "user0@example.com" and data["contact"]["language"] == "nl"
    assert [o["order_id"] for o in data["orders"]] == ["EX-1001", "EX-1002"]
    assert data["preferences"]["campaign_kinds_not_wanted"] == ["seasonal_discount"]

    phone.click("#erase")
    assert phone.heading() == "Je gegevens wissen?"
    phone.check("flow-erase-confirm")
    phone.click("#confirm-erase")
    assert phone.heading() == "Je gegevens zijn gewist"
    phone.check("flow-erased")
    erased = contact_by_id(db, alice.id)
    assert erased.erased_at is not None and erased.status == "unsubscribed"
    assert erased.email == f"erased-{alice.id}@erased.invalid" and erased.first_name == "" and erased.language is None
    # The mail's link now only says the data is gone.
    phone.open(link)
    assert phone.heading() == "Your data is erased"


# -- 3. survey: the one-click answer in the mail, then the page --------------------------------------

ORDERED = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
SURVEY_DUE = ORDERED + timedelta(days=7, hours=1)  # order-survey: seven days after the order


@SQLITE
def test_a_survey_answered_in_the_mail_then_completed_on_its_page(site, db):
    shop = site(("order-survey",), clock=FixedClock(SURVEY_DUE + timedelta(hours=2)))
    english_contacts(db, 1)
    alice = contact(db, "user0@example.com")
    add_order(db, alice.id, "EX-2001", ORDERED)
    output = shop.valuemail("tick", "--at", SURVEY_DUE.isoformat())
    assert "order-survey: started run" in output, output
    mail = shop.mails()["user0@example.com"]
    assert str(mail.message["Subject"]) == "Person0, how was your order EX-2001?"
    eight = mail.link("8")  # the 0-10 scale of the first question, one link each
    delivery = delivery_of(db, "user0@example.com", "order-survey")

    phone = shop.phone()
    phone.open(eight)
    assert phone.heading() == "Thank you — your answer is saved"
    phone.check("flow-survey-answer")
    with Session(db) as s:
        state = surveys.response_state(s, delivery_id=delivery.id)
        assert state.answers == {"recommend": 8} and not state.submitted
        if "/r/" in eight:  # tracked: the click that brought the answer counts as the first click
            assert s.get(Delivery, delivery.id).clicked_at is not None

    phone.click("text=Answer the other questions")
    assert phone.heading() == "Survey"
    assert phone.page.locator('input[name="recommend"][value="8"]').is_checked()  # prefilled with the click
    phone.check("flow-survey")
    phone.page.locator('#q-delivery label.scale-option:has(input[value="4"])').tap()
    phone.page.locator('#q-mattered_most label.choice:has-text("Delivery speed")').tap()
    phone.page.locator("#text-improve").fill("Pack it in less plastic, please.")
    phone.check("flow-survey-filled")
    phone.click("#send")
    assert phone.heading() == "Thank you"
    assert "Your answers go straight to the team" in phone.text()
    phone.check("flow-survey-thanks")
    with Session(db) as s:
        state = surveys.response_state(s, delivery_id=delivery.id)
        assert state.submitted
        assert state.answers == {"recommend": 8, "delivery": 4, "mattered_most": "Delivery speed",
                                 "improve": "Pack it in less plastic, please."}
        response = s.execute(select(SurveyResponse).where(SurveyResponse.delivery_id == delivery.id)).scalars().one()
        assert response.submitted_at is not None and response.contact_id == alice.id

    # The mail's answer links can no longer change a sent survey.
    phone.open(mail.link("2"))
    assert phone.heading() == "You already sent your answers"
    phone.check("flow-survey-closed")
    with Session(db) as s:
        assert surveys.response_state(s, delivery_id=delivery.id).answers["recommend"] == 8


# -- 4-6. view in browser, forged links, the coupon page ------------------------------------------

@SQLITE
def test_view_in_browser_forged_links_and_the_coupon_page(site, db):
    shop = site(clock=FixedClock(datetime(2027, 3, 21, 9, 0, tzinfo=UTC)))  # inside the offer's dates
    english_contacts(db, 1)
    shop.valuemail("send", "spring-sale")
    mail = shop.mails()["user0@example.com"]
    code = re.search(r"\bSPRING-[A-Z0-9-]+\b", mail.text).group(0)
    alice = contact(db, "user0@example.com")
    with Session(db) as s:
        assert s.execute(select(Coupon.code).where(Coupon.contact_id == alice.id)).scalar_one() == code

    # View in browser: the mail itself, personalised, on the phone; its links work from there.
    phone = shop.phone()
    view = mail.link("View in browser")
    assert view.startswith(f"{shop.url}/v/")
    phone.open(view)
    assert phone.heading() == "Fresh for spring"
    shown = phone.text()
    assert "Hi Person0," in shown and code in shown and "Organic cotton tote" in shown
    phone.check("flow-view-in-browser", tap_targets="")  # the mail's own layout, not our page CSS
    phone.click("text=Unsubscribe")  # the page is sandboxed; a tap still leaves it for our pages
    assert phone.heading() == "Unsubscribe user0@example.com from Example Shop mails?"

    # The coupon page, from the mail's own link to it.
    delivery = delivery_of(db, "user0@example.com", "spring-sale")
    coupon = mail.link("Show the code on its own page")
    assert coupon == f"{shop.url}/k/{shop.signer.sign('coupon', delivery.id)}"
    phone.open(coupon)
    assert phone.heading() == "Your discount code"
    assert phone.page.locator("#code").input_value() == code
    assert "15% off" in phone.text() and phone.page.locator("#expired, #redeemed").count() == 0
    phone.check("flow-coupon")

    # A forged link (a character of its token changed): the friendly 400 page, never a stack trace.
    for name, link in (("unsubscribe", mail.link("Unsubscribe")), ("prefs", mail.link("Manage your preferences")),
                       ("view", view), ("shop", mail.link("Shop now")), ("coupon", coupon)):
        forged = forge(link)
        assert forged != link
        response = phone.open(forged)
        assert response.status == 400, (name, forged)
        assert phone.heading() == "Invalid link"
        page = phone.text()
        assert "This link is not valid" in page and "Traceback" not in page and "File \"" not in page
        phone.check(f"flow-forged-{name}", status=400)
    with Session(db) as s:
        assert contact_by_id(db, alice.id).status == "subscribed" and s.execute(select(Suppression)).first() is None
        assert s.get(Delivery, delivery.id).clicked_at is None  # a forged click counts nothing


# -- 7. contest: join from the invitation, a friend enters through the share link ------------------

CONTEST_OPENS = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)  # 09:00 in Amsterdam, as spring-contest.toml says
CONTEST_INSIDE = CONTEST_OPENS + timedelta(days=2)


@SQLITE
def test_a_contest_entry_and_a_referral_that_counts_once(site, db):
    shop = site(("spring-contest",), clock=FixedClock(CONTEST_INSIDE))
    english_contacts(db, 1)
    output = shop.valuemail("tick", "--at", CONTEST_OPENS.isoformat())
    assert "spring-contest: started run" in output, output
    mail = shop.mails()["user0@example.com"]
    join = mail.link("Join the draw")
    referrer = contact(db, "user0@example.com")

    phone = shop.phone()
    phone.open(join)
    assert phone.page.url.startswith(f"{shop.url}/c/")
    assert phone.heading() == "Win a weekend on Texel"
    assert phone.page.locator("#commitment").inner_text().strip() != ""
    phone.check("flow-contest")
    phone.click("#join")
    assert phone.page.locator("#entered h2").inner_text() == "You are in!"
    assert phone.page.locator("#tickets").inner_text() == "You have 1 ticket."
    phone.check("flow-contest-entered")
    share = phone.page.locator("#share-link").input_value()
    assert share.startswith(f"{shop.url}/c/r/")
    with Session(db) as s:
        assert s.execute(select(ContestEntry.contact_id, ContestEntry.referred_by)).all() == [(referrer.id, None)]

    # A friend opens the share link on their own phone and asks for the entry mail.
    friend = shop.phone()
    friend.open(share)
    assert "A friend invited you to join this prize draw." in friend.text()
    friend.check("flow-contest-share")
    friend.page.locator("#email").fill("friend@example.org")
    friend.click("#send")
    assert friend.page.locator("#sent").is_visible()
    friend.check("flow-contest-check-inbox")
    buddy = contact(db, "friend@example.org")
    with Session(db) as s:  # asking is not entering: a confirmation mail is queued, nothing more
        assert s.execute(select(Delivery.status, Delivery.data).where(Delivery.contact_id == buddy.id)).all() == [
            ("queued", {"mail": "confirm", "referrer": referrer.id})]
        assert s.execute(select(ContestEntry.contact_id)).scalars().all() == [referrer.id]
    seen = len(shop.sink.messages)
    shop.valuemail("tick", "--at", CONTEST_INSIDE.isoformat())  # the queued confirmation goes out
    confirmation = shop.mails(since=seen)["friend@example.org"]
    friend.open(confirmation.link("Confirm my entry"))
    assert friend.page.url.startswith(f"{shop.url}/c/confirm/")
    assert "friend@example.org" in friend.text()
    friend.check("flow-contest-confirm")
    friend.click("#confirm")
    assert friend.page.locator("#entered h2").inner_text() == "You are in!"
    friend.check("flow-contest-friend-entered")
    # Confirming again (the mail's link opened twice) changes nothing.
    friend.open(confirmation.link("Confirm my entry"))
    assert friend.page.locator("#confirm").count() == 0

    with Session(db) as s:
        assert sorted(s.execute(select(ContestEntry.contact_id, ContestEntry.referred_by)).all()) == sorted(
            [(referrer.id, None), (buddy.id, referrer.id)])
        assert contests.tickets(s, "spring-contest", referrer.id, bonus_entries_per_referral=2) == 3
    phone.open(join)
    assert phone.page.locator("#friends").inner_text() == "1 friend entered through your link."
    assert phone.page.locator("#tickets").inner_text() == "You have 3 tickets."
    phone.check("flow-contest-referral-counted")
