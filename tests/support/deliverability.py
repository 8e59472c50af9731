"""Every example campaign's mail as really sent, and SpamAssassin (Debian package, local rules) to score it.

Shared by tests/test_deliverability.py and bench/spam.py. The mails go through the real paths:
`valuemail send CAMPAIGN --test-to` (one message per segment variant, tracked like a real run)
and the contest's transactional mails (the share-link confirmation queued by the domain
function the web page calls, the winners' notice sent by `valuemail contest draw`), all over
SMTP to an aiosmtpd server on loopback. What the server received is what gets scored.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import insert, select, update
from sqlmodel import Session

from engine import contests
from engine.campaigns import SEGMENTS_FILE, load_campaign
from engine.cli import main
from engine.clock import FixedClock
from engine.config import load_settings
from engine.db import session_scope
from engine.models import Contact, Delivery, Order
from engine.providers import provider_factory
from engine.rendering import Renderer
from engine.sending.worker import Sender

from .smtpd import SmtpSink

#: The threshold every example mail must stay under (SpamAssassin flags spam at 5.0).
TARGET = 2.0
#: Where links point: a real deployment's public https address (a numeric http:// host is itself a spam sign).
BASE_URL = "https://news.example.com"
#: The package's rules, not whatever sa-update may have left in /var/lib/spamassassin: the same rules every run.
RULES_DIR = Path("/usr/share/spamassassin")
#: The package's plugin loading (init.pre, v310.pre ...); its local.cf is replaced by ours.
PLUGINS_DIR = Path("/etc/spamassassin")
LOCAL_CF = """\
# Local rules only: no network tests, no Bayes, no auto-welcomelist or reputation, nothing learnt.
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
report_safe 0
ifplugin Mail::SpamAssassin::Plugin::AWL
use_auto_whitelist 0
endif
ifplugin Mail::SpamAssassin::Plugin::TxRep
use_txrep 0
endif
add_header all Score _SCORE_
add_header all Tests _TESTSSCORES(,)_
"""
#: Contacts that each match one segment of campaigns/segments.toml (first match wins per campaign). A test send
#: renders each variant for its lowest contact id: Emma comes before Daan so that "everyone" is English at first.
#: Their LTV is their margin revenue (0.3 × spend, engine/ltv.py): 720 for Gold (≥ 500), 180 for Silver (150-500).
PEOPLE = [
    # email, first name, last name, country, language, (orders, euros each)
    ("anna.gold@example.org", "Anna", "de Boer", "DE", "en", (6, 400)),
    ("sam.silver@example.org", "Sam", "Jansen", "DE", "en", (6, 100)),
    ("emma.brown@example.org", "Emma", "Brown", "GB", "en", (1, 25)),
    ("daan.visser@example.org", "Daan", "Visser", "NL", "nl", (1, 40)),
]
CONTEST = "spring-contest"
ENTRANTS = ("anna.gold@example.org", "daan.visser@example.org", "emma.brown@example.org")
SECRET_KEY = "test-secret-key"
TZ_AMS = "Europe/Amsterdam"


@dataclass(frozen=True)
class Mail:
    """One mail as the SMTP server received it."""

    campaign: str
    variant: str  # the segment variant, or "confirm" / "winner:<segment>" for the contest's transactional mails
    language: str  # the recipient's, which picks the template's strings
    data: bytes

    @property
    def subject(self) -> str:
        """The decoded Subject header."""
        return str(BytesParser(policy=policy.default).parsebytes(self.data)["Subject"])


@dataclass(frozen=True)
class Score:
    """SpamAssassin's verdict: the total and each rule that fired with its points."""

    score: float
    rules: dict[str, float]

    def fired(self, *, all_rules: bool = False) -> str:
        """The rules that fired, the heaviest first ("RULE 1.2, ..."); zero-point ones only with all_rules."""
        shown = sorted(((r, p) for r, p in self.rules.items() if all_rules or abs(p) >= 0.01),
                       key=lambda item: (-abs(item[1]), item[0]))
        return ", ".join(f"{rule} {points:g}" for rule, points in shown) or "-"


