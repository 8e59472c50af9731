"""Contest pages: /c/<token> (join the draw), /c/r/<token> (share link) and /c/confirm/<token> (its mail's link)."""

from __future__ import annotations

import html as htmlmod
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from engine import contests
from engine.campaigns import load_campaign
from engine.clock import FixedClock
from engine.db import session_scope
from engine.models import TRANSACTIONAL_ONLY, Contact, ContestEntry, Delivery, Event, Run, Suppression
from engine.providers import provider_factory
from engine.rendering import Renderer
from engine.sending import ledger
from engine.sending.worker import Sender
from tests.sending.test_send import smtp_settings
from tests.support.data import add_contacts, database_state
from tests.support.smtpd import SmtpSink

UTC = timezone.utc
CAMPAIGN = "spring-contest"
OPENS = datetime(2027, 4, 6, 7, 0, tzinfo=UTC)  # 09:00 in Amsterdam, as the campaign file says
CLOSES = datetime(2027, 4, 27, 21, 59, 59, tzinfo=UTC)
INSIDE = OPENS + timedelta(days=2)
BONUS = 2  # bonus_entries_per_referral of the example contest
CONFIRM_BUTTON = re.compile(r'href="http://127\.0\.0\.1:8000(/[^"]+)"[^>]*>Confirm my entry</a>')


@pytest.fixture
def clock():
    """The web app's clock, inside the entry window unless a test moves it."""
    return FixedClock(INSIDE)


@pytest.fixture
def invited(db, settings, signer):
    """The example contest opened and its invitation sent to user0-2 (Dutch) and user10-11 (English).

    Returns {address: (contact id, entry-link path)}.
    """
    campaign = load_campaign(settings.campaigns_dir / f"{CAMPAIGN}.toml", settings=settings, segment_names=None,
                             today=None)
    add_contacts(db, 3)
    add_contacts(db, 2, start=10, language="en", country="DE")
    found = {}
    with session_scope(db) as s:
        ledger.sync_campaign(s, campaign, now=OPENS)
        contests.open_contest(s, CAMPAIGN, now=OPENS)
        run, _ = ledger.create_run(s, campaign, occurrence_at=OPENS, now=OPENS)
        run.status, run.total = "finished", 5
        for contact in s.execute(select(Contact).order_by(Contact.id)).scalars():
            delivery = Delivery(run_id=run.id, contact_id=contact.id, email=contact.email, status="sent", attempts=1,
                                segment="benelux_dutch" if contact.language == "nl" else "everyone", data={},
                                created_at=OPENS, updated_at=OPENS)
            s.add(delivery)
            s.flush()
            found[contact.email] = (contact.id, f"/c/{signer.sign('contest', delivery.id)}")
    return found


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def post_form(client, path: str, **fields):
    """Open the page, then post its form with the page's CSRF token and `fields`."""
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf(page.text), **fields})


def entries(db) -> list[tuple[int, int | None]]:
    with Session(db) as s:
        rows = s.execute(select(ContestEntry.contact_id, ContestEntry.referred_by).order_by(ContestEntry.id))
        return [tuple(row) for row in rows]


def tickets(db, contact_id: int) -> int:
    with Session(db) as s:
        return contests.tickets(s, CAMPAIGN, contact_id, bonus_entries_per_referral=BONUS)


def confirmations(db) -> list[tuple[str, dict, str]]:
    """(address, data, status) of every queued or sent confirmation mail."""
    with Session(db) as s:
        rows = s.execute(select(Delivery.email, Delivery.data, Delivery.status).join(Run, Run.id == Delivery.run_id)
                         .where(Run.transactional.is_(True)).order_by(Delivery.id)).all()
    return [tuple(r) for r in rows if (r[1] or {}).get("mail") == "confirm"]


def share_path(settings, contact_id: int) -> str:
    return urlsplit(contests.share_url(settings.secret_key, "http://x", CAMPAIGN, contact_id)).path


def confirm_path(settings, email: str, referrer: int | None, *, at: datetime = INSIDE) -> str:
    return urlsplit(contests.confirm_url(settings.secret_key, "http://x", CAMPAIGN, email, referrer, now=at)).path


