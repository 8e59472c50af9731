"""Contest pages: the invitation's "Join the draw", the share link's entry form and its email confirmation.

- `/c/<token>` (the personal link of an invitation): prize, conditions, entry window in the
  configured timezone, number of winners and the draw commitment; a CSRF-protected POST enters
  (idempotently) and answers 303 back to the page, which then shows the tickets and the share link.
- `/c/r/<token>` (an entrant's share link): the same contest with an email form. Submitting it
  never enters anyone: it queues a confirmation mail (engine.contests.request_confirmation) and
  always answers with the same "check your inbox" page, so it cannot reveal who is a contact.
- `/c/confirm/<token>` (the link in that mail, signed and valid for 7 days): a confirm button,
  with an unticked "also send me the newsletter" box for anyone not subscribed; the POST enters,
  credited to the referrer once.

An entry refused by the contest's state (before or after the window, own share link, an address
we may no longer mail) gets a page saying so with status 409 Conflict: the request was well
formed, but the contest's current state does not allow it, and nothing was changed. A 200 would
tell monitoring and scripted clients that the entry happened.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from .. import contests
from ..campaigns.kinds.contest import format_instant, localized
from ..errors import NotFound, ValuemailError
from ..importing import fields
from ..importing.errors import FieldProblem
from ..models import Contact, ContactStatus, Delivery
from .context import db_session, web_context

bp = Blueprint("contests", __name__)

LANGUAGES = ("en", "nl")

#: Page labels; prize, conditions and headline come from the campaign file in the contact's language.
LABELS = {
    "en": {
        "title": "Prize draw", "the_prize": "The prize", "one_winner": "One winner will be drawn.",
        "n_winners": "{n} winners will be drawn.",
        "join": "Join the draw", "join_intro": "One click enters you; entering again changes nothing.",
        "in_title": "You are in!", "in_text": "You are entered in the draw.",
        "tickets_one": "You have 1 ticket.", "tickets_n": "You have {n} tickets.",
        "friends_none": "No friends have entered through your link yet.",
        "friends_one": "1 friend entered through your link.", "friends_n": "{n} friends entered through your link.",
        "share_heading": "More chances: invite your friends",
        "share_bonus_one": "For every friend who joins the draw through your personal link, you get one extra ticket.",
        "share_bonus_n": "For every friend who joins the draw through your personal link, you get {n} extra tickets.",
        "share_plain": "Know someone who would love this? Share your personal link with them.",
        "share_label": "Your personal link (select it to copy)",
        "share_note": "Friends enter with their own email address; your extra tickets count once they have joined.",
        "share_mail": "Share by email", "share_subject": "Join this prize draw",
        "share_body": "I entered this prize draw and thought of you:",
        "how_heading": "How it works", "period": "You can enter from {from} until {until}.",
        "draw_on": "The winners are drawn on {when} and told by email.",
        "draw_after": "The winners are drawn after entries close and told by email.",
        "rules_heading": "Conditions",
        "fair_heading": "A fair draw you can check",
        "fair_text": "Before the contest opened we fixed a secret random number, the seed, and published its "
                     "SHA-256 fingerprint:",
        "fair_how": "After the draw we publish the seed and the list of entries (with masked addresses). "
                    "To check the draw, compute the SHA-256 of the seed's 64 characters (for example "
                    "printf %s SEED | sha256sum) and compare it with the fingerprint above, which cannot have "
                    "changed since the invitation. Then each entry's score is the lowest "
                    "HMAC-SHA256(seed, \u201centry:ticket\u201d) over its tickets, and the lowest scores win.",
        "seed_revealed": "The draw took place on {when}. The seed, revealed now:",
        "not_open_title": "Not open yet", "not_open": "Entries open on {when}. Please come back then.",
        "closed_title": "Entries are closed", "closed": "Entries closed on {when}. Thank you for your interest!",
        "self_referral": "This is your own share link: it is for your friends. Use the link in your invitation "
                         "to enter yourself.",
        "unavailable": "This address can no longer take part: we no longer send it our mail, so we could not tell "
                       "you if you won.",
        "unknown_contact": "We could not find your subscription.",
        "friend_intro": "A friend invited you to join this prize draw.",
        "email_label": "Your email address", "email_send": "Send me the entry link",
        "email_note": "We email you a link to confirm your entry; you are in once you click it. "
                      "We use your address only for this draw unless you ask for our newsletter.",
        "email_invalid": "Please enter a valid email address, like name@example.com.",
        "sent_title": "Check your inbox",
        "sent": "If this address can take part, we have just sent it an email with a link to confirm your entry. "
                "It may take a few minutes; have a look in your spam folder too.",
        "sent_again": "Nothing arrived? You can ask again in about ten minutes. Some addresses cannot take part, "
                      "for example ones that asked us never to email them again.",
        "confirm_title": "Confirm your entry", "confirm_for": "Entering as",
        "confirm_button": "Confirm my entry",
        "newsletter": "Also send me the newsletter (optional; you can unsubscribe at any time)",
        "expired_title": "This link has expired",
        "expired": "Confirmation links work for 7 days. Ask for a new one on your friend's page.",
        "expired_link": "Ask for a new link",
    },
    "nl": {
        "title": "Winactie", "the_prize": "De prijs", "one_winner": "Er wordt één winnaar geloot.",
        "n_winners": "Er worden {n} winnaars geloot.",
        "join": "Doe mee aan de loting",
        "join_intro": "Met één klik doe je mee; nog een keer klikken verandert niets.",
        "in_title": "Je doet mee!", "in_text": "Je doet mee aan de loting.",
        "tickets_one": "Je hebt 1 lot.", "tickets_n": "Je hebt {n} loten.",
        "friends_none": "Er heeft nog geen vriend via jouw link meegedaan.",
        "friends_one": "1 vriend deed mee via jouw link.", "friends_n": "{n} vrienden deden mee via jouw link.",
        "share_heading": "Meer kans: nodig je vrienden uit",
        "share_bonus_one": "Voor elke vriend die via jouw persoonlijke link meedoet, krijg je één extra lot.",
        "share_bonus_n": "Voor elke vriend die via jouw persoonlijke link meedoet, krijg je {n} extra loten.",
        "share_plain": "Ken je iemand die hier blij van wordt? Deel dan je persoonlijke link.",
        "share_label": "Jouw persoonlijke link (selecteer hem om te kopiëren)",
        "share_note": "Vrienden doen mee met hun eigen e-mailadres; je extra loten tellen zodra ze hebben meegedaan.",
        "share_mail": "Delen per e-mail", "share_subject": "Doe mee met deze winactie",
        "share_body": "Ik doe mee met deze winactie en dacht aan jou:",
        "how_heading": "Zo werkt het", "period": "Meedoen kan van {from} tot {until}.",
        "draw_on": "De winnaars worden op {when} geloot en per e-mail op de hoogte gebracht.",
        "draw_after": "De winnaars worden na de sluiting geloot en per e-mail op de hoogte gebracht.",
        "rules_heading": "Voorwaarden",
        "fair_heading": "Een eerlijke loting die je zelf kunt controleren",
        "fair_text": "Voordat de actie begon, hebben we een geheim willekeurig getal (de seed) vastgelegd en de "
                     "SHA-256-vingerafdruk ervan gepubliceerd:",
        "fair_how": "Na de loting publiceren we de seed en de lijst met deelnames (met gemaskeerde adressen). "
                    "Controleren: bereken de SHA-256 van de 64 tekens van de seed (bijvoorbeeld "
                    "printf %s SEED | sha256sum) en vergelijk die met de vingerafdruk hierboven, die sinds de "
                    "uitnodiging niet kan zijn veranderd. De score van een deelname is de laagste "
                    "HMAC-SHA256(seed, \u201cdeelname:lot\u201d) over haar loten; de laagste scores winnen.",
        "seed_revealed": "De loting vond plaats op {when}. De seed, nu bekendgemaakt:",
        "not_open_title": "Nog niet geopend", "not_open": "Meedoen kan vanaf {when}. Kom dan terug.",
        "closed_title": "Meedoen is gesloten", "closed": "Meedoen kon tot {when}. Bedankt voor je interesse!",
        "self_referral": "Dit is je eigen deellink: die is voor je vrienden. Gebruik de link in je uitnodiging om "
                         "zelf mee te doen.",
        "unavailable": "Dit adres kan niet meer meedoen: we sturen het geen e-mail meer, dus we zouden je niet "
                       "kunnen laten weten dat je gewonnen hebt.",
        "unknown_contact": "We konden je inschrijving niet vinden.",
        "friend_intro": "Een vriend nodigt je uit om mee te doen met deze winactie.",
        "email_label": "Je e-mailadres", "email_send": "Stuur me de deelnamelink",
        "email_note": "We mailen je een link om je deelname te bevestigen; je doet mee zodra je erop klikt. "
                      "We gebruiken je adres alleen voor deze loting, tenzij je om onze nieuwsbrief vraagt.",
        "email_invalid": "Vul een geldig e-mailadres in, zoals naam@voorbeeld.nl.",
        "sent_title": "Kijk in je inbox",
        "sent": "Als dit adres mag meedoen, hebben we er zojuist een e-mail naartoe gestuurd met een link om je "
                "deelname te bevestigen. Het kan een paar minuten duren; kijk ook in je spammap.",
        "sent_again": "Niets ontvangen? Over een minuut of tien kun je het opnieuw vragen. Sommige adressen kunnen "
                      "niet meedoen, bijvoorbeeld als ze ons hebben gevraagd ze nooit meer te mailen.",
        "confirm_title": "Bevestig je deelname", "confirm_for": "Je doet mee als",
        "confirm_button": "Bevestig mijn deelname",
        "newsletter": "Stuur me ook de nieuwsbrief (niet verplicht; je kunt je altijd afmelden)",
        "expired_title": "Deze link is verlopen",
        "expired": "Bevestigingslinks werken 7 dagen. Vraag een nieuwe aan op de pagina van je vriend.",
        "expired_link": "Vraag een nieuwe link aan",
    },
}


# -- the invitation's personal link --------------------------------------------------------------

@bp.route("/c/<token>", methods=["GET", "POST"])
def entry(token: str):
    """GET: the contest and the contact's standing. POST (CSRF): join the draw, then 303 back here."""
    ctx = web_context()
    session = db_session()
    delivery_id = ctx.signer.unsign("contest", token)  # BadToken: the friendly 400 page
    campaign_id, contact_id = contests.entrant_of_link(session, ctx.signer, token)
    campaign = _stored(session, campaign_id)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound("this contact no longer exists")
    delivery = session.get(Delivery, delivery_id)
    lang = _language_of(contact)
    page = _Page(campaign, lang=lang, segment=delivery.segment if delivery else None)
    action = url_for("contests.entry", token=token)
    if request.method == "POST":
        try:
            contests.enter(session, campaign_id, contact_id, rules=page.rules, now=ctx.clock.now())
            session.commit()
        except contests.EntryRefused as refused:
            session.rollback()
            return page.render(session, contact=contact, form="join", action=action, refused=refused.reason), 409
        return redirect(action, code=303)
    refused = None if contests.may_take_part(session, contact) else "unavailable"
    return page.render(session, contact=contact, form="join", action=action, refused=refused)


