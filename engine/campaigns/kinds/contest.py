"""contest: a prize draw with an entry window, share links for bonus entries and an auditable draw."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any, ClassVar, Optional, Union

from pydantic import Field, ValidationInfo, field_validator

from ... import contests
from ...tokens import TokenSigner
from .base import BaseKind, KindContext, Recipient, SectionModel

#: Text a marketer may give once, or per language: `prize = { en = "...", nl = "..." }`.
LocalText = Union[str, dict[str, str]]

FALLBACK_LANGUAGE = "en"
_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "nl": ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober",
           "november", "december"),
}
_AT = {"en": ", ", "nl": " om "}
SKIP_CLOSED = "contest closed"


def _parse_instant(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date and time such as 2027-04-06T09:00") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise ValueError(f"give a time as well, e.g. {value.isoformat()}T09:00")
    return value


def _comparable(value: datetime) -> datetime:
    # Naive values are wall time in the app timezone, which the model does not know; comparing an
    # offset value by its UTC wall time is close enough for a "closes before it opens" check.
    return value if value.tzinfo is None else value.replace(tzinfo=None) - value.utcoffset()


def localized(text: LocalText, language: str | None) -> str:
    """The text in `language`, else English, else the first language given."""
    if isinstance(text, str):
        return text
    for choice in (language, FALLBACK_LANGUAGE):
        if choice and text.get(choice):
            return text[choice]
    return next(iter(text.values()), "")


def format_instant(value: datetime, language: str | None) -> str:
    """`27 April 2027, 23:59 CEST` (en) or `27 april 2027 om 23:59 CEST` (nl)."""
    lang = language if language in _MONTHS else FALLBACK_LANGUAGE
    zone = f" {value.tzname()}" if value.tzinfo is not None else ""
    return f"{value.day} {_MONTHS[lang][value.month - 1]} {value.year}{_AT[lang]}{value:%H:%M}{zone}"


def _paragraphs(text: str) -> list[str]:
    blocks = [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in text.split("\n\n")]
    return [b for b in blocks if b]


class ContestSection(SectionModel):
    """The `[contest]` section of a contest campaign."""

    prize: LocalText
    rules: LocalText
    opens_at: datetime = Field(description="first instant entries are accepted (app timezone unless an offset is given)")
    closes_at: datetime = Field(description="last instant entries are accepted")
    winners: int = Field(ge=1, le=1000)
    bonus_entries_per_referral: int = Field(default=1, ge=0, le=100)
    draw_at: Optional[datetime] = None
    headline: LocalText = ""
    image_url: str = ""
    image_alt: LocalText = ""
    url: str = ""
    winner_subject: str = "{{ t.winner_subject }}"
    winner_template: str = ""  # empty: the campaign's template, in winner mode (`contest.winner`)
    winner_message: LocalText = ""

    _instants = field_validator("opens_at", "closes_at", "draw_at", mode="before")(_parse_instant)

    @field_validator("prize", "rules")
    @classmethod
    def _required_text(cls, value: LocalText) -> LocalText:
        _check_languages(value)
        if not localized(value, None).strip() or (isinstance(value, dict) and not all(v.strip() for v in value.values())):
            raise ValueError("must not be empty")
        return value

    @field_validator("headline", "image_alt", "winner_message")
    @classmethod
    def _optional_text(cls, value: LocalText) -> LocalText:
        _check_languages(value)
        return value

    # Cross-key checks are field validators (fields validate in declaration order) so that the
    # error carries the key, and with it the line.
    @field_validator("closes_at")
    @classmethod
    def _window(cls, value: datetime, info: ValidationInfo) -> datetime:
        opens = info.data.get("opens_at")
        if opens is not None and _comparable(value) <= _comparable(opens):
            raise ValueError(f"closes_at {value.isoformat()} is not after opens_at {opens.isoformat()}")
        return value

    @field_validator("draw_at")
    @classmethod
    def _draw_after_close(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        closes = info.data.get("closes_at")
        if value is not None and closes is not None and _comparable(value) <= _comparable(closes):
            raise ValueError(f"draw_at {value.isoformat()} must be after closes_at {closes.isoformat()}")
        return value

    @field_validator("winner_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("winner_template")
    @classmethod
    def _template_name(cls, value: str) -> str:
        path = PurePosixPath(value)
        if value and (path.is_absolute() or ".." in path.parts):
            raise ValueError(f"template '{value}' must be a file name inside the templates directory")
        return value


def _check_languages(value: LocalText) -> None:
    if isinstance(value, dict):
        if not value:
            raise ValueError('give the text, or a table of languages such as { en = "...", nl = "..." }')
        bad = [k for k in value if not (len(k) == 2 and k.isascii() and k.isalpha() and k.islower())]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an ISO 639-1 language code such as en or nl")


class Contest(BaseKind):
    """Invitations with a personal entry link and share link; winners drawn verifiably (engine.contests)."""

    name: ClassVar[str] = "contest"
    section_key: ClassVar[str] = "contest"
    section_model: ClassVar[type[SectionModel]] = ContestSection

    def check(self, section: ContestSection, *, today: date) -> list[tuple[tuple, str]]:
        if section.closes_at.date() < today:
            return [(("closes_at",), f"the contest closed on {section.closes_at.date()} (today is {today})")]
        return []

    def check_schedule(self, section: ContestSection, schedule) -> str | None:
        if schedule is not None and schedule.kind == "trigger":
            return "contest invitations go out on an at or cron schedule (or by hand), not on a trigger"
        return None

    def inactive_reason(self, section: ContestSection, *, day: date) -> str | None:
        if day > section.closes_at.date():
            return f"the contest closed on {section.closes_at.date()}; an invitation could not be acted on"
        return None

    def before_occurrence(self, section: ContestSection, session, ctx: KindContext) -> None:
        contests.open_contest(session, ctx.campaign_id, now=ctx.now)

    def on_tick(self, section: ContestSection, session, ctx: KindContext) -> str | None:
        """At `draw_at`, draw the winners of an opened contest once and queue their mail."""
        rules = contests.ContestRules.from_section(section, tz=ctx.settings.tz)
        if rules.draw_at is None or ctx.now < rules.draw_at:
            return None
        contest = contests.get_contest(session, ctx.campaign_id)
        if contest is None or contest.drawn_at is not None:
            return None
        outcome = contests.draw_contest(session, ctx.campaign_id, settings=ctx.settings, now=ctx.now)
        return f"drew {len(outcome.result.winners)} winner(s); winners' mail in run #{outcome.run_id}"

    def prepare(self, section: ContestSection, session, ctx: KindContext, recipients: list[Recipient]) -> dict[int, str]:
        # The commitment must be in the mail, so make sure it is fixed even where the occurrence
        # hook did not run (a resumed run, a test send); opening is idempotent.
        contest = contests.open_contest(session, ctx.campaign_id, now=ctx.now)
        settings = ctx.settings
        rules = contests.ContestRules.from_section(section, tz=settings.tz)
        signer = TokenSigner(settings.secret_key)
        base_url = settings.app.base_url
        shared = {
            "commitment": contest.seed_hash,
            "seed": contest.seed if contest.drawn_at is not None else None,
            "opens_at": rules.opens_at.astimezone(settings.tz),
            "closes_at": rules.closes_at.astimezone(settings.tz),
            "draw_at": rules.draw_at.astimezone(settings.tz) if rules.draw_at else None,
        }
        skips = {}
        for recipient in recipients:
            if recipient.data.get("mail") != "winner" and ctx.now > rules.closes_at:
                skips[recipient.delivery_id] = SKIP_CLOSED  # an invitation nobody can act on any more
                continue
            recipient.extra["contest"] = {
                **shared,
                "entry_url": contests.entry_url(signer, base_url, recipient.delivery_id),
                "share_url": contests.share_url(settings.secret_key, base_url, ctx.campaign_id, recipient.contact_id),
            }
            if recipient.data.get("mail") == "confirm":
                # Signed now, at sending, so the link's days to live start when the mail goes out.
                recipient.extra["contest"]["confirm_url"] = contests.confirm_url(
                    settings.secret_key, base_url, ctx.campaign_id, recipient.email, recipient.data.get("referrer"),
                    now=ctx.now)
        return skips

    def context(self, section: ContestSection, recipient: Recipient) -> dict[str, Any]:
        extra = recipient.extra.get("contest") or self.sample_recipient_extra(section)["contest"]
        lang = recipient.language
        prize = localized(section.prize, lang)
        rules = localized(section.rules, lang)
        winner = recipient.data.get("mail") == "winner"
        return {
            "contest": {
                "prize": prize,
                "headline": localized(section.headline, lang),
                "rules": rules,
                "rules_paragraphs": _paragraphs(rules),
                "image_url": section.image_url,
                "image_alt": localized(section.image_alt, lang) or prize,
                "opens_at": format_instant(extra["opens_at"], lang),
                "closes_at": format_instant(extra["closes_at"], lang),
                "draw_at": format_instant(extra["draw_at"], lang) if extra["draw_at"] else None,
                "winners": section.winners,
                "bonus_entries_per_referral": section.bonus_entries_per_referral,
                "commitment": extra["commitment"],
                "seed": extra["seed"],
                "entry_url": extra["entry_url"],
                "share_url": extra["share_url"],
                "confirm_url": extra.get("confirm_url", ""),
                "winner": winner,
                "rank": recipient.data.get("rank") if winner else None,
                "winner_message": localized(section.winner_message, lang),
            }
        }

    def sample_recipient_extra(self, section: ContestSection) -> dict[str, Any]:
        return {
            "contest": {
                "commitment": hashlib.sha256(b"sample seed").hexdigest(),
                "seed": None,
                "opens_at": section.opens_at,
                "closes_at": section.closes_at,
                "draw_at": section.draw_at,
                "entry_url": "http://127.0.0.1:8000/c/sample-entry-token",
                "share_url": "http://127.0.0.1:8000/c/r/sample-share-token",
                "confirm_url": "http://127.0.0.1:8000/c/confirm/sample-confirm-token",
            }
        }
