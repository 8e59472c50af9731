"""Parsers for single import fields; each returns the stored value or raises FieldProblem."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from ..unsafe_chars import CONTROLS, CONTROLS_BUT_TAB_AND_LINE_BREAKS, INVISIBLE
from .errors import FieldProblem

MAX_CENTS = 10**15  # far above any real order, far below BIGINT overflow
_DECIMAL = re.compile(r"^[+-]?(\d+)(?:\.(\d*))?$|^[+-]?\.(\d+)$")

# ISO 4217 codes that are not money anyone pays an order in.
_NON_MONEY_CURRENCIES = frozenset(
    {"XXX", "XTS", "XAU", "XAG", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA"}
)
_COUNTRY_HINTS = {"UK": "GB", "EL": "GR"}
_ATEXT = r"A-Za-z0-9_!#$%&'*+/=?^`{|}~-"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # at most 63 characters
_PLAIN_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@((?:{_LABEL}\.)+{_LABEL})")


def text(value: Any) -> str:
    """A cell as stripped text; None becomes ''."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_2 for c in pycountry.countries)


@lru_cache(maxsize=1)
def _languages() -> frozenset[str]:
    import pycountry

    return frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2"))


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies) - _NON_MONEY_CURRENCIES


@lru_cache(maxsize=1)
def _timezones() -> dict[str, str]:
    from zoneinfo import available_timezones

    # Keyed case-insensitively so "europe/amsterdam" finds the canonical spelling.
    return {name.lower(): name for name in available_timezones()}


