"""Contact CSV import on SQLite and PostgreSQL: inserts, rejects, idempotency, partial updates."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from .conftest import T0, contact, read_rejects, snapshot, tags_of, write_csv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "importing"
HEADER = "email,first_name,last_name,country,language,timezone,tags,status,created_at\n"


@pytest.mark.parametrize("name", ["contacts.csv", "contacts-bom.csv"])
def test_fixture_file_imports_with_or_without_bom(db, run_import, tmp_path, name):
    path = Path(shutil.copy(FIXTURES / name, tmp_path / name))
    outcome = run_import("contacts", path)
    assert (outcome.result.inserted, outcome.result.rejected) == (3, 0)
    assert outcome.rejects_path is None and not (tmp_path / f"{path.stem}.rejects.csv").exists()

    anna = contact(db, "anna@example.com")  # the BOM is not part of the first column's name
    assert (anna.first_name, anna.last_name, anna.country, anna.language, anna.timezone, anna.status) == \
        ("Anna", "de Vries", "NL", "nl", "Europe/Amsterdam", "subscribed")
    # Naive timestamps are read in the app timezone (Europe/Amsterdam, UTC+1 in January) and stored UTC.
    assert anna.created_at == datetime(2025, 1, 10, 9, 0, tzinfo=timezone.utc)
    assert anna.attributes == {"plan": "pro"}
    assert tags_of(db, "anna@example.com") == {"vip", "newsletter"}

    bjorn = contact(db, "bjorn@example.org")
    assert bjorn.first_name == "Bjørn" and bjorn.status == "subscribed"  # empty status: new contacts subscribe
    assert bjorn.created_at == datetime(2025, 2, 1, 7, 30, tzinfo=timezone.utc)
    claire = contact(db, "claire@example.net")
    # A quoted field may span lines (a free-text attribute); a name may not (it goes into the To header).
    assert claire.attributes == {"plan": "basic\n(second line of a quoted field)"} and claire.last_name == "Martin"
    assert claire.status == "unsubscribed"
    assert claire.created_at == datetime(2025, 3, 4, 23, 0, tzinfo=timezone.utc)  # a date is local midnight
    assert anna.updated_at == T0


def test_every_contact_rejection_has_its_reason_and_physical_line(db, run_import, tmp_path):
    path = write_csv(tmp_path / "people.csv", HEADER + "\n".join([
        "ok@example.com,Ok,,NL,nl,,,,",                          # line 2
        "not-an-email,A,,NL,nl,,,,",                             # line 3
        'x1@example.com,"Multi',                                 # line 4 (row spans lines 4-5)
        'line",,XX,nl,,,,',                                      # line 5
        "x2@example.com,B,,NL,xx,,,,",                           # line 6
        "x3@example.com,C,,NL,nl,Mars/Base,,,",                  # line 7
        "x4@example.com,D,,NL,nl,,,maybe,",                      # line 8
        "x5@example.com,E,,NL,nl,,,,yesterday",                  # line 9
        "x6@example.com,F,,NL",                                  # line 10: too few fields
        "",                                                      # line 11: blank, skipped
        "x7@example.com," + "G" * 201 + ",,NL,nl,,,,",           # line 12
        "x8@example.com,H,,NL,nl,," + "t" * 101 + ",,",          # line 13
        ",I,,NL,nl,,,,",                                         # line 14: no email
        "x9@example.com,J\x00,,NL,nl,,,,",                       # line 15: NUL character
    ]) + "\n")
    outcome = run_import("contacts", path)
    assert (outcome.result.inserted, outcome.result.rejected) == (1, 11)
    assert outcome.rejects_path == tmp_path / "people.rejects.csv"
    rejects = read_rejects(outcome.rejects_path)
    got = {int(r["line"]): r["reason"] for r in rejects}
    assert list(got) == sorted(got)
    assert got[3].startswith("invalid email 'not-an-email'")
    assert got[4] == ("first_name contains a line break or control character; "  # a name goes into the To header
                      "unknown country 'XX' (ISO 3166-1 alpha-2 code expected)")
    assert got[6] == "unknown language 'xx' (ISO 639-1 code expected)"
    assert got[7].startswith("unknown timezone 'Mars/Base'")
    assert got[8] == "bad status 'maybe' (one of subscribed, unsubscribed)"
    assert got[9] == "bad created_at 'yesterday' (ISO 8601 date or timestamp expected)"
    assert got[10] == "row has 4 fields, the header has 9"
    assert got[12] == "first_name is longer than 200 characters"
    assert "longer than 100 characters" in got[13]
    assert got[14] == "email is required"
    assert got[15] == "first_name contains a NUL character"
    # The rejects file keeps the original columns, so it can be fixed and imported again.
    assert list(rejects[0]) == ["line", "reason", "email", "first_name", "last_name", "country", "language",
                                "timezone", "tags", "status", "created_at"]
    assert rejects[1]["email"] == "x1@example.com" and rejects[1]["first_name"] == "Multi\nline"


def test_several_problems_in_one_row_are_all_reported(run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", HEADER + "bad,A,,XX,xx,,,maybe,\n")
    reason = read_rejects(run_import("contacts", path).rejects_path)[0]["reason"]
    assert "invalid email" in reason and "unknown country" in reason and "unknown language" in reason
    assert "bad status" in reason


def test_reimport_changes_nothing(db, run_import, tmp_path, clock):
    rows = "".join(f"user{i}@example.com,F{i},L{i},NL,nl,Europe/Amsterdam,a;b,,2025-01-0{i % 9 + 1},{i}\n"
                   for i in range(250))
    path = write_csv(tmp_path / "c.csv", HEADER.strip() + ",score\n" + rows)
    first = run_import("contacts", path, batch_size=100).result
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (250, 0, 0, 0)
    before = snapshot(db)
    clock.set(T0 + timedelta(days=1))
    again = run_import("contacts", path, batch_size=100).result
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 250, 0)
    assert again.summary() == "0 inserted, 0 updated, 250 unchanged, 0 rejected"
    assert snapshot(db) == before  # values and updated_at untouched
    assert contact(db, "user7@example.com").attributes == {"score": "7"}  # custom attributes are strings


def test_changed_rows_are_updated_and_only_they_get_a_new_updated_at(db, run_import, tmp_path, clock):
    write_csv(tmp_path / "c.csv", HEADER + "a@example.com,Ann,Old,NL,nl,,x,,\nb@example.com,Bob,Same,NL,nl,,y,,\n")
    run_import("contacts", tmp_path / "c.csv")
    later = T0 + timedelta(hours=5)
    clock.set(later)
    write_csv(tmp_path / "c.csv", HEADER + "A@Example.com,Ann,New,BE,fr,,x,,\nb@example.com,Bob,Same,NL,nl,,y,,\n")
    result = run_import("contacts", tmp_path / "c.csv").result
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    ann = contact(db, "a@example.com")
    assert (ann.email, ann.last_name, ann.country, ann.language) == ("A@example.com", "New", "BE", "fr")
    assert ann.updated_at == later and ann.created_at == T0
    assert contact(db, "b@example.com").updated_at == T0


def test_partial_updates_keep_what_the_file_does_not_say(db, run_import, tmp_path, clock):
    write_csv(tmp_path / "full.csv", HEADER.strip() + ",plan,team\n"
              "a@example.com,Ann,Smit,NL,nl,Europe/Amsterdam,vip;eco,,2025-01-01T00:00Z,pro,red\n")
    run_import("contacts", tmp_path / "full.csv")
    clock.set(T0 + timedelta(days=1))

    # Absent columns (country, tags...) and empty cells (last_name, plan) keep the stored values.
    write_csv(tmp_path / "part.csv", "email,first_name,last_name,plan,team\na@example.com,Anna,,,blue\n")
    result = run_import("contacts", tmp_path / "part.csv").result
    assert result.updated == 1
    ann = contact(db, "a@example.com")
    assert (ann.first_name, ann.last_name, ann.country, ann.timezone) == ("Anna", "Smit", "NL", "Europe/Amsterdam")
    assert ann.attributes == {"plan": "pro", "team": "blue"}
    assert ann.created_at == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert tags_of(db, "a@example.com") == {"vip", "eco"}

    # A present tags column is the whole set: it replaces, and an empty cell clears.
    write_csv(tmp_path / "tags.csv", "email,tags\na@example.com, VIP ; news ;\n")
    assert run_import("contacts", tmp_path / "tags.csv").result.updated == 1
    assert tags_of(db, "a@example.com") == {"vip", "news"}
    assert run_import("contacts", tmp_path / "tags.csv").result.unchanged == 1
    write_csv(tmp_path / "notags.csv", "email,tags\na@example.com,\n")
    assert run_import("contacts", tmp_path / "notags.csv").result.updated == 1
    assert tags_of(db, "a@example.com") == set()


def test_status_rules(db, run_import, tmp_path):
    write_csv(tmp_path / "a.csv", "email,status\nstay@example.com,\nleave@example.com,unsubscribed\n")
    run_import("contacts", tmp_path / "a.csv")
    assert contact(db, "stay@example.com").status == "subscribed"
    assert contact(db, "leave@example.com").status == "unsubscribed"

    # Empty status keeps the stored one; an import can unsubscribe but never re-subscribe.
    write_csv(tmp_path / "b.csv", "email,status,first_name\nstay@example.com,UNSUBSCRIBED,S\n"
              "leave@example.com,subscribed,L\n")
    result = run_import("contacts", tmp_path / "b.csv").result
    assert (result.updated, result.kept_unsubscribed) == (2, 1)
    assert "1 unsubscribed contact(s) kept unsubscribed" in result.summary()
    assert contact(db, "stay@example.com").status == "unsubscribed"
    leave = contact(db, "leave@example.com")
    assert leave.status == "unsubscribed" and leave.first_name == "L"  # the rest of the row still applies
    write_csv(tmp_path / "c.csv", "email,status\nstay@example.com,\n")
    assert run_import("contacts", tmp_path / "c.csv").result.unchanged == 1


def test_repeated_email_in_one_file_applies_in_order(db, run_import, tmp_path):
    # Same key twice in one batch: must not trip PostgreSQL's "ON CONFLICT ... row a second time".
    write_csv(tmp_path / "d.csv", "email,first_name,tags\nd@example.com,First,a\nD@EXAMPLE.COM,Second,b\n"
              "D@example.com,Second,b\n")
    result = run_import("contacts", tmp_path / "d.csv").result
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    stored = contact(db, "d@example.com")
    assert stored.first_name == "Second" and stored.email == "D@example.com"  # the file's spelling wins
    assert tags_of(db, "d@example.com") == {"b"}


def test_stale_rejects_file_is_removed_when_a_rerun_has_no_rejects(run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email\nbad\n")
    assert run_import("contacts", path).rejects_path.exists()
    write_csv(path, "email\ngood@example.com\n")
    assert run_import("contacts", path).rejects_path is None
    assert not (tmp_path / "c.rejects.csv").exists()


def test_rejects_path_option_and_bom_mirrored(run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email,city\nbad,Zürich\n", bom=True)
    target = tmp_path / "out" / "bad-rows.csv"
    outcome = run_import("contacts", path, rejects_path=target)
    assert outcome.rejects_path == target
    assert target.read_bytes().startswith(b"\xef\xbb\xbfline,reason,email,city\r\n")
    assert read_rejects(target)[0]["city"] == "Zürich"


def test_an_unsubscribe_that_lands_mid_batch_is_not_undone(db, run_import, tmp_path, clock):
    # The batch read the contact as subscribed; an unsubscribe click committed before its upsert.
    from engine.importing.contacts import _contacts, _keep_unsubscribed
    from engine.importing.runner import upsert

    write_csv(tmp_path / "c.csv", "email,first_name\nrace@example.com,Old\n")
    run_import("contacts", tmp_path / "c.csv")
    stale = contact(db, "race@example.com")._asdict()
    with db.begin() as conn:
        conn.execute(_contacts.update().values(status="unsubscribed"))
    stale.pop("id")
    with db.begin() as conn:
        upsert(conn, _contacts, [{**stale, "first_name": "New"}], key=("email_key",), guard=_keep_unsubscribed)
    stored = contact(db, "race@example.com")
    assert (stored.first_name, stored.status) == ("New", "unsubscribed")


def test_a_fixed_rejects_file_imports_as_it_is(db, run_import, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email,country,plan\nok@example.com,NL,pro\nfix@example.com,XX,free\n")
    outcome = run_import("contacts", path)
    fixed = outcome.rejects_path.read_text().replace(",XX,", ",BE,")
    again = run_import("contacts", write_csv(tmp_path / "fixed.csv", fixed))
    assert (again.result.inserted, again.result.rejected) == (1, 0)
    stored = contact(db, "fix@example.com")
    assert stored.country == "BE" and stored.attributes == {"plan": "free"}  # no line/reason attributes

    # Still bad: the new rejects file has the original columns once, not line/reason twice.
    still = run_import("contacts", write_csv(tmp_path / "still.csv", outcome.rejects_path.read_text()))
    assert list(read_rejects(still.rejects_path)[0]) == ["line", "reason", "email", "country", "plan"]


def test_custom_attributes_are_free_text_normalised_and_bounded(db, run_import, tmp_path):
    path = write_csv(tmp_path / "notes.csv", "email,note\n"
                     'ok@example.com,"line one\r\nline two\u202e\u200b\x1b"\n'
                     f"long@example.com,{'n' * 20_001}\n")
    outcome = run_import("contacts", path)
    assert (outcome.result.inserted, outcome.result.rejected) == (1, 1)
    assert contact(db, "ok@example.com").attributes == {"note": "line one\nline two"}
    (reject,) = read_rejects(outcome.rejects_path)
    assert reject["reason"] == "note is longer than 20,000 characters"
