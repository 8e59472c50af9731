"""Typed, validated settings read from `config.toml`, with environment overrides."""

from __future__ import annotations

import logging
import os
import re
import secrets
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

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
    # The right-most field of Feedback-ID, which Gmail's feedback loop reads as the sender: one
    # constant name for your mail stream (letters, digits, "." and "-").
    feedback_id: str = Field("valuemail", pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password_env: str = "VALUEMAIL_SMTP_PASSWORD"
    timeout: float = Field(30.0, gt=0)
    local_hostname: str = ""
    pool_size: int = Field(4, ge=1, le=64)  # persistent connections shared by the sending threads
    idle_seconds: float = Field(30.0, gt=0)  # a connection unused this long is closed
    max_messages_per_connection: int = Field(100, ge=0)  # then QUIT and reopen; 0 = no limit


class OutboxSettings(_Section):
    directory: str = ""  # empty: <var>/outbox


class HttpProviderSettings(_Section):
    """What every HTTP API provider section has: where the API is and how long to wait for it."""

    base_url: str = ""
    connect_timeout: float = Field(10.0, gt=0)  # seconds to reach the API (nothing sent yet)
    read_timeout: float = Field(30.0, gt=0)  # seconds to wait for the answer once the request went out

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class PostmarkSettings(HttpProviderSettings):
    base_url: str = "https://api.postmarkapp.com"
    token_env: str = "POSTMARK_TOKEN"  # the Server API token
    message_stream: str = "broadcast"


class SendgridSettings(HttpProviderSettings):
    base_url: str = "https://api.sendgrid.com"
    token_env: str = "SENDGRID_API_KEY"


class MailgunSettings(HttpProviderSettings):
    base_url: str = "https://api.mailgun.net"  # EU accounts: https://api.eu.mailgun.net
    token_env: str = "MAILGUN_API_KEY"
    domain: str = ""  # the sending domain, e.g. mg.example.com


class ResendSettings(HttpProviderSettings):
    base_url: str = "https://api.resend.com"
    token_env: str = "RESEND_API_KEY"


class SesSettings(HttpProviderSettings):
    base_url: str = ""  # empty: https://email.<region>.amazonaws.com
    region: str = "eu-west-1"
    configuration_set: str = ""
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = ""  # e.g. AWS_SESSION_TOKEN for temporary credentials

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", value):
            raise ValueError(f"not an AWS region name: {value!r} (e.g. eu-west-1)")
        return value


#: The providers' entry-point group (as engine.providers.ENTRY_POINT_GROUP): tells plug-in sections from typos.
PLUGIN_GROUP = "valuemail.providers"


class ProviderLimits(_Section):
    """`[provider.limits.<name>]`: how much one provider may take; 0 means unlimited."""

    per_second: float = Field(0, ge=0)
    per_hour: int = Field(0, ge=0)
    per_day: int = Field(0, ge=0)

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return bool(self.per_second or self.per_hour or self.per_day)


class ProviderSettings(_Section):
    """`[provider]`: which provider sends, and one sub-table per provider.

    Sub-tables for names we do not define belong to third-party plug-ins and reach their
    `from_settings` as plain dicts; a plain key or a table naming no installed provider is an error.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    name: str = "outbox"
    fallback: str = ""  # takes a message when the provider is down; empty: no failover
    failover_after: int = Field(3, ge=1)  # consecutive "unavailable" results before the provider is skipped
    failover_cooldown_seconds: float = Field(60, ge=0)  # how long it is skipped before one probe
    limits: dict[str, ProviderLimits] = {}
    outbox: OutboxSettings = OutboxSettings()
    smtp: SmtpSettings = SmtpSettings()
    postmark: PostmarkSettings = PostmarkSettings()
    sendgrid: SendgridSettings = SendgridSettings()
    mailgun: MailgunSettings = MailgunSettings()
    resend: ResendSettings = ResendSettings()
    ses: SesSettings = SesSettings()

    @model_validator(mode="after")
    def _plugin_sections(self) -> "ProviderSettings":
        extra = self.model_extra or {}
        if not extra:
            return self
        installed = {ep.name for ep in entry_points(group=PLUGIN_GROUP)}
        for key, value in extra.items():
            if not isinstance(value, dict):
                raise ValueError(f"unknown key '{key}'")
            if key not in installed:
                raise ValueError(f"unknown section [provider.{key}]: no installed provider is called {key!r} "
                                 f"(installed: {', '.join(sorted(installed))})")
        return self

    def section(self, name: str):
        """The settings section for provider `name`: a typed section, a plug-in's dict, or {}."""
        value = getattr(self, name) if name in type(self).model_fields else None
        if isinstance(value, BaseModel):
            return value
        return dict((self.model_extra or {}).get(name, {}))

    @field_validator("fallback")
    @classmethod
    def _fallback_differs(cls, value: str, info: ValidationInfo) -> str:
        if value and value == info.data.get("name"):
            raise ValueError(f"must name another provider than 'name' ({value!r})")
        return value

    def limits_for(self, name: str) -> ProviderLimits:
        """The limits of provider `name` (unlimited when it has no table)."""
        return self.limits.get(name) or ProviderLimits()


class SendingSettings(_Section):
    rate_per_second: float = Field(0, ge=0)
    # API requests in flight at once per sending process (HTTP providers; SMTP has pool_size).
    concurrency: int = Field(32, ge=1, le=256)
    batch_size: int = Field(500, ge=1, le=100_000)  # deliveries claimed, checked and handed to the provider at once
    processes: int = Field(0, ge=0, le=64)  # sending processes of one `valuemail send`; 0 = one per CPU core
    commit_every: int = Field(200, ge=1, le=100_000)  # outcomes per group commit at most ...
    commit_ms: float = Field(200, gt=0, le=60_000)  # ... and at least this often while outcomes wait
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


class FeedSettings(_Section):
    # Feeds are fetched from public addresses only; these host names, addresses or networks
    # (e.g. "intranet.shop.local", "10.0.0.0/8") may be reached too.
    allow_hosts: list[str] = Field(default_factory=list)


class DkimKeySettings(_Section):
    """One `[[dkim.keys]]` entry: a private key and the selector its public key is published under."""

    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"]
    private_key_file: str  # PEM, relative to config.toml's directory

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
                            value):
            raise ValueError("must be a DNS name (letters, digits, '-' and '.')")
        return value


