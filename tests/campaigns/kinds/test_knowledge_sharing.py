"""knowledge_sharing: digests that never repeat an item, respect max_items and survive broken feeds."""

from __future__ import annotations

import logging
import re
from datetime import date
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlmodel import Session

from engine.campaigns import load_campaign
from engine.campaigns.kinds import KindContext, Recipient, get_kind
from engine.campaigns.kinds.knowledge_sharing import SKIP_NO_NEW_ITEMS, KnowledgeSharing, Newsletter
from engine.config import load_settings
from engine.errors import CampaignError
from engine.models import ContentItem, Delivery, ItemSend, Run
from tests.conftest import write_settings
from tests.sending.test_send import cli
from tests.support.data import T0, add_contacts
from tests.test_feeds import RSS, FeedServer, Route

ITEMS = [  # (type, title)
    ("blog", "Beeswax wraps"),
    ("blog", "Pumpkin soup"),
    ("blog", "Overnight oats"),
    ("course", "Zero-waste kitchen course"),
    ("tip", "Descale your kettle"),
]


def campaign_text(items=ITEMS, *, max_items: int = 2, feeds: str = "", extra: str = "") -> str:
    text = (
        'name = "Digest"\nkind = "knowledge_sharing"\nvalues = ["functional"]\ntemplate = "knowledge_sharing.mjml"\n'
        'subject = "Your digest"\nsegments = ["benelux_dutch", "everyone"]\n\n'
        f'[newsletter]\nintro = "New things to try."\nmax_items = {max_items}\n{feeds}\n'
    )
    for type_, title in items:
        slug = title.lower().replace(" ", "-")
        text += (f'\n[[newsletter.items]]\ntype = "{type_}"\ntitle = "{title}"\n'
                 f'url = "https://shop.example.com/{slug}"\nsummary = "All about {title.lower()}."\n')
    return text + extra


@pytest.fixture
def digest(project, settings, db, database_url):
    """The project with only a `digest` campaign (and the repository's eco-newsletter for some tests)."""
    # Several digests a day to the same contacts: the frequency cap would stop the third.
    # The test feed server listens on loopback, which a feed may reach only when allowed.
    write_settings(project, database_url, sending={"max_per_day": 0, "max_per_week": 0},
                   extra='[feeds]\nallow_hosts = ["127.0.0.1"]\n')
    for other in (project / "campaigns").glob("*.toml"):
        if other.name not in ("segments.toml", "eco-newsletter.toml"):
            other.unlink()
    path = project / "campaigns" / "digest.toml"
    path.write_text(campaign_text())
    return path


class Outbox:
    """Reads the messages each send adds to the outbox."""

    def __init__(self, settings):
        self.directory = settings.var_dir / "outbox"
        self.seen: set[str] = set()

    def new(self) -> dict[str, str]:
        """{recipient: html} of the messages written since the last call."""
        found = {}
        for path in sorted(self.directory.glob("*.eml")) if self.directory.exists() else []:
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            found[msg["To"].addresses[0].addr_spec] = msg.get_body(("html",)).get_content()
        return found


def titles_in(html: str, titles=tuple(t for _, t in ITEMS)) -> list[str]:
    """The known titles a message shows, in the order they appear."""
    return sorted((t for t in titles if f">{t}</a>" in html), key=html.index)


def send(settings, *args) -> str:
    result = cli(settings, "send", *args)
    assert result.exit_code == 0, result.output
    return result.output


def skipped_reasons(db) -> list[str]:
    with Session(db) as s:
        return list(s.execute(select(Delivery.last_error).where(Delivery.status == "skipped")).scalars())


# -- sending -------------------------------------------------------------------------------------

def test_an_item_never_repeats_to_a_contact_across_occurrences_and_max_items_holds(digest, settings, db):
    add_contacts(db, 3, country="GB", language="en")
    outbox = Outbox(settings)
    received: dict[str, list[str]] = {}
    for again in ((), ("--again",), ("--again",)):
        send(settings, "digest", *again)
        mails = outbox.new()
        assert set(mails) == {"user0@example.com", "user1@example.com", "user2@example.com"}
        for email, html in mails.items():
            shown = titles_in(html)
            assert 1 <= len(shown) <= 2
            received.setdefault(email, []).extend(shown)
    for email, titles in received.items():
        assert sorted(titles) == sorted(t for _, t in ITEMS), email  # every item once, none twice

    # Nothing new is left: nobody gets an (empty) digest, and the ledger says why.
    output = send(settings, "digest", "--again")
    assert outbox.new() == {} and "skipped 3" in output
    assert skipped_reasons(db) == [SKIP_NO_NEW_ITEMS] * 3
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ItemSend)).scalar() == 15