# -- a share link ---------------------------------------------------------------------------------

@bp.route("/c/r/<token>", methods=["GET", "POST"])
def share(token: str):
    """GET: the contest with an email form. POST (CSRF): queue a confirmation mail, then 303 to "check your inbox"."""
    ctx = web_context()
    campaign_id, referrer_id = contests.referrer_of(ctx.settings.secret_key, token)
    session = db_session()
    campaign = _stored(session, campaign_id)
    lang = _visitor_language(session.get(Contact, referrer_id))
    page = _Page(campaign, lang=lang)
    action = url_for("contests.share", token=token)
    if request.method != "POST":  # GET and HEAD (which Flask routes here) never change state
        return page.render(session, form="email", action=action, sent=request.args.get("sent") == "1")
    typed = (request.form.get("email") or "").strip()
    try:
        # The importer's validator (email-validator): one notion of a valid address across the product.
        email, _ = fields.email(typed) if len(typed) <= 254 else ("", "")
    except FieldProblem:
        email = ""
    if not email:
        return page.render(session, form="email", action=action, email=typed[:254], email_error=True), 400
    try:
        contests.request_confirmation(session, campaign, rules=page.rules, email=email, referrer_id=referrer_id,
                                      language=lang, settings=ctx.settings, now=ctx.clock.now())
        session.commit()
    except contests.EntryRefused as refused:
        session.rollback()
        return page.render(session, form="email", action=action, refused=refused.reason), 409
    # Queued or not (suppressed, pending, ...), the visitor sees the same page.
    return redirect(url_for("contests.share", token=token, sent=1), code=303)


