"""The contest kind: its `[contest]` section, its hooks and the shipped template in English and Dutch."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine import contests
from engine.campaigns import load_campaign
from engine.campaigns.kinds import get_kind
from engine.config import load_settings
from engine.errors import CampaignError
from engine.rendering import Renderer
from engine.sending.compose import SAMPLE_CONTACT, Composer, sample_recipient
from engine.tokens import TokenSigner

ROOT = Path(__file__).resolve().parents[3]
TODAY = date(2027, 4, 1)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
GOOD = '''\
name = "Spring contest"
kind = "contest"
values = ["emotional", "social"]
template = "contest.mjml"
subject = "Win a weekend on Texel"
segments = ["gold", "everyone"]
schedule = { at = "2027-04-06T09:00" }

[contest]
opens_at = 2027-04-06T09:00:00
closes_at = "2027-04-27T23:59:59"
draw_at = 2027-04-28T12:00:00
winners = 3
bonus_entries_per_referral = 2
prize = { en = "A weekend on Texel", nl = "Een weekend op Texel" }
rules = """
Open to subscribers aged 18 or over.

One entry per person."""

[variants.gold]
contest = { headline = { en = "Gold members first" } }
'''


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "config.toml").write_text(f'[paths]\ntemplates = "{ROOT / "templates" / "emails"}"\n'
                                          f'campaigns = "{tmp_path / "campaigns"}"\n')
    (tmp_path / "campaigns").mkdir()
    return load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def load(settings, text: str = GOOD, *, today=TODAY):
    path = settings.campaigns_dir / "spring-contest.toml"
    path.write_text(text)
    return load_campaign(path, settings=settings, segment_names=["gold", "everyone"], today=today)


def problems(settings, text: str, *, today=TODAY) -> list[str]:
    with pytest.raises(CampaignError) as info:
        load(settings, text, today=today)
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def test_a_valid_contest_section_loads(settings):
    campaign = load(settings)
    section = campaign.section
    assert section.winners == 3 and section.bonus_entries_per_referral == 2
    assert section.closes_at == datetime(2027, 4, 27, 23, 59, 59)  # a string is read like a TOML date-time
    rules = contests.ContestRules.from_section(section, tz=AMSTERDAM)
    assert rules.opens_at == datetime(2027, 4, 6, 7, 0, tzinfo=timezone.utc)  # 09:00 in Amsterdam, summer time
    assert rules.draw_at == datetime(2027, 4, 28, 10, 0, tzinfo=timezone.utc)
    gold = campaign.variant("gold").section
    assert gold.headline == {"en": "Gold members first"} and gold.prize == section.prize


@pytest.mark.parametrize("old, new, expected", [
    ('closes_at = "2027-04-27T23:59:59"', 'closes_at = 2027-04-01T09:00:00',
     "spring-contest.toml:11: 'contest.closes_at': closes_at 2027-04-01T09:00:00 is not after opens_at 2027-04-06T09:00:00"),
    ("winners = 3", "winners = 0",
     "spring-contest.toml:13: 'contest.winners': Input should be greater than or equal to 1"),
    ("draw_at = 2027-04-28T12:00:00", "draw_at = 2027-04-27T12:00:00",
     "spring-contest.toml:12: 'contest.draw_at': draw_at 2027-04-27T12:00:00 must be after closes_at"),
    ("opens_at = 2027-04-06T09:00:00", "opens_at = 2027-04-06",
     "spring-contest.toml:10: 'contest.opens_at': give a time as well, e.g. 2027-04-06T09:00"),
    ('closes_at = "2027-04-27T23:59:59"', 'closes_at = "end of April"',
     "spring-contest.toml:11: 'contest.closes_at': 'end of April' is not a date and time"),
    ("bonus_entries_per_referral = 2", "bonus_entries_per_referral = -1",
     "spring-contest.toml:14: 'contest.bonus_entries_per_referral': Input should be greater than or equal to 0"),
    ('prize = { en = "A weekend on Texel", nl = "Een weekend op Texel" }', 'prize = { english = "A weekend" }',
     "spring-contest.toml:15: 'contest.prize': 'english' is not an ISO 639-1 language code"),
    ('prize = { en = "A weekend on Texel", nl = "Een weekend op Texel" }', 'prize = " "',
     "spring-contest.toml:15: 'contest.prize': must not be empty"),
    ("winners = 3", "winners = 3\nwinner = 1", "spring-contest.toml:14: unknown key 'contest.winner'"),
    ('schedule = { at = "2027-04-06T09:00" }', 'schedule = { trigger = "order", delay = "1d" }',
     "spring-contest.toml:7: 'schedule': contest invitations go out on an at or cron schedule"),
])
def test_a_bad_contest_section_names_file_line_and_key(settings, old, new, expected):
    assert new != old and old in GOOD
    found = problems(settings, GOOD.replace(old, new))
    assert any(p.startswith(expected) for p in found), found


def test_a_missing_section_and_a_past_contest_are_reported(settings):
    assert any("missing section [contest]" in p for p in problems(settings, GOOD.split("[contest]")[0]))
    late = problems(settings, GOOD, today=date(2027, 5, 1))
    assert late == ["spring-contest.toml:11: 'contest.closes_at': the contest closed on 2027-04-27 (today is 2027-05-01)"]


def test_an_invitation_after_the_close_is_inactive(settings):
    section = load(settings).section
    kind = get_kind("contest")
    assert kind.inactive_reason(section, day=date(2027, 4, 27)) is None
    assert "closed on 2027-04-27" in kind.inactive_reason(section, day=date(2027, 4, 28))


def test_the_winner_mail_definition_swaps_subject_and_template_only(settings):
    campaign = load(settings)
    winner = contests.winner_campaign(campaign, settings=settings)
    assert winner.id == campaign.id and winner.schedule is None
    assert winner.variant("everyone").subject == "{{ t.winner_subject }}"
    assert winner.variant("gold").section == campaign.variant("gold").section
    assert winner.variant("gold").template == "contest.mjml"
    assert winner.as_json()["file"] == "spring-contest.toml"


# -- the template -------------------------------------------------------------------------------

class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.lang, self.images, self.links = None, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a.get("href"))


def render(settings, *, language: str, winner: bool = False):
    campaign = load(settings, GOOD.replace("winners = 3", 'winners = 3\nimage_url = "https://example.com/texel.jpg"'))
    if winner:
        campaign = contests.winner_campaign(campaign, settings=settings)
    composer = Composer(campaign=campaign, run_id=1, settings=settings, renderer=Renderer(settings.templates_dir),
                        signer=TokenSigner("k"))
    contact = replace(SAMPLE_CONTACT, language=language, first_name="Anneke")
    recipient = sample_recipient(campaign, "everyone")
    recipient.language = language
    rules = contests.ContestRules.from_section(campaign.section, tz=AMSTERDAM)
    recipient.extra["contest"] = {
        "commitment": "c0ffee" * 10 + "abcd", "seed": "5eed" * 16 if winner else None,
        "opens_at": rules.opens_at.astimezone(AMSTERDAM), "closes_at": rules.closes_at.astimezone(AMSTERDAM),
        "draw_at": rules.draw_at.astimezone(AMSTERDAM),
        "entry_url": "https://mail.example.com/c/ENTRY", "share_url": "https://mail.example.com/c/r/SHARE",
    }
    if winner:
        recipient.data = {"mail": "winner", "rank": 2}
    message = composer.compose(5, contact.email, contact, recipient, now=datetime(2027, 4, 7, tzinfo=timezone.utc))
    page = _Page()
    page.feed(message.html)
    return message, page


def test_the_invitation_states_prize_and_conditions_with_one_call_to_action(settings):
    message, page = render(settings, language="en")
    html, text = message.html, message.text
    assert page.lang == "en" and message.subject == "Win a weekend on Texel"
    assert html.count(">Join the draw</a>") == 1
    assert page.links.count("https://mail.example.com/c/ENTRY") == 1
    assert "https://mail.example.com/c/r/SHARE" in page.links and "https://mail.example.com/c/r/SHARE" in text
    assert "A weekend on Texel" in html and "3 winners will be drawn." in html
    assert "you get 2 extra entries" in html
    assert "You can enter from 6 April 2027, 09:00 CEST until 27 April 2027, 23:59 CEST." in text
    assert "The winners are drawn on 28 April 2027, 12:00 CEST" in text
    assert "Open to subscribers aged 18 or over." in html and "One entry per person." in html
    assert "c0ffee" * 10 + "abcd" in html and "SHA-256" in html  # the commitment, in the small print
    assert "Congratulations" not in html
    assert page.images and all(img.get("alt") for img in page.images if "texel" in img.get("src", ""))
    assert "{{" not in html + text and "{%" not in html + text


def test_the_invitation_in_dutch(settings):
    message, page = render(settings, language="nl")
    html, text = message.html, message.text
    assert page.lang == "nl"
    assert html.count(">Doe mee aan de loting</a>") == 1 and "Join the draw" not in html
    assert "Een weekend op Texel" in html and "Er worden 3 winnaars geloot." in html
    assert "Meedoen kan van 6 april 2027 om 09:00 CEST tot 27 april 2027 om 23:59 CEST." in text
    assert "krijg je 2 extra loten" in html and "vingerafdruk" in html
    assert "Afmelden" in html  # the shared footer follows the language too


@pytest.mark.parametrize("language, greeting, rank, next_step", [
    ("en", "Congratulations, Anneke!", "You were drawn as winner 2 of 3.", "We will be in touch"),
    ("nl", "Gefeliciteerd, Anneke!", "Je bent geloot als winnaar 2 van 3.", "We nemen binnen een paar dagen"),
])
def test_the_winner_mail(settings, language, greeting, rank, next_step):
    message, page = render(settings, language=language, winner=True)
    html = message.html
    assert page.lang == language
    assert greeting in html and rank in html and next_step in html
    assert message.subject == ("Congratulations, you won our prize draw!" if language == "en"
                               else "Gefeliciteerd, je hebt gewonnen!")
    assert "5eed" * 16 in html and "c0ffee" * 10 + "abcd" in html  # seed revealed beside the commitment
    assert "https://mail.example.com/c/ENTRY" not in page.links  # nothing left to join


def test_context_without_prepared_data_uses_sample_links(settings):
    campaign = load(settings)
    kind = campaign.kind
    recipient = sample_recipient(campaign, "everyone")
    recipient.extra, recipient.data = {}, {}
    context = kind.context(campaign.section, recipient)["contest"]
    assert context["entry_url"].endswith("/c/sample-entry-token") and context["winner"] is False
    assert context["closes_at"] == "27 April 2027, 23:59" and context["rules_paragraphs"] == [
        "Open to subscribers aged 18 or over.", "One entry per person."]
    assert re.fullmatch(r"[0-9a-f]{64}", context["commitment"])