def test_types_take_turns_and_file_order_holds_within_a_type(digest, settings, db):
    digest.write_text(campaign_text(max_items=3))
    add_contacts(db, 1, country="GB", language="en")
    outbox = Outbox(settings)
    send(settings, "digest")
    first = outbox.new()["user0@example.com"]
    # One of each type, groups in the order their first item was chosen (the file's order).
    assert titles_in(first) == ["Beeswax wraps", "Zero-waste kitchen course", "Descale your kettle"]
    assert first.index("On the blog") < first.index("Online courses") < first.index("Tips for every day")
    send(settings, "digest", "--again")
    assert titles_in(outbox.new()["user0@example.com"]) == ["Pumpkin soup", "Overnight oats"]


def test_a_contact_with_nothing_new_is_skipped_while_a_new_subscriber_gets_the_back_catalogue(digest, settings, db):
    digest.write_text(campaign_text(ITEMS[:2], max_items=5))
    add_contacts(db, 1, country="GB", language="en")
    outbox = Outbox(settings)
    send(settings, "digest")
    assert titles_in(outbox.new()["user0@example.com"]) == ["Beeswax wraps", "Pumpkin soup"]
    add_contacts(db, 1, start=1, country="GB", language="en")
    send(settings, "digest", "--again")
    mails = outbox.new()
    assert list(mails) == ["user1@example.com"]
    assert titles_in(mails["user1@example.com"]) == ["Beeswax wraps", "Pumpkin soup"]
    with Session(db) as s:
        skipped = s.execute(select(Delivery.email, Delivery.last_error).where(Delivery.status == "skipped")).all()
    assert skipped == [("user0@example.com", SKIP_NO_NEW_ITEMS)]


def test_items_of_a_delivery_that_failed_may_go_out_in_a_later_digest(digest, settings, db):
    add_contacts(db, 2, country="GB", language="en")
    outbox = Outbox(settings)
    send(settings, "digest")
    first = {email: titles_in(html) for email, html in outbox.new().items()}
    with Session(db) as s:
        s.execute(update(Delivery).where(Delivery.email == "user0@example.com").values(status="failed"))
        s.commit()
    send(settings, "digest", "--again")
    second = {email: titles_in(html) for email, html in outbox.new().items()}
    assert second["user0@example.com"] == first["user0@example.com"]  # they never arrived
    assert not set(second["user1@example.com"]) & set(first["user1@example.com"])


def test_a_resend_after_a_crash_shows_exactly_the_items_chosen_before(digest, settings, db):
    add_contacts(db, 2, country="GB", language="en")
    send(settings, "digest")
    with Session(db) as s:
        run_id = s.execute(select(Run.id)).scalar_one()
        deliveries = s.execute(select(Delivery.id, Delivery.contact_id, Delivery.email).order_by(Delivery.id)).all()
        recorded = s.execute(select(func.count()).select_from(ItemSend)).scalar()
    # The file gains an item that would now come first; a resend of the same delivery ignores it.
    digest.write_text(campaign_text([("blog", "Brand new post")] + ITEMS))
    campaign = load_campaign(digest, settings=settings, segment_names=None, today=None)
    kind = campaign.kind
    recipients = [Recipient(contact_id=c, email=e, segment="everyone", delivery_id=d) for d, c, e in deliveries]
    with Session(db) as s:
        skips = kind.prepare(campaign.variant("everyone").section, s,
                             KindContext(campaign_id="digest", now=T0, settings=settings, run_id=run_id), recipients)
        s.commit()
    assert skips == {}
    assert [i["title"] for i in recipients[0].extra["newsletter"]] == ["Beeswax wraps", "Zero-waste kitchen course"]
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ItemSend)).scalar() == recorded