# -- the confirmation mail's link -----------------------------------------------------------------

@bp.route("/c/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str):
    """GET: a confirm button (or the standing, once entered). POST (CSRF): enter, then 303 back here."""
    ctx = web_context()
    try:
        confirmation = contests.confirmation_of(ctx.settings.secret_key, token, now=ctx.clock.now())
    except contests.ConfirmationExpired as expired:
        return _expired(expired.confirmation)
    session = db_session()
    campaign = _stored(session, confirmation.campaign_id)
    contact = contests.contact_by_email(session, confirmation.email)
    lang = _language_of(contact) if contact is not None and contact.language else _visitor_language(None)
    page = _Page(campaign, lang=lang)
    action = url_for("contests.confirm", token=token)
    view: dict[str, Any] = dict(form="confirm", action=action, confirm_email=confirmation.email,
                                offer_newsletter=contact is None or contact.status != ContactStatus.subscribed.value)
    if request.method == "POST":
        try:
            contests.confirm_entry(session, confirmation, rules=page.rules, language=lang,
                                   newsletter=request.form.get("newsletter") == "yes", now=ctx.clock.now())
            session.commit()
        except contests.EntryRefused as refused:
            session.rollback()
            return page.render(session, contact=contact, refused=refused.reason, **view), 409
        return redirect(action, code=303)
    refused = None
    # Said before the button is pressed, to the owner of the mailbox only (they followed its link).
    if contact is not None and not contests.standing(session, campaign.id, contact.id,
                                                     bonus_entries_per_referral=0).entered:
        if contact.id == confirmation.referrer_id:
            refused = "self_referral"
        elif not contests.may_take_part(session, contact):
            refused = "unavailable"
    return page.render(session, contact=contact, refused=refused, **view)


def _expired(confirmation: contests.Confirmation):
    """The page for a genuine but old confirmation link, pointing to the share page for a new one."""
    ctx = web_context()
    lang = _visitor_language(None)
    again = None
    if confirmation.referrer_id is not None:
        again = url_for("contests.share", token=contests.referral_token(
            ctx.settings.secret_key, confirmation.campaign_id, confirmation.referrer_id))
    return render_template("public/contest_expired.html", t=LABELS[lang], lang=lang, again=again,
                           sender=ctx.settings.sender), 400


# -- building the page ----------------------------------------------------------------------------

def _stored(session, campaign_id: str):
    """The contest's campaign as sent; a campaign that is gone or no longer loads is a 404, never a 500."""
    try:
        return contests.stored_campaign(session, campaign_id, settings=web_context().settings)
    except NotFound:
        raise
    except ValuemailError as exc:
        raise NotFound(f"contest '{campaign_id}' cannot be shown: {exc}") from None


def _language_of(contact: Contact | None) -> str:
    return "nl" if contact is not None and (contact.language or "").lower() == "nl" else "en"


def _visitor_language(referrer: Contact | None) -> str:
    """A visitor without a contact: their browser's choice among ours, else the referrer's language."""
    best = request.accept_languages.best_match(LANGUAGES)
    return best or _language_of(referrer)


class _Page:
    """What every contest page shows: the contest in one language, its window and its commitment."""

    def __init__(self, campaign, *, lang: str, segment: str | None = None):
        settings = web_context().settings
        self.campaign = campaign
        self.lang = lang
        self.section = campaign.variant(segment).section if segment in campaign.variants else campaign.section
        # The rules of the draw are the campaign's own, as the domain draws by them.
        self.rules = contests.ContestRules.from_section(campaign.section, tz=settings.tz)
        self.tz = settings.tz

    def _when(self, instant) -> str:
        return format_instant(instant.astimezone(self.tz), self.lang)

    def render(self, session, *, contact: Contact | None = None, form: str, action: str, refused: str | None = None,
               **extra: Any) -> str:
        ctx = web_context()
        t = LABELS[self.lang]
        section, rules = self.section, self.rules
        contest = contests.get_contest(session, self.campaign.id)
        state = contests.window_state(contest, rules, ctx.clock.now())
        standing = share_url = None
        if contact is not None:
            standing = contests.standing(session, self.campaign.id, contact.id,
                                         bonus_entries_per_referral=rules.bonus_entries_per_referral)
            if standing.entered:
                share_url = contests.share_url(ctx.settings.secret_key, ctx.settings.app.base_url,
                                               self.campaign.id, contact.id)
        prize = localized(section.prize, self.lang)
        rules_text = localized(section.rules, self.lang)
        return render_template(
            "public/contest.html", t=t, lang=self.lang, sender=ctx.settings.sender, form=form, action=action,
            state=state, refused=refused, standing=standing, share_url=share_url,
            headline=localized(section.headline, self.lang) or prize, prize=prize,
            rules_paragraphs=_paragraphs(rules_text), winners=rules.winners,
            bonus=rules.bonus_entries_per_referral,
            opens=self._when(rules.opens_at), closes=self._when(rules.closes_at),
            draw_at=self._when(rules.draw_at) if rules.draw_at else None,
            commitment=contest.seed_hash if contest is not None else None,
            seed=contest.seed if contest is not None and contest.drawn_at is not None else None,
            drawn_at=self._when(contest.drawn_at) if contest is not None and contest.drawn_at else None,
            **extra)


def _paragraphs(text: str) -> list[str]:
    blocks = [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in text.split("\n\n")]
    return [b for b in blocks if b]