def text_of(page: str) -> str:
    return htmlmod.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


# -- the invitation's page ----------------------------------------------------------------------------

def test_the_page_shows_prize_window_winners_and_commitment(client, db, invited):
    _, path = invited["user10@example.com"]
    page = client.get(path)
    assert page.status_code == 200
    with Session(db) as s:
        commitment = contests.get_contest(s, CAMPAIGN).seed_hash
    text = text_of(page.text)
    assert "A weekend for two at an eco-lodge on Texel" in text and "Win a weekend on Texel" in text
    # The window in the configured timezone (Europe/Amsterdam), not UTC.
    assert "You can enter from 6 April 2027, 09:00 CEST until 27 April 2027, 23:59 CEST." in text
    assert "The winners are drawn on 28 April 2027, 12:00 CEST" in text and "3 winners will be drawn." in text
    assert f'id="commitment">{commitment}</code>' in page.text and "sha256sum" in text
    assert "Open to subscribers aged 18 or over" in text  # the conditions
    assert 'id="join"' in page.text and 'name="csrf_token"' in page.text
    assert "You are in" not in text and "seed, revealed" not in text


def test_joining_enters_once_and_shows_tickets_and_the_share_link(client, db, settings, invited):
    contact_id, path = invited["user10@example.com"]
    token = csrf(client.get(path).text)
    first = client.post(path, data={"csrf_token": token})
    assert first.status_code == 303 and first.headers["Location"] == path
    page = client.get(path).text
    assert "You are in!" in page and 'id="tickets">You have 1 ticket.' in page
    assert "No friends have entered through your link yet." in page and 'id="join"' not in page
    link = re.search(r'id="share-link" class="contest-share-link" type="text" readonly value="([^"]+)"', page).group(1)
    assert contests.referrer_of(settings.secret_key, link.rsplit("/", 1)[1]) == (CAMPAIGN, contact_id)
    assert 'href="mailto:?subject=' in page  # sharing works without JavaScript
    again = client.post(path, data={"csrf_token": token})  # a second tab, or a double tap
    assert again.status_code == 303
    assert entries(db) == [(contact_id, None)] and tickets(db, contact_id) == 1


def test_a_dutch_contact_sees_the_page_in_dutch(client, invited):
    _, path = invited["user0@example.com"]
    text = text_of(client.get(path).text)
    assert "Een weekend Texel, vlak bij huis" in text  # the contact's segment variant, as in the mail
    assert "Een weekend voor twee in een eco-lodge op Texel" in text and "Doe mee aan de loting" in text
    assert "Meedoen kan van 6 april 2027 om 09:00 CEST tot 27 april 2027 om 23:59 CEST." in text
    assert "Er worden 3 winnaars geloot." in text and "Een eerlijke loting" in text and "Voorwaarden" in text
    assert "Join the draw" not in text and "A weekend for two" not in text


@pytest.mark.parametrize("when, expected", [
    (OPENS - timedelta(seconds=1), "Entries open on 6 April 2027, 09:00 CEST."),
    (CLOSES + timedelta(seconds=1), "Entries closed on 27 April 2027, 23:59 CEST."),
])
def test_outside_the_window_the_page_says_so_and_a_post_is_refused_politely(client, clock, db, invited, when,
                                                                            expected):
    contact_id, path = invited["user10@example.com"]
    token = csrf(client.get(path).text)
    clock.set(when)
    page = client.get(path)
    assert page.status_code == 200 and expected in text_of(page.text) and 'id="join"' not in page.text
    refused = client.post(path, data={"csrf_token": token})
    assert refused.status_code == 409 and expected in text_of(refused.text)
    assert entries(db) == [] and tickets(db, contact_id) == 0