def test_prepare_is_a_fixed_number_of_queries_whatever_the_batch_size(digest, settings, db):
    add_contacts(db, 40, country="GB", language="en")
    send(settings, "digest", "--test-to", "marketer@example.org")  # creates the campaign row and the items
    campaign = load_campaign(digest, settings=settings, segment_names=None, today=None)
    statements: list[str] = []
    event.listen(db, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def prepare(contact_ids: range) -> int:
        statements.clear()
        with Session(db) as s:
            run = Run(campaign_id="digest", occurrence_at=T0.replace(microsecond=len(contact_ids)), status="sending",
                      created_at=T0)
            s.add(run)
            s.flush()
            rows = [Delivery(run_id=run.id, contact_id=c, email=f"user{c - 1}@example.com", segment="everyone",
                             created_at=T0, updated_at=T0) for c in contact_ids]
            s.add_all(rows)
            s.flush()
            recipients = [Recipient(contact_id=d.contact_id, email=d.email, segment="everyone", delivery_id=d.id)
                          for d in rows]
            statements.clear()
            kind = campaign.kind
            kind.prepare(campaign.section, s, KindContext(campaign_id="digest", now=T0, settings=settings,
                                                          run_id=run.id), recipients)
            count = len(statements)
            s.commit()
        assert all(len(r.extra["newsletter"]) == 2 for r in recipients)
        return count

    assert prepare(range(1, 4)) == prepare(range(4, 41)) <= 8


def test_a_test_send_shows_items_but_records_nothing(digest, settings, db):
    add_contacts(db, 2, country="GB", language="en")
    outbox = Outbox(settings)
    send(settings, "digest", "--test-to", "marketer@example.org")
    assert titles_in(outbox.new()["marketer@example.org"]) == ["Beeswax wraps", "Zero-waste kitchen course"]
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ItemSend)).scalar() == 0
    send(settings, "digest")
    assert titles_in(outbox.new()["user0@example.com"]) == ["Beeswax wraps", "Zero-waste kitchen course"]


# -- feeds ---------------------------------------------------------------------------------------

@pytest.fixture
def feed_server():
    with FeedServer() as server:
        yield server


def test_a_failing_feed_is_logged_and_the_file_items_still_go_out(digest, settings, db, feed_server, caplog):
    feed_server.routes["/feed.xml"] = Route(b"", status=500)
    url = feed_server.url("/feed.xml")
    digest.write_text(campaign_text(feeds=f'feeds = [{{ url = "{url}", type = "blog", timeout = 2 }}]'))
    add_contacts(db, 2, country="GB", language="en")
    outbox = Outbox(settings)
    with caplog.at_level(logging.WARNING):
        send(settings, "digest")
    mails = outbox.new()
    assert len(mails) == 2 and all(titles_in(html) for html in mails.values())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(url in w and "HTTP 500" in w and "digest" in w for w in warnings), warnings


def test_feed_entries_go_out_newest_first_and_a_broken_feed_loses_nothing(digest, settings, db, feed_server, caplog):
    feed_server.routes["/feed.xml"] = Route(RSS)
    url = feed_server.url("/feed.xml")
    digest.write_text(campaign_text([], feeds=f'feeds = [{{ url = "{url}" }}]'))
    add_contacts(db, 2, country="GB", language="en")
    outbox = Outbox(settings)
    feed_titles = ("Newest: compost on a balcony", "Beeswax wraps &amp; how to refresh them", "Recipe: pumpkin soup")
    send(settings, "digest")
    first = outbox.new()
    assert [titles_in(h, feed_titles) for h in first.values()] == [list(feed_titles[:2])] * 2

    # The feed breaks: what was stored is still there and still used.
    feed_server.routes["/feed.xml"] = Route(RSS[: len(RSS) // 2])
    with caplog.at_level(logging.WARNING):
        send(settings, "digest", "--again")
    assert any(url in r.getMessage() and "malformed XML" in r.getMessage() for r in caplog.records)
    second = outbox.new()
    assert [titles_in(h, feed_titles) for h in second.values()] == [[feed_titles[2]]] * 2
    with Session(db) as s:
        stored = s.execute(select(ContentItem.item_key, ContentItem.source, ContentItem.published_at)
                           .order_by(ContentItem.id)).all()
    assert sorted(k for k, _, _ in stored) == ["https://shop.example.com/blog/balcony-compost",
                                               "https://shop.example.com/blog/pumpkin-soup", "post-101"]
    assert all(src == "feed" and published is not None for _, src, published in stored)

    # Fetched again, the same entries are not stored twice; nothing is new for anyone.
    feed_server.routes["/feed.xml"] = Route(RSS)
    send(settings, "digest", "--again")
    assert outbox.new() == {}
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ContentItem)).scalar() == 3