class SpamAssassin:
    """`spamassassin -L` with a private home and site configuration: nothing of the machine leaks in."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("spamassassin")
        if self.binary is None:
            raise RuntimeError("spamassassin is not installed: run `bash scripts/setup.sh --test` "
                               "(Debian package spamassassin)")
        self.home = workdir / "home"
        self.site = workdir / "site"
        self.home.mkdir(parents=True, exist_ok=True)
        self.site.mkdir(parents=True, exist_ok=True)
        for pre in PLUGINS_DIR.glob("*.pre"):
            shutil.copy(pre, self.site / pre.name)
        (self.site / "local.cf").write_text(LOCAL_CF)
        (self.home / "user_prefs").write_text("")

    def score_many(self, messages: list[bytes]) -> list[Score]:
        """Score messages in one run (`--mbox`: the rules are loaded once); rules hit from our X-Spam-Tests header.

        Spamassassin sorts an mbox by date, so results are matched to messages by Message-ID.
        """
        ids = [_message_id(data) for data in messages]
        if None in ids or len(set(ids)) != len(ids):
            raise ValueError("each message needs its own Message-ID to be scored in one run")
        if not messages:
            return []
        result = subprocess.run(
            [self.binary, "--local", "--mbox", "--siteconfigpath", str(self.site), "--configpath", str(RULES_DIR),
             "--prefspath", str(self.home / "user_prefs")],
            input=b"".join(_mbox_entry(data) for data in messages), capture_output=True, timeout=600, check=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C.UTF-8"})
        entries = re.split(rb"^" + re.escape(_SEPARATOR), result.stdout, flags=re.MULTILINE)[1:]
        verdicts = {_message_id(entry): _verdict(entry) for entry in entries}
        missing = [i for i in ids if i not in verdicts]
        if missing or len(entries) != len(messages):
            raise RuntimeError(f"spamassassin returned {len(entries)} of {len(messages)} messages "
                               f"(missing {missing[:3]}): {result.stderr.decode(errors='replace')[-2000:]}")
        return [verdicts[i] for i in ids]


def _message_id(data: bytes) -> bytes | None:
    head = data.split(b"\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = re.search(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", head, flags=re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None


#: The mbox "From " line of each message handed to spamassassin; it comes back in front of each result.
_SEPARATOR = b"From valuemail@localhost Sat Mar 20 08:00:00 2027\n"


def _mbox_entry(data: bytes) -> bytes:
    """One message as an mbox entry: LF line ends, body lines starting with "From " quoted (mboxrd)."""
    data = data.replace(b"\r\n", b"\n")
    data = re.sub(rb"^(>*From )", rb">\1", data, flags=re.MULTILINE)
    return _SEPARATOR + data + (b"" if data.endswith(b"\n") else b"\n") + b"\n"


def _verdict(entry: bytes) -> Score:
    """The score and rules from the X-Spam-Score and X-Spam-Tests headers of one scored message."""
    head = entry.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\n[ \t]+", " ", head)  # unfold
    found = dict(re.findall(r"^X-Spam-(Score|Tests): *(.*)$", head, flags=re.MULTILINE))
    if "Score" not in found:
        raise RuntimeError(f"spamassassin added no score to a message:\n{head[:2000]}")
    rules = {}
    for item in filter(None, (part.strip() for part in found.get("Tests", "").split(","))):
        name, _, points = item.partition("=")
        rules[name] = float(points)
    return Score(float(found["Score"]), rules)


def spammy_control() -> bytes:
    """A crude spam: shouting subject, money and pill promises, HTML only, no unsubscribe. Must score high."""
    html = ("<html><body><p><font size=7 color=red><b>100% FREE!!! CLAIM YOUR CASH PRIZE NOW!!!</b></font></p>"
            "<p>Dear friend, you have been selected as the WINNER of $1,000,000 US DOLLARS. This is not spam. "
            "Act now, limited time offer, risk free, no credit check, satisfaction guaranteed! Buy cheap viagra "
            "and cialis online, lose weight fast, earn extra cash from home, double your income!</p>"
            "<p><a href='http://198.51.100.7/claim.php?id=1'>CLICK HERE</a> to claim your prize and send us your "
            "bank account details today.</p></body></html>")
    return ("From: \"WINNER NOTIFICATION\" <winner@lottery-prize.example>\r\n"
            "To: undisclosed-recipients:;\r\n"
            "Subject: =?utf-8?q?=24=24=24_YOU_HAVE_WON_=241=2C000=2C000_CLAIM_NOW_=21=21=21?=\r\n"
            "Date: Sat, 20 Mar 2027 08:00:00 +0000\r\n"
            "Message-ID: <x@lottery-prize.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=\"us-ascii\"\r\n\r\n" + html + "\r\n").encode("ascii")


def gtube() -> bytes:
    """The Generic Test for Unsolicited Bulk Email, which every SpamAssassin scores 1000."""
    return (b"From: sender@example.org\r\nTo: rcpt@example.org\r\nSubject: test\r\n"
            b"Date: Sat, 20 Mar 2027 08:00:00 +0000\r\nMessage-ID: <gtube.1@example.org>\r\n\r\n"
            b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


# -- building the mails ---------------------------------------------------------------------------

def config_text(database_url: str, smtp_port: int) -> str:
    """A project config.toml: the example sender, a public base URL and SMTP to the loopback server."""
    return (f'[app]\nbase_url = "{BASE_URL}"\ntimezone = "{TZ_AMS}"\n'
            f'[database]\nurl = "{database_url}"\n'
            '[sender]\nfrom_email = "news@example.com"\nfrom_name = "Example Shop"\n'
            'postal_address = "Example Shop, Keizersgracht 1, 1015 CJ Amsterdam, NL"\n'
            'reply_to = "service@example.com"\n'
            '[provider]\nname = "smtp"\n'
            f'[provider.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout = 10\n'
            '[sending]\nconcurrency = 1\nbatch_size = 50\nretry_base_seconds = 0\n'
            '[tracking]\nclicks = true\nopens = true\n')


def add_people(engine, *, now: datetime) -> dict[str, int]:
    """Insert PEOPLE with their orders; returns their contact ids by address."""
    ids = {}
    with session_scope(engine) as session:
        for email, first, last, country, language, (count, euros) in PEOPLE:
            contact = Contact(email=email, email_key=email, first_name=first, last_name=last, country=country,
                              language=language, timezone=TZ_AMS, status="subscribed", attributes={},
                              created_at=now - timedelta(days=400), updated_at=now)
            session.add(contact)
            session.flush()
            ids[email] = contact.id
            for n in range(count):
                placed = now - timedelta(days=30 * (n + 1))
                session.execute(insert(Order).values(
                    order_id=f"{first}-{n}", contact_id=contact.id, placed_at=placed, total_cents=euros * 100,
                    currency="EUR", status="delivered", updated_at=placed))
    return ids


def campaign_ids(project: Path) -> list[str]:
    """Every example campaign: each file in campaigns/ but the segments file."""
    return sorted(p.stem for p in (project / "campaigns").glob("*.toml") if p.name != SEGMENTS_FILE)


def _cli(config: Path, *args: str, as_of: str) -> None:
    env = {"VALUEMAIL_SECRET_KEY": SECRET_KEY, "VALUEMAIL_AS_OF": as_of}
    result = CliRunner().invoke(main, ["--config", str(config), *args], env=env, catch_exceptions=False)
    if result.exit_code != 0:
        raise AssertionError(f"valuemail {' '.join(args)} failed:\n{result.output}")


def _take(sink: SmtpSink, start: int) -> list[bytes]:
    return [item.data for item in sink.messages[start:]]


def sent_mails(project: Path, database_url: str, engine, *, as_of: str) -> list[Mail]:
    """Every example campaign's mail (each segment variant, in English and Dutch) and the contest's mails, as sent.

    The test sends act as of `as_of` (the example campaigns are dated); the contest's mails at its own dates.
    """
    mails: list[Mail] = []
    config = project / "config.toml"
    ids = add_people(engine, now=datetime(2027, 3, 1, 9, tzinfo=timezone.utc))
    with SmtpSink() as sink:
        config.write_text(config_text(database_url, sink.port))
        settings = load_settings(config, env={}, secret_key=SECRET_KEY)
        mails.extend(_test_sends(config, engine, sink, as_of=as_of))
        mails.extend(_contest_mails(config, settings, engine, sink, ids))
        # The same variants again for Dutch speakers outside the Benelux (only benelux_dutch was Dutch so far).
        with session_scope(engine) as session:
            session.execute(update(Contact).values(language="nl"))
        seen = {(m.campaign, m.variant, m.language) for m in mails}
        mails.extend(m for m in _test_sends(config, engine, sink, as_of=as_of)
                     if (m.campaign, m.variant, m.language) not in seen)
    return mails


def _test_sends(config: Path, engine, sink: SmtpSink, *, as_of: str) -> list[Mail]:
    """`valuemail send CAMPAIGN --test-to` for every campaign but the contest: one mail per segment variant."""
    mails = []
    for campaign in campaign_ids(config.parent):
        if campaign == CONTEST:
            continue  # its invitation goes out for real in _contest_mails, which opens the contest
        start = len(sink.messages)
        _cli(config, "send", campaign, "--test-to", "inbox@example.net", as_of=as_of)
        mails.extend(_received(engine, campaign, data) for data in _take(sink, start))
    return mails


def _received(engine, campaign: str, data: bytes, *, variant: str = "{segment}") -> Mail:
    """A received mail, labelled with its delivery's segment and its contact's language (found by Message-ID)."""
    message_id = BytesParser(policy=policy.default).parsebytes(data)["Message-ID"]
    with Session(engine) as session:
        segment, language = session.execute(
            select(Delivery.segment, Contact.language).join(Contact, Contact.id == Delivery.contact_id)
            .where(Delivery.message_id == message_id)).one()
    return Mail(campaign, variant.format(segment=segment), language or "", data)


def _contest_mails(config: Path, settings, engine, sink: SmtpSink, ids: dict[str, int]) -> list[Mail]:
    """The contest's invitation sent for real, a share-link confirmation (English and Dutch), the winners' notices."""
    campaign = load_campaign(settings.campaigns_dir / f"{CONTEST}.toml", settings=settings, segment_names=None,
                             today=None)
    rules = contests.ContestRules.from_section(campaign.section, tz=settings.tz)
    inside = rules.opens_at + timedelta(days=1)
    # The invitation: a real run at the contest's start, which opens the contest.
    start = len(sink.messages)
    _cli(config, "send", CONTEST, as_of=rules.opens_at.isoformat())
    mails: list[Mail] = []
    for data in _take(sink, start):  # one invitation per variant (two contacts share "everyone")
        mail = _received(engine, CONTEST, data)
        if mail.variant not in {m.variant for m in mails}:
            mails.append(mail)
    start = len(sink.messages)
    with session_scope(engine) as session:
        # As many entrants as the contest has winners, one per invitation variant: each gets a winner's notice.
        for email in ENTRANTS:
            contests.enter(session, CONTEST, ids[email], rules=rules, now=inside)
        for friend, language in (("friend.one@example.net", "en"), ("vriend.twee@example.net", "nl")):
            contests.request_confirmation(session, campaign, rules=rules, email=friend,
                                          referrer_id=ids["emma.brown@example.org"], language=language,
                                          settings=settings, now=inside)
    Sender(engine=engine, settings=settings, clock=FixedClock(inside), provider_factory=provider_factory(settings),
           renderer=Renderer(settings.templates_dir)).drain(wait_for_retries=False)
    mails.extend(_received(engine, CONTEST, data, variant="confirm") for data in _take(sink, start))
    start = len(sink.messages)
    after_draw = (rules.draw_at or rules.closes_at) + timedelta(hours=1)
    _cli(config, "contest", "draw", CONTEST, as_of=after_draw.isoformat())
    mails.extend(_received(engine, CONTEST, data, variant="winner:{segment}") for data in _take(sink, start))
    return mails