def test_after_the_draw_the_page_reveals_the_seed(client, clock, db, invited, settings):
    contact_id, path = invited["user10@example.com"]
    post_form(client, path)
    with session_scope(db) as s:
        rules = contests.ContestRules.from_section(
            contests.stored_campaign(s, CAMPAIGN, settings=settings).section, tz=settings.tz)
        result = contests.draw(s, CAMPAIGN, rules=rules, now=CLOSES + timedelta(days=1))
    clock.set(CLOSES + timedelta(days=2))
    page = client.get(path).text
    assert f'id="seed">{result.seed}</code>' in page and "You are in!" in page
    assert "The draw took place on 28 April 2027, 23:59 CEST." in text_of(page) and 'id="share-link"' not in page
    other = client.get(invited["user11@example.com"][1]).text
    assert "Entries closed on 27 April 2027, 23:59 CEST." in text_of(other) and 'id="join"' not in other
    assert f'id="seed">{result.seed}</code>' in other and result.commitment in other


def test_forged_altered_and_foreign_tokens_get_the_friendly_400(client, db, settings, signer, invited):
    contact_id, path = invited["user10@example.com"]
    token = path.rsplit("/", 1)[1]
    referral = contests.referral_token(settings.secret_key, CAMPAIGN, contact_id)
    confirm = confirm_path(settings, "friend@example.org", contact_id).rsplit("/", 1)[1]
    other_key = contests.confirm_token("another-key", CAMPAIGN, "friend@example.org", contact_id, now=INSIDE)
    bad = [
        f"/c/{token[:-2]}xx", f"/c/{signer.sign('survey', 1)}", f"/c/{referral}",
        f"/c/r/{referral[:-2]}xx", f"/c/r/{token}", f"/c/r/{confirm}",
        f"/c/confirm/{confirm[:-3]}abc", f"/c/confirm/{other_key}", f"/c/confirm/{referral}", "/c/confirm/x",
    ]
    for url in bad:
        for method in ("GET", "POST"):
            response = client.open(url, method=method, data={"email": "friend@example.org"})
            assert response.status_code == 400, (method, url, response.status_code)
            assert "Invalid link" in response.text or "Please try again" in response.text, url
    assert entries(db) == [] and confirmations(db) == []


def test_a_test_send_link_never_enters_anyone(client, db, signer, invited):
    contact_id, _ = invited["user10@example.com"]
    with session_scope(db) as s:
        campaign = s.get(Run, 1)
        run = Run(campaign_id=campaign.campaign_id, occurrence_at=INSIDE, status="finished", is_test=True,
                  definition=campaign.definition, created_at=INSIDE)
        s.add(run)
        s.flush()
        delivery = Delivery(run_id=run.id, contact_id=contact_id, email="marketer@example.com", segment="everyone",
                            status="sent", attempts=1, data={}, created_at=INSIDE, updated_at=INSIDE)
        s.add(delivery)
        s.flush()
        path = f"/c/{signer.sign('contest', delivery.id)}"
    response = client.get(path)
    assert response.status_code == 400 and "Invalid link" in response.text
    assert entries(db) == []


def test_every_post_needs_the_csrf_token(client, db, settings, invited):
    contact_id, path = invited["user10@example.com"]
    for url, data in ((path, {}), (share_path(settings, contact_id), {"email": "friend@example.org"}),
                      (confirm_path(settings, "friend@example.org", contact_id), {})):
        for form in (data, {**data, "csrf_token": "forged"}):
            response = client.post(url, data=form)
            assert response.status_code == 400 and "Please try again" in response.text, url
    assert entries(db) == [] and confirmations(db) == []
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(Contact)).scalar() == 5  # nobody was created


# -- a share link and its confirmation mail -------------------------------------------------------------