def test_a_feed_on_a_private_address_is_refused_unless_allowed(digest, project, settings, db, database_url,
                                                                 feed_server, caplog):
    """No [feeds] allow_hosts: a loopback feed (the app itself, say) is never fetched; the file items go out."""
    write_settings(project, database_url, sending={"max_per_day": 0, "max_per_week": 0})
    feed_server.routes["/feed.xml"] = Route(RSS)
    url = feed_server.url("/feed.xml")
    digest.write_text(campaign_text(feeds=f'feeds = [{{ url = "{url}" }}]'))
    add_contacts(db, 1, country="GB", language="en")
    outbox = Outbox(settings)
    with caplog.at_level(logging.WARNING):
        send(settings, "digest")
    assert feed_server.requests == [] and len(outbox.new()) == 1
    assert any(url in r.getMessage() and "127.0.0.1 is a loopback address" in r.getMessage() for r in caplog.records)


# -- languages and the example campaign ----------------------------------------------------------

def test_dutch_and_english_readers_get_their_language_and_variant(digest, settings, db):
    digest.unlink()
    add_contacts(db, 1)  # NL, nl: the benelux_dutch variant
    add_contacts(db, 1, start=1, country="GB", language="en")
    send(settings, "eco-newsletter")
    mails = Outbox(settings).new()
    dutch, english = mails["user0@example.com"], mails["user1@example.com"]
    assert '<html lang="nl"' in dutch and '<html lang="en"' in english
    assert "Groen leven, stap voor stap" in dutch and "Zero-waste keuken: een gratis online cursus" in dutch
    assert "Bekijk de cursus" in dutch and "Online cursussen" in dutch
    assert "Green living, one small step at a time" in english and "View the course" in english
    assert "Zero-waste kitchen: a free five-lesson online course" in english and "Online courses" in english
    for html in (dutch, english):
        images = re.findall(r"<img [^>]*>", html)
        assert images and all(re.search(r'\balt="', img) for img in images)  # decorative ones have alt=""
        assert html.count("<h3 ") == 4  # max_items = 4


def test_a_variant_may_word_a_shared_item_in_its_own_language(digest, settings, db):
    dutch = ('\n[variants.benelux_dutch.newsletter]\nmax_items = 1\n'
             '[[variants.benelux_dutch.newsletter.items]]\ntype = "blog"\ntitle = "Bijenwasdoeken"\n'
             'url = "https://shop.example.com/beeswax-wraps"\n')
    digest.write_text(campaign_text(ITEMS[:1], max_items=1, extra=dutch))
    add_contacts(db, 1)  # NL, nl
    add_contacts(db, 1, start=1, country="GB", language="en")
    outbox = Outbox(settings)
    send(settings, "digest")
    mails = outbox.new()
    assert titles_in(mails["user0@example.com"], ("Bijenwasdoeken",)) == ["Bijenwasdoeken"]
    assert titles_in(mails["user1@example.com"]) == ["Beeswax wraps"]
    with Session(db) as s:
        assert s.execute(select(func.count()).select_from(ContentItem)).scalar() == 1  # one item, two wordings
    send(settings, "digest", "--again")
    assert outbox.new() == {}


def test_the_example_campaign_validates(settings, project):
    result = cli(settings, "validate", str(project / "campaigns" / "eco-newsletter.toml"))
    assert result.exit_code == 0, result.output
    assert "1 campaign(s), 2 variant(s)" in result.output


# -- the [newsletter] section --------------------------------------------------------------------

@pytest.fixture
def plain_settings(tmp_path):
    """Settings for loader tests, which need no database."""
    (tmp_path / "templates" / "emails").mkdir(parents=True)
    (tmp_path / "templates" / "emails" / "knowledge_sharing.mjml").write_text("<mjml></mjml>")
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "config.toml").write_text("")
    return load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def problems(settings, text: str) -> list[str]:
    path = settings.campaigns_dir / "digest.toml"
    path.write_text(text)
    with pytest.raises(CampaignError) as info:
        load_campaign(path, settings=settings, segment_names=["benelux_dutch", "everyone"], today=date(2027, 3, 1))
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return lines[occurrence - 1]


