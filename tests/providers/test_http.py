"""The HTTP provider base: Retry-After parsing, mailboxes, provider sections in config.toml."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engine.config import load_settings
from engine.errors import ConfigError
from engine.providers.http import mailbox, retry_after_seconds

NOW = datetime(2027, 3, 20, 8, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Sat, 20 Mar 2027 08:01:30 GMT", 90.0),  # an HTTP-date (IMF-fixdate)
    ("Saturday, 20-Mar-27 08:00:05 GMT", 5.0),  # the obsolete RFC 850 form
    ("Sat Mar 20 08:00:10 2027", 10.0),  # asctime
    ("Sat, 20 Mar 2027 07:59:00 GMT", 0.0),  # already past
    ("soon", None),
    ("-5", None),
    ("", None),
    (None, None),
])
def test_retry_after_is_delta_seconds_or_an_http_date(value, expected):
    assert retry_after_seconds(value, now=NOW) == expected


@pytest.mark.parametrize("name, address, expected", [
    ("Example Shop", "news@example.com", "Example Shop <news@example.com>"),
    ("", "news@example.com", "news@example.com"),
    ("Smit, Ann", "ann@example.net", '"Smit, Ann" <ann@example.net>'),
    ('Joe "the" Sender, jr.', "joe@example.com", '"Joe \\"the\\" Sender, jr." <joe@example.com>'),
    ("Zoë Café", "zoe@example.com", "Zoë Café <zoe@example.com>"),
])
def test_mailbox_quotes_names_with_specials(name, address, expected):
    assert mailbox(name, address) == expected


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_provider_sections_have_documented_defaults(tmp_path):
    provider = load_settings(write(tmp_path, ""), env={}, secret_key="k").provider
    assert provider.postmark.base_url == "https://api.postmarkapp.com" and provider.postmark.token_env == "POSTMARK_TOKEN"
    assert provider.postmark.message_stream == "broadcast"
    assert provider.sendgrid.base_url == "https://api.sendgrid.com"
    assert provider.mailgun.base_url == "https://api.mailgun.net" and provider.mailgun.domain == ""
    assert provider.resend.base_url == "https://api.resend.com"
    assert (provider.ses.region, provider.ses.access_key_env, provider.ses.secret_key_env) == (
        "eu-west-1", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    assert (provider.postmark.connect_timeout, provider.postmark.read_timeout) == (10.0, 30.0)


def test_provider_sections_are_read(tmp_path):
    provider = load_settings(write(tmp_path, (
        '[provider]\nname = "mailgun"\n[provider.mailgun]\nbase_url = "https://api.eu.mailgun.net/"\n'
        'domain = "mg.shop.eu"\nread_timeout = 12.5\n[provider.ses]\nregion = "us-east-2"\n'
        'configuration_set = "news"\nsession_token_env = "AWS_SESSION_TOKEN"\n')), env={}, secret_key="k").provider
    assert provider.mailgun.base_url == "https://api.eu.mailgun.net" and provider.mailgun.domain == "mg.shop.eu"
    assert provider.mailgun.read_timeout == 12.5
    assert provider.ses.region == "us-east-2" and provider.ses.configuration_set == "news"
    assert provider.section("ses") is provider.ses and provider.section("someplugin") == {}


@pytest.mark.parametrize("text, expected", [
    ('[provider.postmark]\ntoken_evn = "X"\n', "config.toml:2: unknown key 'provider.postmark.token_evn'"),
    ('[provider.sendgrid]\nmessage_stream = "x"\n', "config.toml:2: unknown key 'provider.sendgrid.message_stream'"),
    ('[provider.mailgun]\nbase_url = "api.mailgun.net"\n', "config.toml:2: 'provider.mailgun.base_url': must start with"),
    ('[provider.resend]\nread_timeout = 0\n', "config.toml:2: 'provider.resend.read_timeout'"),
    ('[provider.ses]\nregion = "Ireland"\n', "config.toml:2: 'provider.ses.region': not an AWS region name"),
    ('[provider.ses]\ntoken_env = "X"\n', "config.toml:2: unknown key 'provider.ses.token_env'"),
    ('[provider]\nnmae = "smtp"\n', "unknown key 'nmae'"),
    ('[provider.postmrak]\ntoken_env = "X"\n', "unknown section [provider.postmrak]: no installed provider is called"),
])
def test_mistakes_in_provider_sections_are_errors(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={}, secret_key="k")
    assert expected in str(info.value)