def test_a_friend_enters_through_the_share_link_confirmed_by_a_mail_from_the_real_sender(
        client, db, settings, project, database_url, invited):
    referrer, path = invited["user10@example.com"]
    post_form(client, path)
    share = share_path(settings, referrer)
    form = client.get(share)
    assert form.status_code == 200 and 'name="email"' in form.text and "A friend invited you" in form.text
    assert "A weekend for two" in form.text and "sha256sum" in form.text
    sent = client.post(share, data={"csrf_token": csrf(form.text), "email": "Friend@Example.org"})
    assert sent.status_code == 303 and sent.headers["Location"] == f"{share}?sent=1"
    assert "Check your inbox" in client.get(sent.headers["Location"]).text
    # Asking again before the first mail went out queues nothing more.
    assert client.post(share, data={"csrf_token": csrf(form.text), "email": "friend@example.org"}).status_code == 303
    assert confirmations(db) == [("Friend@example.org",  # the domain lower-cased by email-validator
                                    {"mail": "confirm", "referrer": referrer}, "queued")]
    with Session(db) as s:
        friend = s.execute(select(Contact).where(Contact.email_key == "friend@example.org")).scalars().one()
    assert friend.status == TRANSACTIONAL_ONLY and friend.language == "en"  # no newsletter without consent
    assert entries(db) == [(referrer, None)] and tickets(db, referrer) == 1  # asking is not entering

    with SmtpSink() as sink:
        smtp = smtp_settings(project, database_url, sink.port)
        Sender(engine=db, settings=smtp, clock=FixedClock(INSIDE), provider_factory=provider_factory(smtp),
               renderer=Renderer(smtp.templates_dir)).drain(wait_for_retries=False)
        received = sink.messages
    assert len(received) == 1 and received[0].recipients == ["Friend@example.org"]
    mail = received[0].parse()
    assert str(mail["Subject"]) == "Please confirm your entry in our prize draw"
    body = mail.get_body(("html",)).get_content()
    assert "A weekend for two at an eco-lodge on Texel" in body
    (link,) = CONFIRM_BUTTON.findall(body)
    if not link.startswith("/c/confirm/"):  # click tracking is on: the button goes through /r/ first
        tracked = client.get(link)
        assert tracked.status_code in (302, 303)
        link = urlsplit(tracked.headers["Location"]).path
    assert link.startswith("/c/confirm/")
    assert confirmations(db)[0][2] == "sent"

    page = client.get(link)
    assert page.status_code == 200 and "Friend@example.org" in page.text and 'id="confirm"' in page.text
    assert 'name="newsletter" value="yes" id="newsletter">' in page.text  # offered, never pre-ticked
    done = client.post(link, data={"csrf_token": csrf(page.text)})
    assert done.status_code == 303 and done.headers["Location"] == link
    entered = client.get(link).text
    assert "You are in!" in entered and 'id="share-link"' in entered
    assert entries(db) == [(referrer, None), (friend.id, referrer)]
    assert tickets(db, referrer) == 1 + BONUS and tickets(db, friend.id) == 1
    # Confirming twice, or the same friend through the mail's link again, counts once.
    assert client.post(link, data={"csrf_token": csrf(page.text)}).status_code == 303
    assert entries(db) == [(referrer, None), (friend.id, referrer)] and tickets(db, referrer) == 1 + BONUS
    assert "1 friend entered through your link." in client.get(path).text
    with Session(db) as s:
        assert s.get(Contact, friend.id).status == TRANSACTIONAL_ONLY