def email(value: Any) -> tuple[str, str]:
    """Validate and normalise an address with email-validator; returns (normalised email, lower-cased key)."""
    raw = text(value)
    if not raw:
        raise FieldProblem("email is required")
    quick = _plain_email(raw)
    if quick is not None:
        return quick, quick.lower()
    try:
        # No SMTPUTF8: an address with non-ASCII before the @ (üser@, ｆｒｉｅｎｄ@) cannot be sent
        # through most relays and providers, so it is refused here with the reason, not at send time.
        normalised = validate_email(raw, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise FieldProblem(f"invalid email {raw!r}: {exc}") from None
    return normalised, normalised.lower()


@lru_cache(maxsize=1)
def _special_use_suffixes() -> tuple[str, ...]:
    return tuple("." + name for name in SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(raw: str) -> str | None:
    """The normalised form of a plain ASCII address that email-validator surely accepts, else None.

    email-validator costs ~25 µs per address, most of it Unicode domain handling that plain
    ASCII addresses do not need; on a million-row import that is most of the run time. This
    accepts only a strict subset of what it accepts and normalises identically (domain
    lower-cased); anything unusual (IDNA, quoting, special-use or odd domains, role mailbox
    names) goes to email-validator. tests/importing/test_fields.py checks the two agree.
    """
    match = _PLAIN_EMAIL.fullmatch(raw)
    if match is None or len(raw) > 254:
        return None
    local, domain = match.groups()
    domain = domain.lower()
    if (len(local) > 64 or len(domain) > 253 or "--" in domain or not domain[-1].isalpha()
            or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES
            or ("." + domain).endswith(_special_use_suffixes())):
        return None
    return f"{local}@{domain}"


def country(value: Any) -> str:
    """An ISO 3166-1 alpha-2 country code, upper-cased."""
    code = text(value).upper()
    if code not in _countries():
        hint = f"; did you mean {_COUNTRY_HINTS[code]}?" if code in _COUNTRY_HINTS else ""
        raise FieldProblem(f"unknown country {text(value)!r} (ISO 3166-1 alpha-2 code expected{hint})")
    return code


def language(value: Any) -> str:
    """An ISO 639-1 language code, lower-cased."""
    code = text(value).lower()
    if code not in _languages():
        hint = ""
        base = re.split(r"[-_]", code, maxsplit=1)[0]
        if base != code and base in _languages():
            hint = f"; use the two-letter code {base!r}"
        raise FieldProblem(f"unknown language {text(value)!r} (ISO 639-1 code expected{hint})")
    return code


def timezone_name(value: Any) -> str:
    """An IANA timezone name in its canonical spelling."""
    name = _timezones().get(text(value).lower())
    if name is None:
        raise FieldProblem(f"unknown timezone {text(value)!r} (IANA name such as Europe/Amsterdam expected)")
    return name


def timestamp(value: Any, *, column: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 date or timestamp as aware UTC; naive values are read in `tz` (the app timezone)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raw = text(value)
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise FieldProblem(f"bad {column} {raw!r} (ISO 8601 date or timestamp expected)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise FieldProblem(f"bad {column} {text(value)!r} (out of range)") from None


def cents(value: Any, *, column: str = "total") -> int:
    """A non-negative decimal amount with at most 2 decimals, in cents (dot as decimal separator)."""
    raw = text(value if not isinstance(value, float) else repr(value))
    match = _DECIMAL.match(raw)
    if not match:
        hint = " (use a dot as the decimal separator)" if re.fullmatch(r"-?\d+,\d+", raw) else ""
        raise FieldProblem(f"{column} {raw!r} is not a decimal number{hint}")
    if raw.startswith("-") and Decimal(raw) != 0:
        raise FieldProblem(f"{column} {raw!r} is negative")
    decimals = match.group(2) if match.group(1) is not None else match.group(3)
    if decimals and len(decimals.rstrip("0")) > 2:
        raise FieldProblem(f"{column} {raw!r} has more than 2 decimals")
    amount = int((Decimal(raw) * 100).to_integral_value())
    if amount > MAX_CENTS:
        raise FieldProblem(f"{column} {raw!r} is too large")
    return amount


def currency(value: Any) -> str:
    """An ISO 4217 currency code, upper-cased."""
    code = text(value).upper()
    if code not in _currencies():
        raise FieldProblem(f"unknown currency {text(value)!r} (ISO 4217 code such as EUR expected)")
    return code


def fraction(value: Any, *, column: str = "margin") -> float:
    """A number from 0 to 1 inclusive."""
    raw = text(value)
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise FieldProblem(f"{column} {raw!r} is not a number (a fraction from 0 to 1 expected)") from None
    if not number.is_finite() or not (0 <= number <= 1):
        raise FieldProblem(f"{column} {raw!r} is outside 0–1")
    return float(number)


def json_object(value: Any, *, column: str = "data") -> dict:
    """A JSON object (a dict when given one already)."""
    if isinstance(value, dict):
        return storable_json(value, column=column)
    raw = text(value)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FieldProblem(f"{column} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise FieldProblem(f"{column} is not a JSON object (got {type(parsed).__name__})")
    return storable_json(parsed, column=column)


def storable_json(value: dict, *, column: str = "data") -> dict:
    """`value` unchanged if standard JSON can hold it (no NaN/Infinity, only JSON types)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FieldProblem(f"{column} cannot be stored as JSON: {exc}") from None
    return value


def choice(value: Any, *, column: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed`, compared case-insensitively."""
    word = text(value).lower()
    if word not in allowed:
        raise FieldProblem(f"bad {column} {text(value)!r} (one of {', '.join(allowed)})")
    return word


def bounded(value: Any, *, column: str, max_length: int) -> str:
    """Text no longer than `max_length` characters."""
    word = text(value)
    if len(word) > max_length:
        raise FieldProblem(f"{column} is longer than {max_length} characters")
    return word


# What a one-line field refuses and free text drops (engine.unsafe_chars says what each class holds).
_NOT_IN_A_LINE = re.compile(f"[{CONTROLS}]")
_INVISIBLE = re.compile(f"[{INVISIBLE}]")


_NOT_IN_TEXT = re.compile(f"[{CONTROLS_BUT_TAB_AND_LINE_BREAKS}]")


def free_text(value: Any, *, column: str, max_length: int) -> str:
    """Free text (a custom attribute, a note): line breaks made LF, other controls and bidi or
    zero-width characters dropped, bounded in length."""
    word = text(value)
    if "\r" in word:
        word = word.replace("\r\n", "\n").replace("\r", "\n")
    word = _INVISIBLE.sub("", _NOT_IN_TEXT.sub("", word))
    if len(word) > max_length:
        raise FieldProblem(f"{column} is longer than {max_length:,} characters")
    return word


def single_line(value: Any, *, column: str, max_length: int) -> str:
    """A one-line text field (a name that goes into a To header): bounded, no controls, no bidi tricks."""
    word = bounded(value, column=column, max_length=max_length)
    if _NOT_IN_A_LINE.search(word):
        raise FieldProblem(f"{column} contains a line break or control character")
    if _INVISIBLE.search(word):
        raise FieldProblem(f"{column} contains a right-to-left override or an invisible character")
    return word
