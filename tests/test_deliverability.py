"""Every example campaign's mail, as sent over SMTP, scores under 2.0 with SpamAssassin (local rules only)."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest

from tests.conftest import AS_OF
from tests.support.deliverability import TARGET, SpamAssassin, campaign_ids, gtube, sent_mails, spammy_control


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> SpamAssassin:
    return SpamAssassin(tmp_path_factory.mktemp("spamassassin"))


def test_every_example_mail_scores_below_the_target(scorer, project, database_url, db):
    mails = sent_mails(project, database_url, db, as_of=AS_OF)

    # Every campaign file, each segment variant in English and Dutch, and the contest's transactional mails.
    sent = {(m.campaign, m.variant, m.language) for m in mails}
    assert {c for c, _, _ in sent} == set(campaign_ids(project))
    expected = {("loyalty-statement", variant, language) for variant in ("gold", "silver", "everyone")
                for language in ("en", "nl")}
    expected |= {("eco-newsletter", "benelux_dutch", "nl"), ("eco-newsletter", "everyone", "en"),
                 ("eco-newsletter", "everyone", "nl"), ("order-survey", "gold", "en"), ("spring-sale", "gold", "nl"),
                 ("trial-drip", "benelux_dutch", "nl"), ("spring-contest", "gold", "en"),
                 ("spring-contest", "benelux_dutch", "nl"), ("spring-contest", "confirm", "en"),
                 ("spring-contest", "confirm", "nl"), ("spring-contest", "winner:gold", "en"),
                 ("spring-contest", "winner:benelux_dutch", "nl"), ("spring-contest", "winner:everyone", "en")}
    assert expected <= sent, expected - sent
    assert len(sent) == len(mails)
    for mail in mails:
        parsed = BytesParser(policy=policy.default).parsebytes(mail.data)
        # The sent form: our bulk-mail headers are there, and a text part beside the HTML.
        assert parsed["List-Unsubscribe"].startswith("<https://news.example.com/u/")
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed["Feedback-ID"].endswith(":valuemail")
        assert parsed.get_body(("plain",)) is not None and parsed.get_body(("html",)) is not None

    # The controls go through the same run, so a scorer that scores nothing cannot pass.
    *scores, crude, reference = scorer.score_many([m.data for m in mails] + [spammy_control(), gtube()])
    assert crude.score >= 5.0, f"the crude spam scored only {crude.score}: {crude.fired()}"
    assert {"DEAR_FRIEND", "SUBJ_ALL_CAPS", "MIME_HTML_ONLY"} <= set(crude.rules)
    assert reference.rules.get("GTUBE") == 1000
    too_high = [f"{m.campaign} / {m.variant} / {m.language} ({m.subject!r}): {score.score} — {score.fired()}"
                for m, score in zip(mails, scores) if score.score >= TARGET]
    assert not too_high, f"{len(too_high)} mail(s) score {TARGET} or more:\n" + "\n".join(too_high)
