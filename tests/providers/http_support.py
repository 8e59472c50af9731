"""Building each HTTP provider against a stub, and a message like the ones the sender builds."""

from __future__ import annotations

from dataclasses import replace
from email.message import EmailMessage

from engine.config import MailgunSettings, PostmarkSettings, ResendSettings, SendgridSettings, SesSettings
from engine.providers import OutgoingMessage, ProviderContext, available

HTTP_PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend", "ses")
SETTINGS = {"postmark": PostmarkSettings, "sendgrid": SendgridSettings, "mailgun": MailgunSettings,
            "resend": ResendSettings, "ses": SesSettings}
#: The environment the providers read their secrets from (matching the stubs' Expect defaults).
ENV = {"POSTMARK_TOKEN": "test-token", "SENDGRID_API_KEY": "test-token", "MAILGUN_API_KEY": "test-token",
       "RESEND_API_KEY": "test-token", "AWS_ACCESS_KEY_ID": "test-token", "AWS_SECRET_ACCESS_KEY": "test-secret"}
UNSUBSCRIBE = "<https://shop.example.com/u/abc123>, <mailto:unsub@example.com?subject=unsubscribe>"
HEADERS = (("List-Unsubscribe", UNSUBSCRIBE), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
           ("Feedback-ID", "7:spring-sale:valuemail"))


def section(name: str, base_url: str, **fields):
    """The provider's settings section pointing at `base_url`, with short timeouts for tests."""
    if name == "mailgun":
        fields.setdefault("domain", "mg.example.com")
    fields.setdefault("read_timeout", 5.0)
    fields.setdefault("connect_timeout", 2.0)
    return SETTINGS[name](base_url=base_url, **fields)


def provider(name: str, base_url: str, *, env: dict | None = None, var_dir: str = "/nonexistent", concurrency: int = 4,
             **fields):
    """A provider instance built the way provider_factory builds it (entry point, from_settings)."""
    cls = available()[name].load()
    return cls.from_settings(section(name, base_url, **fields), context=ProviderContext(
        var_dir=var_dir, env=dict(ENV if env is None else env), concurrency=concurrency))


def message(to: str = "ann@example.net", *, delivery: int = 41, run: int = 7) -> OutgoingMessage:
    """A message as compose() builds it: MIME data plus the fields API providers use."""
    message_id = f"<{delivery}.{run}@valuemail.example.com>"
    mime = EmailMessage()
    mime["From"] = "Example Shop <news@example.com>"
    mime["To"] = f"Ann Smit <{to}>"
    mime["Subject"] = "Spring sale: 15% off"
    mime["Message-ID"] = message_id
    for key, value in HEADERS:
        mime[key] = value
    mime.set_content("Hello Ann, 15% off.")
    mime.add_alternative("<p>Hello Ann, <b>15%</b> off.</p>", subtype="html")
    return OutgoingMessage(
        envelope_from="bounces@example.com", recipient=to, data=bytes(mime), message_id=message_id,
        subject="Spring sale: 15% off", text="Hello Ann, 15% off.", html="<p>Hello Ann, <b>15%</b> off.</p>",
        headers=HEADERS, tag="spring-sale", from_email="news@example.com", from_name="Example Shop",
        to_name="Ann Smit", reply_to="help@example.com",
        metadata=(("valuemail_delivery", str(delivery)), ("valuemail_run", str(run))))


def messages(count: int, *, special: dict[int, str] | None = None, start: int = 1000) -> list[OutgoingMessage]:
    """`count` messages to u<i>@example.net (delivery start+i); `special` gives some a stub behaviour by index."""
    special = special or {}
    # One message built by EmailMessage, the others derived from it: building each is slow.
    template = message()
    made = []
    for i in range(count):
        to, message_id = f"{special.get(i, 'u')}{i}@example.net", f"<{start + i}.7@valuemail.example.com>"
        data = template.data.replace(b"<ann@example.net>", f"<{to}>".encode()).replace(
            template.message_id.encode(), message_id.encode())
        made.append(replace(template, recipient=to, message_id=message_id, data=data,
                            metadata=(("valuemail_delivery", str(start + i)), ("valuemail_run", "7"))))
    return made


def delivery(message: OutgoingMessage) -> int:
    """The delivery id a message carries in its metadata."""
    return int(dict(message.metadata)["valuemail_delivery"])
