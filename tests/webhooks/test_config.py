"""The [webhooks] section: defaults, per-provider tables, and errors that name the line."""

from __future__ import annotations

import pytest

from engine.config import load_settings
from engine.errors import ConfigError


def load(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, env={}, secret_key="k")


def test_defaults(tmp_path):
    hooks = load(tmp_path, "").webhooks
    assert (hooks.tolerance_seconds, hooks.soft_bounce_limit, hooks.soft_bounce_days) == (300, 3, 30)
    assert hooks.ses.topics == []
    assert (hooks.sendgrid.public_key_env, hooks.mailgun.signing_key_env, hooks.postmark.username,
            hooks.postmark.password_env, hooks.resend.secret_env) == (
        "SENDGRID_WEBHOOK_PUBLIC_KEY", "MAILGUN_WEBHOOK_SIGNING_KEY", "", "POSTMARK_WEBHOOK_PASSWORD",
        "RESEND_WEBHOOK_SECRET")


def test_every_key(tmp_path):
    hooks = load(tmp_path, """
[webhooks]
tolerance_seconds = 120
soft_bounce_limit = 4
soft_bounce_days = 14
[webhooks.ses]
topics = ["arn:aws:sns:eu-west-1:123456789012:ses-bounces", "arn:aws-cn:sns:cn-north-1:123456789012:b"]
[webhooks.sendgrid]
public_key_env = "SG_KEY"
[webhooks.mailgun]
signing_key_env = "MG_KEY"
[webhooks.postmark]
username = "hooks"
password_env = "PM_PASS"
[webhooks.resend]
secret_env = "RS_SECRET"
""").webhooks
    assert (hooks.tolerance_seconds, hooks.soft_bounce_limit, hooks.soft_bounce_days) == (120, 4, 14)
    assert len(hooks.ses.topics) == 2 and hooks.postmark.username == "hooks" and hooks.resend.secret_env == "RS_SECRET"


@pytest.mark.parametrize("text, expected", [
    ('[webhooks]\ntolerance_seconds = 0\n', "config.toml:2: 'webhooks.tolerance_seconds'"),
    ('[webhooks]\nsoft_bounce_limit = "3"\n', "config.toml:2: 'webhooks.soft_bounce_limit'"),
    ('[webhooks.ses]\ntopics = "arn:aws:sns:eu-west-1:1:t"\n', "config.toml:2: 'webhooks.ses.topics'"),
    ('[webhooks.mailgun]\nsigning_key = "literal"\n', "config.toml:2: unknown key 'webhooks.mailgun.signing_key'"),
    ('[webhooks.sparkpost]\nkey_env = "X"\n', "unknown key 'webhooks.sparkpost'"),
])
def test_mistakes_name_the_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)