def test_the_answer_is_the_same_for_a_contact_a_stranger_and_a_suppressed_address(client, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    share = share_path(settings, referrer)
    with session_scope(db) as s:
        s.add(Suppression(email_key="gone@example.org", reason="unsubscribe", created_at=INSIDE))
    token = csrf(client.get(share).text)
    answers = []
    for address in ("user1@example.com", "stranger@example.org", "gone@example.org"):
        response = client.post(share, data={"csrf_token": token, "email": address})
        location = response.headers["Location"]
        answers.append((response.status_code, location, client.get(location).text))
    assert answers[0] == answers[1] == answers[2]
    # Mail went to the contact and the stranger; never to the suppressed address, which is not stored either.
    assert [(email, status) for email, _, status in confirmations(db)] == [
        ("user1@example.com", "queued"), ("stranger@example.org", "queued")]
    with Session(db) as s:
        assert s.execute(select(Contact).where(Contact.email_key == "gone@example.org")).first() is None
        assert s.execute(select(Contact.status).where(Contact.email_key == "user1@example.com")).scalar() == \
            "subscribed"


def test_a_confirmation_is_queued_at_most_once_per_cooldown(client, clock, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    share = share_path(settings, referrer)
    token = csrf(client.get(share).text)
    for _ in range(3):
        client.post(share, data={"csrf_token": token, "email": "friend@example.org"})
    assert len(confirmations(db)) == 1
    with session_scope(db) as s:
        s.execute(Delivery.__table__.update().values(status="sent"))
    clock.set(INSIDE + timedelta(minutes=5))
    client.post(share, data={"csrf_token": token, "email": "friend@example.org"})
    assert len(confirmations(db)) == 1  # sent five minutes ago: still nothing new
    clock.set(INSIDE + contests.CONFIRM_COOLDOWN + timedelta(seconds=1))
    client.post(share, data={"csrf_token": token, "email": "friend@example.org"})
    assert [status for _, _, status in confirmations(db)] == ["sent", "queued"]


def test_an_invalid_address_is_shown_again_with_a_message(client, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    share = share_path(settings, referrer)
    response = post_form(client, share, email="not an address")
    assert response.status_code == 400 and "Please enter a valid email address" in response.text
    assert 'value="not an address"' in response.text and 'aria-invalid="true"' in response.text
    assert confirmations(db) == []


def test_the_share_page_speaks_the_visitors_language(client, settings, invited):
    dutch_referrer, _ = invited["user0@example.com"]
    english_referrer, _ = invited["user10@example.com"]
    assert "Je e-mailadres" in client.get(share_path(settings, dutch_referrer)).text  # the referrer's language
    english = client.get(share_path(settings, dutch_referrer), headers={"Accept-Language": "en-GB,en;q=0.8"}).text
    assert "Your email address" in english and "Je e-mailadres" not in english
    dutch = client.get(share_path(settings, english_referrer), headers={"Accept-Language": "nl-BE,nl;q=0.9"}).text
    assert "Stuur me de deelnamelink" in dutch and "Meedoen kan van 6 april 2027 om 09:00 CEST" in dutch


@pytest.mark.parametrize("when, expected", [
    (OPENS - timedelta(minutes=1), "Entries open on 6 April 2027, 09:00 CEST."),
    (CLOSES + timedelta(minutes=1), "Entries closed on 27 April 2027, 23:59 CEST."),
])
def test_outside_the_window_the_share_page_takes_no_address(client, clock, db, settings, invited, when, expected):
    referrer, _ = invited["user10@example.com"]
    share = share_path(settings, referrer)
    token = csrf(client.get(share).text)
    clock.set(when)
    page = client.get(share)
    assert page.status_code == 200 and expected in text_of(page.text) and 'name="email"' not in page.text
    refused = client.post(share, data={"csrf_token": token, "email": "friend@example.org"})
    assert refused.status_code == 409 and expected in text_of(refused.text)
    assert confirmations(db) == []
    confirm = confirm_path(settings, "user11@example.com", referrer, at=when)
    refused = client.post(confirm, data={"csrf_token": token})
    assert refused.status_code == 409 and expected in text_of(refused.text) and entries(db) == []


def test_self_referral_is_refused_politely(client, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    share = share_path(settings, referrer)
    token = csrf(client.get(share).text)
    response = client.post(share, data={"csrf_token": token, "email": "USER10@example.com"})
    assert response.status_code == 303  # the same answer as for anyone: the mailbox owner learns it next
    assert [email for email, _, _ in confirmations(db)] == ["user10@example.com"]
    link = confirm_path(settings, "USER10@example.com", referrer)
    page = client.get(link)
    assert page.status_code == 200 and "This is your own share link" in page.text and 'id="confirm"' not in page.text
    refused = client.post(link, data={"csrf_token": token})
    assert refused.status_code == 409 and "This is your own share link" in refused.text
    assert entries(db) == [] and tickets(db, referrer) == 0


def test_suppressed_and_erased_addresses_cannot_enter(client, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    suppressed_id, invitation = invited["user1@example.com"]
    erased_id, _ = invited["user2@example.com"]
    with session_scope(db) as s:
        s.add(Suppression(email_key="user1@example.com", reason="unsubscribe", created_at=INSIDE))
        s.add(Suppression(email_key="blocked@example.org", reason="hard_bounce", created_at=INSIDE))
        s.get(Contact, erased_id).erased_at = INSIDE
    token = csrf(client.get(share_path(settings, referrer)).text)
    for address in ("user1@example.com", "user2@example.com", "blocked@example.org"):
        asked = client.post(share_path(settings, referrer), data={"csrf_token": token, "email": address})
        assert asked.status_code == 303
        link = confirm_path(settings, address, referrer)
        page = client.get(link)
        assert 'id="confirm"' not in page.text or address == "blocked@example.org"
        refused = client.post(link, data={"csrf_token": token})
        assert refused.status_code == 409, address
        assert "can no longer take part" in refused.text or "kan niet meer meedoen" in refused.text
    assert confirmations(db) == [] and entries(db) == []
    with Session(db) as s:
        assert s.execute(select(Contact).where(Contact.email_key == "blocked@example.org")).first() is None
    # The invitation's own link is refused too: a win could never be mailed.
    page = client.get(invitation)
    assert "Dit adres kan niet meer meedoen" in page.text and 'id="join"' not in page.text
    assert client.post(invitation, data={"csrf_token": token}).status_code == 409
    assert entries(db) == [] and tickets(db, suppressed_id) == 0


def test_confirming_an_address_that_is_no_contact_creates_it_and_the_newsletter_needs_the_tick(client, db, settings,
                                                                                             invited):
    referrer, invitation = invited["user10@example.com"]
    post_form(client, invitation)
    quiet = confirm_path(settings, "quiet@example.org", referrer)
    keen = confirm_path(settings, "keen@example.org", referrer)
    token = csrf(client.get(quiet).text)
    assert client.post(quiet, data={"csrf_token": token}).status_code == 303
    assert client.post(keen, data={"csrf_token": token, "newsletter": "yes"}).status_code == 303
    with Session(db) as s:
        status = dict(s.execute(select(Contact.email, Contact.status).where(
            Contact.email.in_(["quiet@example.org", "keen@example.org"]))).all())
        consent = s.execute(select(Contact.email, Event.type, Event.data)
                            .join(Contact, Contact.id == Event.contact_id)).all()
    assert status == {"quiet@example.org": TRANSACTIONAL_ONLY, "keen@example.org": "subscribed"}
    assert consent == [("keen@example.org", contests.CONSENT_EVENT,
                        {"source": "contest confirmation", "campaign": CAMPAIGN})]
    assert tickets(db, referrer) == 1 + 2 * BONUS
    assert 'id="newsletter"' not in client.get(keen).text  # subscribed now: nothing left to offer


def test_an_expired_confirmation_link_offers_a_new_one(client, db, settings, invited):
    referrer, _ = invited["user10@example.com"]
    signed = INSIDE - contests.CONFIRM_MAX_AGE
    old = confirm_path(settings, "friend@example.org", referrer, at=signed - timedelta(seconds=1))
    page = client.get(old)
    assert page.status_code == 400 and "This link has expired" in page.text
    assert f'href="{share_path(settings, referrer)}"' in page.text
    fresh = confirm_path(settings, "friend@example.org", referrer, at=signed)
    assert client.get(fresh).status_code == 200
    assert client.post(old, data={"csrf_token": csrf(client.get(fresh).text)}).status_code == 400
    assert entries(db) == []


@pytest.mark.parametrize("typed", ["friend\x00@example.org", "not-an-address", "a@b", "friend @example.org",
                                   "x" * 250 + "@example.org"])
def test_an_address_email_validator_refuses_is_asked_again(typed, client, db, settings, invited):
    # NUL and friends must never reach the database (PostgreSQL refuses NUL in text: that would be a 500).
    referrer, _ = invited["user10@example.com"]
    response = post_form(client, share_path(settings, referrer), email=typed)
    assert response.status_code == 400 and "valid email address" in response.text
    assert confirmations(db) == []


def test_head_and_options_never_enter_or_queue_a_confirmation(client, db, settings, invited):
    referrer, entry = invited["user10@example.com"]
    share = share_path(settings, referrer)
    before = database_state(db)
    for path in (entry, share, confirm_path(settings, "friend@example.org", referrer)):
        assert client.head(path, data={"email": "friend@example.org"}).status_code == 200, path
        assert client.options(path, data={"email": "friend@example.org"}).status_code == 200, path
    assert database_state(db) == before and confirmations(db) == [] and entries(db) == []
