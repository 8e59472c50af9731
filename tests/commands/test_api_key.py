"""`valuemail api-key create NAME | list | revoke PREFIX`."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlmodel import Session

from engine.cli import main
from engine.models import ApiKey
from tests.sending.test_send import cli


def test_the_cli_registers_the_api_key_commands():
    assert {"create", "list", "revoke"} <= set(main.get_command(None, "api-key").commands)


def test_create_prints_the_key_once_and_stores_only_its_hash(settings, db):
    created = cli(settings, "api-key", "create", "Web shop")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("vm_") and "\n" not in key
    assert "cannot be shown again" in created.stderr
    with Session(db) as s:
        row = s.execute(select(ApiKey)).scalars().one()
        stored = " ".join(str(v) for v in s.execute(select(ApiKey.__table__)).one())
    assert row.name == "Web shop" and key.split("_")[1] == row.prefix
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored and key.split("_", 2)[2] not in stored

    listed = cli(settings, "api-key", "list")
    assert listed.exit_code == 0, listed.output
    assert row.prefix in listed.output and "Web shop" in listed.output and "never" in listed.output
    # The list never shows the key again.
    assert key not in listed.output and key.split("_", 2)[2] not in listed.output


def test_revoke_marks_the_key_and_list_shows_it(settings, db):
    key = cli(settings, "api-key", "create", "[bold]crm[/bold]").stdout.strip()
    prefix = key.split("_")[1]
    revoked = cli(settings, "api-key", "revoke", prefix)
    assert revoked.exit_code == 0 and f"Revoked API key {prefix}" in revoked.output
    again = cli(settings, "api-key", "revoke", prefix)
    assert again.exit_code == 0 and "already revoked" in again.output
    with Session(db) as s:
        assert s.execute(select(ApiKey.revoked_at)).scalar_one() is not None
    listed = cli(settings, "api-key", "list")
    # The name is shown as typed, not read as console markup; the revoked column carries a date.
    assert "[bold]crm[/bold]" in listed.output
    assert "2027-03-20" in listed.output


def test_unknown_prefix_and_bad_name_are_clear_errors(settings, db):
    missing = cli(settings, "api-key", "revoke", "deadbeef")
    assert missing.exit_code == 1 and "no API key with prefix 'deadbeef'" in missing.output
    blank = cli(settings, "api-key", "create", "  ")
    assert blank.exit_code == 1 and "needs a name" in blank.output
    empty = cli(settings, "api-key", "list")
    assert empty.exit_code == 0 and "No API keys yet" in empty.output