class DkimSettings(_Section):
    """`[dkim]`: DKIM signing of the mail the smtp and outbox providers write (no keys: unsigned)."""

    domain: str = ""  # the d= domain; empty: the sender's domain
    keys: list[DkimKeySettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_selectors(self) -> "DkimSettings":
        selectors = [k.selector for k in self.keys]
        if len(selectors) != len(set(selectors)):
            raise ValueError("each [[dkim.keys]] needs its own selector")
        return self


class SesWebhookSettings(_Section):
    topics: list[str] = []  # SNS topic ARNs allowed to post; none: every request is refused


class SendgridWebhookSettings(_Section):
    public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # the Signed Event Webhook's verification key


class MailgunWebhookSettings(_Section):
    signing_key_env: str = "MAILGUN_WEBHOOK_SIGNING_KEY"


class PostmarkWebhookSettings(_Section):
    username: str = ""  # the basic-auth user put in the webhook URL
    password_env: str = "POSTMARK_WEBHOOK_PASSWORD"


class ResendWebhookSettings(_Section):
    secret_env: str = "RESEND_WEBHOOK_SECRET"  # whsec_...


class WebhookSettings(_Section):
    """`[webhooks]`: verification of provider bounce and complaint webhooks, and the bounce policy."""

    tolerance_seconds: int = Field(300, ge=1)  # signed timestamps further from now are refused
    soft_bounce_limit: int = Field(3, ge=1)  # this many soft bounces ...
    soft_bounce_days: int = Field(30, ge=1)  # ... within this many days suppress the address
    log_days: int = Field(90, ge=1)  # webhook_log rows older than this are deleted by the scheduler's tick
    ses: SesWebhookSettings = SesWebhookSettings()
    sendgrid: SendgridWebhookSettings = SendgridWebhookSettings()
    mailgun: MailgunWebhookSettings = MailgunWebhookSettings()
    postmark: PostmarkWebhookSettings = PostmarkWebhookSettings()
    resend: ResendWebhookSettings = ResendWebhookSettings()


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
    feeds: FeedSettings = FeedSettings()
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


_FILE_KEYS = ("app", "database", "paths", "sender", "provider", "sending", "ltv", "scheduler", "web", "tracking", "feeds",
              "dkim", "webhooks")


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
