"""Settings: defaults, environment overrides, and errors that name file, line and key."""

from __future__ import annotations

import stat

import pytest

from engine.config import load_settings
from engine.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=kwargs.pop("env", {}), **kwargs)
    return str(info.value)


def test_a_missing_file_means_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.provider.name == "outbox" and settings.sending.batch_size == 500
    assert settings.database_url == f"sqlite:///{tmp_path}/var/valuemail.db"
    assert settings.app.timezone == "Europe/Amsterdam"


def test_an_empty_section_keeps_every_default(tmp_path):
    settings = load_settings(write(tmp_path, "[sending]\n[provider.smtp]\n"), env={})
    assert settings.sending.concurrency == 32 and settings.provider.smtp.port == 1025


def test_an_explicit_missing_file_is_an_error(tmp_path):
    assert "config file not found" in error_of(tmp_path / "nope.toml")


@pytest.mark.parametrize("text, expected", [
    ('[sending]\nbatch_size = 500\nbach_size = 10\n', "config.toml:3: unknown key 'sending.bach_size'"),
    ('[sending]\nconcurrency = "4"\n', "config.toml:2: 'sending.concurrency': Input should be a valid integer"),
    ('[sending]\nconcurrency = 0\n', "config.toml:2: 'sending.concurrency': Input should be greater than or equal to 1"),
    ('[app]\ntimezone = "Mars/Olympus"\n', "config.toml:2: 'app.timezone': unknown IANA timezone"),
    ('[app]\nbase_url = "example.com"\n', "config.toml:2: 'app.base_url': must start with http:// or https://"),
    ('[provider.smtp]\nsecurity = "ssl"\n', "config.toml:2: 'provider.smtp.security': Input should be 'none', 'starttls' or 'tls'"),
    ('[provider]\nname = "smtp"\n\n[provider.smtp]\nport = 99999\n', "config.toml:5: 'provider.smtp.port'"),
    ('[mail]\nx = 1\n', "config.toml:1: unknown section or key 'mail'"),
    ('[sending\nx = 1\n', "config.toml:1: invalid TOML"),
    ('[sending]\nrate_per_second = -1\n', "config.toml:2: 'sending.rate_per_second'"),
    ('[sender]\nfeedback_id = "shop:news"\n', "config.toml:2: 'sender.feedback_id': String should match pattern"),
])
def test_mistakes_name_the_line_and_key(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, '[database]\nurl = "sqlite:///var/a.db"\n')
    env = {"VALUEMAIL_DATABASE_URL": "postgresql://u@db/x", "VALUEMAIL_SECRET_KEY": "s3cret",
           "VALUEMAIL_BASE_URL": "https://mail.example.com/", "VALUEMAIL_PROVIDER": "smtp"}
    settings = load_settings(path, env=env)
    assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert settings.secret_key == "s3cret"
    assert settings.app.base_url == "https://mail.example.com"
    assert settings.provider.name == "smtp"


def test_a_bad_environment_value_is_refused(tmp_path):
    assert "$VALUEMAIL_BASE_URL: 'app.base_url': Value error, must start with http" in error_of(
        write(tmp_path, ""), env={"VALUEMAIL_BASE_URL": "ftp://x"})


def test_a_secret_key_is_generated_once_and_kept_private(tmp_path, caplog):
    path = write(tmp_path, "")
    first = load_settings(path, env={})
    assert "set VALUEMAIL_SECRET_KEY in production" in caplog.text
    second = load_settings(path, env={})
    key_file = tmp_path / "var" / "secret_key"
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    settings = load_settings(write(tmp_path, '[paths]\ncampaigns = "c"\n'), env={})
    assert settings.campaigns_dir == tmp_path / "c" and settings.templates_dir == tmp_path / "templates/emails"


def test_tracking_defaults_to_clicks_on_and_opens_off(tmp_path):
    settings = load_settings(write(tmp_path, ""), env={})
    assert settings.tracking.clicks is True and settings.tracking.opens is False
    settings = load_settings(write(tmp_path, "[tracking]\nclicks = false\nopens = true\n"), env={})
    assert settings.tracking.clicks is False and settings.tracking.opens is True


@pytest.mark.parametrize("text, expected", [
    ('[tracking]\nopens = "yes"\n', "config.toml:2: 'tracking.opens': Input should be a valid boolean"),
    ('[tracking]\nclicks = 1\n', "config.toml:2: 'tracking.clicks': Input should be a valid boolean"),
    ('[tracking]\npixel = true\n', "config.toml:2: unknown key 'tracking.pixel'"),
])
def test_tracking_switches_are_strict_booleans(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_the_shipped_config_documents_the_tracking_switches():
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    settings = load_settings(shipped, env={}, secret_key="k")
    assert "[tracking]" in shipped.read_text()
    assert settings.tracking.clicks is True and settings.tracking.opens is False
