"""`valuemail validate` and `valuemail preview` as a marketer runs them."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

from tests.conftest import write_settings
from tests.sending.test_send import SEGMENTS, only_spring_sale, cli
from tests.support.data import add_contacts


def test_the_repository_project_validates(project, settings):
    result = cli(settings, "validate")
    assert result.exit_code == 0, result.output
    assert "campaign(s)" in result.output and "compiled and rendered" in result.output


def test_a_mistake_in_a_campaign_names_file_and_line(project, settings):
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("percent = 15", "percent = 115"))
    result = cli(settings, "validate")
    assert result.exit_code == 1
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("percent = 115"))
    assert f"spring-sale.toml:{line}: 'offer.percent': Input should be less than or equal to 100" in result.output


def test_a_template_referring_to_a_missing_variable_is_an_error(project, settings):
    path = project / "campaigns" / "spring-sale.toml"
    path.write_text(path.read_text().replace("{{ contact.first_name or 'Hello' }}", "{{ contact.nickname }}"))
    result = cli(settings, "validate")
    assert result.exit_code == 1
    assert "nickname" in result.output and "spring-sale" in result.output


def test_a_hostile_template_is_refused(project, settings):
    template = project / "templates" / "emails" / "seasonal_discount.mjml"
    template.write_text(template.read_text().replace("</mj-body>", "<mj-raw>{% include '../../config.toml' %}</mj-raw></mj-body>"))
    result = cli(settings, "validate")
    assert result.exit_code == 1
    assert "seasonal_discount.mjml" in result.output


def test_bad_segments_file_names_its_line(project, settings):
    (project / "campaigns" / "segments.toml").write_text("[gold]\nltv_minimum = 5\n\n[everyone]\n")
    result = cli(settings, "validate")
    assert result.exit_code == 1 and "segments.toml:2:" in result.output


def test_preview_writes_html_text_and_eml_per_variant(project, settings, db):
    only_spring_sale(project)
    add_contacts(db, 3)
    out = project / "out"
    result = cli(settings, "preview", "spring-sale", "--out", str(out))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"spring-sale-{seg}.{ext}" for seg in ("everyone", "gold") for ext in ("eml", "html", "txt")]
    msg = BytesParser(policy=policy.default).parsebytes((out / "spring-sale-everyone.eml").read_bytes())
    assert str(msg["Subject"]) == "Person0, 15% off this spring"  # the segment's first real member
    assert "Person0" in (out / "spring-sale-everyone.txt").read_text()
    assert "Person0" in (out / "spring-sale-everyone.html").read_text()
    one = cli(settings, "preview", "spring-sale", "--segment", "gold", "--contact", "user2@example.com", "--out", str(project / "one"))
    assert one.exit_code == 0, one.output
    assert "20%" in (project / "one" / "spring-sale-gold.html").read_text()
    assert "Gold members" in one.output
    missing = cli(settings, "preview", "spring-sale", "--segment", "platinum")
    assert missing.exit_code == 1 and "no segment 'platinum'" in missing.output


def test_an_uninstalled_fallback_is_an_error_and_a_missing_secret_a_warning(project, database_url):
    settings = write_settings(project, database_url, extra='[provider]\nname = "postmark"\nfallback = "pigeon"\n')
    result = cli(settings, "validate", POSTMARK_TOKEN="")
    assert result.exit_code == 1, result.output
    assert "[provider] fallback: provider 'pigeon' is not installed (installed: mailgun, outbox, postmark" in result.output
    assert "environment variable POSTMARK_TOKEN is not set" in result.output and "(warning)" in result.output

    write_settings(project, database_url, extra='[provider]\nname = "postmark"\nfallback = "outbox"\n')
    result = cli(settings, "validate", POSTMARK_TOKEN="pm-token")
    assert result.exit_code == 0, result.output
    assert "[provider]" not in result.output


def test_a_mistake_in_a_subject_names_the_campaign_file_and_the_subject_line(project, settings):
    path = project / "campaigns" / "spring-sale.toml"
    text = path.read_text().replace("{{ contact.first_name or 'Hello' }}", "{{ contact.nickname }}", 1)
    path.write_text(text)
    result = cli(settings, "validate")
    assert result.exit_code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("subject = "))
    assert (f"{path}:{line}: subject: undefined variable 'contact.nickname' (campaign spring-sale, variant everyone)"
            in result.output)
    assert "seasonal_discount.mjml" not in result.output and "variant spring-sale" not in result.output


def test_a_mistake_in_a_variants_own_subject_names_that_line(project, settings):
    path = project / "campaigns" / "spring-sale.toml"
    text = path.read_text().replace("Gold members: {{ offer.percent }}%", "Gold members: {{ offer.pct }}%")
    path.write_text(text)
    result = cli(settings, "validate")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "offer.pct" in t)
    assert result.exit_code == 1
    assert f"{path}:{line}: variants.gold.subject: undefined variable 'offer.pct' (campaign spring-sale, variant gold)" \
        in result.output
