"""Field parsers: accepted forms, normalisation and the reject reasons (no database needed)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings as hsettings, strategies as st

from engine.importing import fields
from engine.importing.errors import FieldProblem

AMS = ZoneInfo("Europe/Amsterdam")


def problem(func, *args, **kwargs) -> str:
    with pytest.raises(FieldProblem) as exc:
        func(*args, **kwargs)
    return str(exc.value)


def test_email_is_normalised_and_keyed_lower_case():
    assert fields.email("  Anna.Smit@Example.COM ") == ("Anna.Smit@example.com", "anna.smit@example.com")
    assert fields.email("juergen@bücher.de") == ("juergen@bücher.de", "juergen@bücher.de")  # IDN domains are fine


@pytest.mark.parametrize("raw", ["jürgen@example.com", "üser2@example.com", "ｆｒｉｅｎｄ@example.com"])
def test_a_non_ascii_local_part_is_refused_with_the_reason(raw):
    """No SMTPUTF8: most relays and providers cannot take it, so it is refused at the door, not at send time."""
    message = problem(fields.email, raw)
    assert message.startswith(f"invalid email {raw!r}: Internationalized characters before the @-sign are not supported")


@pytest.mark.parametrize("raw, reason", [
    ("Ann\r\nBcc: everyone@example.com", "first_name contains a line break or control character"),
    ("Ann\tSmit", "first_name contains a line break or control character"),
    ("An\x85n", "first_name contains a line break or control character"),
    ("Ann\u202egnp.exe", "first_name contains a right-to-left override or an invisible character"),
    ("A\u200bnn", "first_name contains a right-to-left override or an invisible character"),
    ("\u2066Ann\u2069", "first_name contains a right-to-left override or an invisible character"),
])
def test_a_name_is_one_visible_line(raw, reason):
    assert problem(lambda v: fields.single_line(v, column="first_name", max_length=200), raw) == reason
    assert fields.single_line("  Zoë-Marie O'Brien  ", column="first_name", max_length=200) == "Zoë-Marie O'Brien"
    assert fields.email("a@xn--bcher-kva.de")[0] == "a@bücher.de"  # IDNA is decoded like email-validator does


@pytest.mark.parametrize("raw", ["not-an-email", "a@@example.com", "a@localhost", "a@example", "a b@example.com", "a@x.test"])
def test_invalid_emails_are_refused_with_the_address(raw):
    assert problem(fields.email, raw).startswith(f"invalid email {raw!r}")


def test_empty_email_is_required():
    assert problem(fields.email, " ") == "email is required"


# Addresses built from the characters where the fast path and email-validator could disagree.
_local = st.text(alphabet="aZ09._-+'!#~\"()<> @ü", min_size=0, max_size=70)
_domain = st.text(alphabet="aZ09.-_xn@ü ", min_size=0, max_size=70)


@hsettings(max_examples=3000, deadline=None)
@given(local=_local, domain=st.one_of(_domain, st.sampled_from(["example.com", "EXAMPLE.org", "x.test", "local",
                                                                 "a.b-c.d1", "xn--bcher-kva.de", "ab--cd.com"])))
def test_fast_email_path_agrees_with_email_validator(local, domain):
    raw = f"{local}@{domain}"
    try:
        expected = validate_email(raw, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError:
        expected = None
    fast = fields._plain_email(raw)
    # The fast path may decline (None) but must never accept something different.
    assert fast is None or fast == expected
    got = None
    try:
        got = fields.email(raw)[0]
    except FieldProblem:
        pass
    if raw.strip() == raw:
        assert got == expected


_label = st.text(alphabet="aZ09-x", min_size=1, max_size=66)


@hsettings(max_examples=3000, deadline=None)
@given(local=st.text(alphabet="aZ09._-+'", min_size=1, max_size=66),
       labels=st.lists(_label, min_size=1, max_size=5))
def test_fast_email_path_agrees_on_mostly_valid_addresses(local, labels):
    raw = f"{local}@{'.'.join(labels)}"
    try:
        expected = validate_email(raw, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError:
        expected = None
    fast = fields._plain_email(raw)
    assert fast is None or fast == expected


@pytest.mark.parametrize("raw", ["postmaster@example.com", "a" * 65 + "@example.com", "a@" + "b" * 64 + ".com"])
def test_fast_email_path_declines_what_needs_the_full_validator(raw):
    assert fields._plain_email(raw) is None


def test_country_language_timezone():
    assert fields.country(" nl ") == "NL"
    assert problem(fields.country, "XX") == "unknown country 'XX' (ISO 3166-1 alpha-2 code expected)"
    assert "did you mean GB" in problem(fields.country, "UK")
    assert fields.language("NO") == "no" and fields.language("nb") == "nb"
    assert problem(fields.language, "xx") == "unknown language 'xx' (ISO 639-1 code expected)"
    assert "use the two-letter code 'en'" in problem(fields.language, "en-US")
    assert fields.timezone_name("europe/amsterdam") == "Europe/Amsterdam"
    assert problem(fields.timezone_name, "Mars/Base").startswith("unknown timezone 'Mars/Base'")


def test_timestamps_naive_in_app_timezone_aware_kept_stored_utc():
    assert fields.timestamp("2027-07-01T12:00", column="x", tz=AMS) == datetime(2027, 7, 1, 10, 0, tzinfo=timezone.utc)
    assert fields.timestamp("2027-01-01", column="x", tz=AMS) == datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc)
    assert fields.timestamp("2027-01-01T12:00Z", column="x", tz=AMS) == datetime(2027, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert fields.timestamp("2027-01-01T12:00:00+02:00", column="x", tz=AMS).hour == 10
    assert fields.timestamp("2027-01-01T12:00", column="x", tz=AMS).tzinfo is timezone.utc
    assert problem(fields.timestamp, "01/02/2027", column="placed_at", tz=AMS) == \
        "bad placed_at '01/02/2027' (ISO 8601 date or timestamp expected)"
    assert "out of range" in problem(fields.timestamp, "0001-01-01T00:00+01:00", column="x", tz=AMS)


@pytest.mark.parametrize("raw, cents", [("0", 0), ("12", 1200), ("12.5", 1250), ("12.50", 1250), ("0.99", 99),
                                        (".5", 50), ("+3.10", 310), ("12.500", 1250), ("-0", 0)])
def test_amounts(raw, cents):
    assert fields.cents(raw) == cents


@pytest.mark.parametrize("raw, reason", [
    ("-1", "total '-1' is negative"),
    ("abc", "total 'abc' is not a decimal number"),
    ("12,50", "total '12,50' is not a decimal number (use a dot as the decimal separator)"),
    ("1e3", "total '1e3' is not a decimal number"),
    ("12.345", "total '12.345' has more than 2 decimals"),
    ("1" * 20, "is too large"),
])
def test_bad_amounts(raw, reason):
    assert reason in problem(fields.cents, raw)


def test_currency_margin_json():
    assert fields.currency("nok") == "NOK"
    assert problem(fields.currency, "EURO") == "unknown currency 'EURO' (ISO 4217 code such as EUR expected)"
    assert problem(fields.currency, "XXX").startswith("unknown currency")  # "no currency" is not money
    assert fields.fraction("0.35") == 0.35 and fields.fraction("1") == 1.0 and fields.fraction("0") == 0.0
    assert problem(fields.fraction, "1.2") == "margin '1.2' is outside 0–1"
    assert problem(fields.fraction, "-0.1") == "margin '-0.1' is outside 0–1"
    assert "is not a number" in problem(fields.fraction, "30%")
    assert "outside 0–1" in problem(fields.fraction, "NaN")
    assert fields.json_object('{"a": [1, 2]}') == {"a": [1, 2]}
    assert problem(fields.json_object, "[1]") == "data is not a JSON object (got list)"
    assert problem(fields.json_object, "{oops").startswith("data is not valid JSON")
    assert "cannot be stored as JSON" in problem(fields.json_object, '{"a": NaN}')


def test_free_text_keeps_line_breaks_and_drops_what_cannot_be_seen():
    assert fields.free_text(" a\r\nb\rc\td\x1b\x85e\u202ef\u200bg ", column="note", max_length=100) == "a\nb\nc\tdefg"
    assert problem(lambda v: fields.free_text(v, column="note", max_length=5), "abcdef") == \
        "note is longer than 5 characters"
