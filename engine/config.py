"""Typed, validated settings read from `config.toml`, with environment overrides."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .tomlpos import TomlDocument
from .validation import parse_model

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "config.toml"

#: Environment variables that override settings from the file.
ENV_OVERRIDES = {
    "VALUEMAIL_DATABASE_URL": ("database", "url"),
    "VALUEMAIL_BASE_URL": ("app", "base_url"),
    "VALUEMAIL_PROVIDER": ("provider", "name"),
}
SECRET_KEY_ENV = "VALUEMAIL_SECRET_KEY"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AppSettings(_Section):
    base_url: str = "http://127.0.0.1:8000"
    timezone: str = "Europe/Amsterdam"
    secret_key_env: str = SECRET_KEY_ENV

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/valuemail.db"


class PathSettings(_Section):
    campaigns: str = "campaigns"
    templates: str = "templates/emails"
    var: str = "var"


class SenderSettings(_Section):
    from_email: str = "news@example.com"
    from_name: str = "Example Shop"
    reply_to: str = ""
    postal_address: str = "Example Shop, Keizersgracht 1, 1015 CJ Amsterdam, NL"
    unsubscribe_mailto: str = ""


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password_env: str = "VALUEMAIL_SMTP_PASSWORD"
    timeout: float = Field(30.0, gt=0)
    local_hostname: str = ""


class OutboxSettings(_Section):
    directory: str = ""  # empty: <var>/outbox


class HttpProviderSettings(_Section):
    token_env: str = ""
    base_url: str = ""
    timeout: float = Field(30.0, gt=0)
    domain: str = ""  # mailgun
    region: str = ""  # ses
    access_key_env: str = ""  # ses
    secret_key_env: str = ""  # ses


class ProviderSettings(_Section):
    name: str = "outbox"
    outbox: OutboxSettings = OutboxSettings()
    smtp: SmtpSettings = SmtpSettings()
    postmark: HttpProviderSettings = HttpProviderSettings(token_env="POSTMARK_TOKEN", base_url="https://api.postmarkapp.com")
    sendgrid: HttpProviderSettings = HttpProviderSettings(token_env="SENDGRID_API_KEY", base_url="https://api.sendgrid.com")
    mailgun: HttpProviderSettings = HttpProviderSettings(token_env="MAILGUN_API_KEY", base_url="https://api.mailgun.net")
    resend: HttpProviderSettings = HttpProviderSettings(token_env="RESEND_API_KEY", base_url="https://api.resend.com")
    ses: HttpProviderSettings = HttpProviderSettings(
        access_key_env="AWS_ACCESS_KEY_ID", secret_key_env="AWS_SECRET_ACCESS_KEY", region="eu-west-1"
    )


class SendingSettings(_Section):
    rate_per_second: float = Field(0, ge=0)
    concurrency: int = Field(4, ge=1, le=64)
    batch_size: int = Field(500, ge=1, le=100_000)
    max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(60, ge=0)
    retry_max_seconds: float = Field(3600, ge=0)
    pause_after_errors: int = Field(25, ge=0)  # consecutive failures before a run pauses; 0 = never
    lease_seconds: float = Field(120, gt=0)  # a worker silent this long is presumed dead
    max_per_day: int = Field(2, ge=0)  # marketing mails per contact per 24 h, all campaigns (0 = no cap)
    max_per_week: int = Field(5, ge=0)  # ... and per 7 days


class LtvSettings(_Section):
    default_margin: float = Field(0.3, ge=0, le=1)
    lifetime_months: float = Field(0, ge=0)  # 0: t is the customer's observed tenure
    default_currency: str = "EUR"


class SchedulerSettings(_Section):
    tick_seconds: float = Field(30, gt=0)  # how often `valuemail run` looks for due occurrences
    catch_up_hours: float = Field(24, ge=0)  # an at/cron occurrence missed by longer is skipped
    trigger_window_days: float = Field(3, gt=0)  # triggered sends due longer ago are never sent
    lease_seconds: float = Field(90, gt=0)  # the active scheduler's lease; another takes over after
    purge_unconfirmed_after_days: int = Field(30, ge=1)  # contest-only contacts never confirmed are erased after


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class TrackingSettings(_Section):
    clicks: bool = True  # rewrite http(s) links to /r/<token> and record clicks
    opens: bool = False  # add a 1x1 pixel (/o/<token>.gif) and record opens; images are often blocked
    attribution_days: int = Field(7, ge=1, le=365)  # an order this soon after a click is credited to that mail


class DkimSettings(_Section):
    """`[dkim]`: signing of SMTP mail (filled in by the DKIM work)."""


class WebhookSettings(_Section):
    """`[webhooks]`: verification of provider bounce and complaint webhooks (filled in by that work)."""


class Settings(_Section):
    app: AppSettings = AppSettings()
    database: DatabaseSettings = DatabaseSettings()
    paths: PathSettings = PathSettings()
    sender: SenderSettings = SenderSettings()
    provider: ProviderSettings = ProviderSettings()
    sending: SendingSettings = SendingSettings()
    ltv: LtvSettings = LtvSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    web: WebSettings = WebSettings()
    tracking: TrackingSettings = TrackingSettings()
    dkim: DkimSettings = DkimSettings()
    webhooks: WebhookSettings = WebhookSettings()

    # Resolved at load time, not read from the file.
    root: Path = Path(".")
    secret_key: str = ""
    source: str = "(defaults)"

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)

    def path(self, relative: str) -> Path:
        """Resolve a path from the settings relative to the config file's directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def var_dir(self) -> Path:
        return self.path(self.paths.var)

    @property
    def campaigns_dir(self) -> Path:
        return self.path(self.paths.campaigns)

    @property
    def templates_dir(self) -> Path:
        return self.path(self.paths.templates)

    @property
    def database_url(self) -> str:
        """The database URL, with a relative SQLite path resolved against the config directory."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
            return prefix + str((self.root / url[len(prefix):]).resolve())
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.app.timezone)


_FILE_KEYS = ("app", "database", "paths", "sender", "provider", "sending", "ltv", "scheduler", "web", "tracking", "dkim",
              "webhooks")


def load_settings(path: str | Path | None = None, *, env: dict[str, str] | None = None, secret_key: str | None = None) -> Settings:
    """Read settings from `path` (or `$VALUEMAIL_CONFIG`, or ./config.toml); a missing file means defaults."""
    env = dict(os.environ if env is None else env)
    explicit = path is not None or "VALUEMAIL_CONFIG" in env
    cfg_path = Path(path or env.get("VALUEMAIL_CONFIG") or DEFAULT_CONFIG)
    if cfg_path.exists():
        doc = TomlDocument.load(cfg_path, error=ConfigError)
        data = doc.data
        for key in data:
            if key not in _FILE_KEYS:
                raise ConfigError.single(cfg_path, doc.line_of((key,)), f"unknown section or key '{key}'")
        settings = parse_model(Settings, data, doc, error=ConfigError)
        source = str(cfg_path)
    elif explicit:
        raise ConfigError.single(cfg_path, None, "config file not found")
    else:
        settings = Settings()
        source = "(defaults)"
    root = cfg_path.resolve().parent
    overrides: dict = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            current = getattr(overrides.get(section) or getattr(settings, section), "model_dump")()
            current[key] = env[var]
            try:
                overrides[section] = getattr(settings, section).model_validate(current)
            except ValidationError as exc:
                raise ConfigError.single(f"${var}", None, f"'{section}.{key}': {exc.errors()[0]['msg']}") from None
    settings = settings.model_copy(update={**overrides, "root": root, "source": source})
    key = secret_key or env.get(settings.app.secret_key_env) or _stored_secret_key(settings.var_dir)
    return settings.model_copy(update={"secret_key": key})


def _stored_secret_key(var_dir: Path) -> str:
    """Read the generated secret key under var/, creating it once on first use."""
    key_file = var_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    log.warning(
        "generated a secret key in %s; set %s in production so links stay valid across machines",
        key_file, SECRET_KEY_ENV,
    )
    return key


def secret_from_env(name: str, *, env: dict[str, str] | None = None) -> str:
    """Read a provider secret from the environment variable the settings name."""
    env = os.environ if env is None else env
    return env.get(name, "") if name else ""