def test_a_valid_section_loads(plain_settings):
    path = plain_settings.campaigns_dir / "digest.toml"
    path.write_text(campaign_text(feeds='feeds = [{ url = "https://shop.example.com/feed.xml", timeout = 5 }]'))
    campaign = load_campaign(path, settings=plain_settings, segment_names=["benelux_dutch", "everyone"],
                             today=date(2027, 3, 1))
    section = campaign.section
    assert isinstance(section, Newsletter) and section.max_items == 2 and len(section.items) == 5
    assert section.feeds[0].type == "blog" and section.feeds[0].timeout == 5.0
    assert section.items[0].item_key == "https://shop.example.com/beeswax-wraps"


@pytest.mark.parametrize("old, new, message", [
    ('type = "blog"', 'type = "webinar"',
     "'newsletter.items[0].type': Input should be 'course', 'forum', 'blog' or 'tip'"),
    ('url = "https://shop.example.com/beeswax-wraps"', 'url = "shop.example.com/x"',
     "'newsletter.items[0].url': must be an absolute http(s) URL such as https://example.com/page "
     "(got 'shop.example.com/x')"),
    ('summary = ', 'image_url = "ftp://x/y.jpg"\nsummary = ',
     "'newsletter.items[0].image_url': must be an absolute http(s) URL"),
    ('summary = ', 'colour = "green"\nsummary = ', "unknown key 'newsletter.items[0].colour'"),
    ('title = "Beeswax wraps"', 'title = "  "', "'newsletter.items[0].title': must not be empty"),
])
def test_a_bad_item_is_reported_with_file_and_line(plain_settings, old, new, message):
    text = campaign_text(ITEMS[:1]).replace(old, new)
    found = problems(plain_settings, text)
    needle = new.split("\n")[0]
    assert len(found) == 1 and found[0].startswith(f"digest.toml:{line_of(text, needle)}: {message}"), found


def test_max_items_must_be_at_least_one(plain_settings):
    text = campaign_text(max_items=0)
    assert problems(plain_settings, text) == [
        f"digest.toml:{line_of(text, 'max_items')}: 'newsletter.max_items': Input should be greater than or equal to 1"]


def test_a_bad_feed_is_reported_with_file_and_line(plain_settings):
    text = campaign_text(feeds='feeds = [{ url = "not a url", type = "podcast" }]')
    found = problems(plain_settings, text)
    line = line_of(text, "feeds = ")
    assert f"digest.toml:{line}: 'newsletter.feeds[0].url': must be an absolute http(s) URL such as " \
           "https://example.com/page (got 'not a url')" in found
    assert any(p.startswith(f"digest.toml:{line}: 'newsletter.feeds[0].type': Input should be") for p in found)


def test_a_digest_needs_items_or_feeds_and_distinct_keys(plain_settings):
    text = campaign_text([])
    assert problems(plain_settings, text) == [
        f"digest.toml:{line_of(text, '[newsletter]')}: 'newsletter': give [[newsletter.items]] or feeds = [...] "
        "(or both): a digest needs content"]
    text = campaign_text(ITEMS[:2] + ITEMS[:1])
    assert problems(plain_settings, text) == [
        f"digest.toml:{line_of(text, 'beeswax-wraps', 2)}: 'newsletter.items.2.url': item 3 has the same key as "
        "item 1 ('https://shop.example.com/beeswax-wraps'); give one of them a distinct `key`"]


def test_a_digest_runs_on_at_or_cron_schedules_only(plain_settings):
    text = campaign_text().replace('segments = ', 'schedule = { trigger = "order", delay = "7d" }\nsegments = ')
    assert any("'schedule': 'knowledge_sharing' campaigns run on at or cron schedules" in p
               for p in problems(plain_settings, text))


def test_validate_and_preview_show_the_file_items_mixed_by_type():
    kind = get_kind("knowledge_sharing")
    assert isinstance(kind, KnowledgeSharing)
    section = Newsletter.model_validate({
        "max_items": 3,
        "items": [{"type": t, "title": title, "url": f"https://x.example/{n}"} for n, (t, title) in enumerate(ITEMS)],
        "feeds": [{"url": "https://blog.example.org/feed.xml", "type": "forum"}],
    })
    sample = kind.sample_recipient_extra(section)["newsletter"]
    assert [(i["type"], i["title"]) for i in sample] == [
        ("blog", "Beeswax wraps"), ("course", "Zero-waste kitchen course"), ("tip", "Descale your kettle")]
    context = kind.context(section, Recipient(contact_id=0, email="a@b.c", segment="everyone"))["newsletter"]
    assert [g["type"] for g in context["groups"]] == ["blog", "course", "tip"]
    assert context["intro_paragraphs"] == [] and context["items"] == sample
