"""`valuemail admin create|passwd|list|role|disable|enable`."""

from __future__ import annotations

from click.testing import CliRunner
from sqlmodel import Session
from werkzeug.security import check_password_hash

from engine import admins
from engine.cli import main
from engine.models import AdminUser
from tests.sending.test_send import cli

PASSWORD = "correct horse battery"


def typed(settings, *args, input: str):
    """Run a command with `input` on stdin (the hidden prompt, or --password-stdin)."""
    return CliRunner().invoke(main, ["--config", settings.source, *args], input=input,
                              env={"VALUEMAIL_SECRET_KEY": "test-secret-key"}, catch_exceptions=False)


def account(db, email: str) -> AdminUser:
    with Session(db) as s:
        return admins.get_admin(s, email)


def test_create_asks_for_the_password_twice_without_echoing_it(settings, db):
    result = typed(settings, "admin", "create", "Ann@Example.com", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "created admin Ann@example.com" in result.output
    assert "Password:" in result.output and "Repeat the password:" in result.output
    assert PASSWORD not in result.output
    created = account(db, "ann@example.com")
    assert created.role == "admin" and check_password_hash(created.password_hash, PASSWORD)


def test_the_prompt_asks_again_for_a_short_or_mistyped_password(settings, db):
    result = typed(settings, "admin", "create", "ann@example.com",
                   input=f"short\n{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "at least 12 characters" in result.output
    assert "do not match" in result.output
    assert check_password_hash(account(db, "ann@example.com").password_hash, PASSWORD)


def test_create_from_stdin_and_from_the_environment_for_scripts(settings, db):
    result = typed(settings, "admin", "create", "ann@example.com", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    result = cli(settings, "admin", "create", "bob@example.com", "--password-env", "BOB_PW", BOB_PW="bob's long password")
    assert result.exit_code == 0, result.output
    assert "created viewer bob@example.com" in result.output  # only the first account is an admin by default
    assert check_password_hash(account(db, "bob@example.com").password_hash, "bob's long password")
    result = cli(settings, "admin", "create", "cy@example.com", "--role", "admin", "--password-env", "PW", PW=PASSWORD)
    assert "created admin cy@example.com" in result.output


def test_create_errors_exit_1_with_a_clear_message(settings, db):
    assert cli(settings, "admin", "create", "ann@example.com", "--password-env", "PW", PW=PASSWORD).exit_code == 0
    cases = [
        (("ANN@example.com", "--password-env", "PW"), "already exists"),
        (("not-an-address", "--password-env", "PW"), "invalid email"),
        (("cy@example.com", "--password-env", "SHORT"), "at least 12 characters"),
        (("cy@example.com", "--password-env", "UNSET"), "UNSET is not set"),
    ]
    for args, message in cases:
        result = cli(settings, "admin", "create", *args, PW=PASSWORD, SHORT="too short")
        assert result.exit_code == 1, (args, result.output)
        assert "error: " in result.output and message in result.output, (args, result.output)
    both = typed(settings, "admin", "create", "cy@example.com", "--password-stdin", "--password-env", "PW", input="x\n")
    assert both.exit_code == 1 and "not both" in both.output
    role = cli(settings, "admin", "create", "cy@example.com", "--role", "owner", "--password-env", "PW", PW=PASSWORD)
    assert role.exit_code == 2 and "'owner' is not one of" in role.output  # click's usage error
    with Session(db) as s:
        assert admins.count_admins(s) == 1


def test_passwd_changes_the_password_and_ends_sessions(settings, db):
    cli(settings, "admin", "create", "ann@example.com", "--password-env", "PW", PW=PASSWORD)
    before = account(db, "ann@example.com")
    result = typed(settings, "admin", "passwd", "ANN@example.com", "--password-stdin", input="a new long password\n")
    assert result.exit_code == 0, result.output
    assert "password changed for ann@example.com; its sessions have ended" in result.output
    after = account(db, "ann@example.com")
    assert after.session_version == before.session_version + 1
    assert check_password_hash(after.password_hash, "a new long password")


def test_passwd_errors(settings, db):
    result = typed(settings, "admin", "passwd", "ghost@example.com", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.exit_code == 1 and "no admin account 'ghost@example.com'" in result.output
    cli(settings, "admin", "create", "ann@example.com", "--password-env", "PW", PW=PASSWORD)
    result = typed(settings, "admin", "passwd", "ann@example.com", "--password-stdin", input="short\n")
    assert result.exit_code == 1 and "at least 12 characters" in result.output
    assert check_password_hash(account(db, "ann@example.com").password_hash, PASSWORD)  # unchanged


def test_list_role_disable_enable(settings, db):
    assert "no admin accounts yet" in cli(settings, "admin", "list").output
    cli(settings, "admin", "create", "ann@example.com", "--password-env", "PW", PW=PASSWORD)
    cli(settings, "admin", "create", "bob@example.com", "--password-env", "PW", PW=PASSWORD)
    result = cli(settings, "admin", "role", "bob@example.com", "admin")
    assert result.exit_code == 0 and "bob@example.com is now admin" in result.output
    result = cli(settings, "admin", "disable", "ann@example.com")
    assert result.exit_code == 0 and "disabled ann@example.com" in result.output
    assert account(db, "ann@example.com").session_version == 2
    lines = cli(settings, "admin", "list").output.splitlines()
    assert lines == ["ann@example.com  admin   disabled  last login never",
                     "bob@example.com  admin   active    last login never"]
    assert "enabled ann@example.com" in cli(settings, "admin", "enable", "ann@example.com").output
    assert account(db, "ann@example.com").disabled_at is None
    for args in (("role", "ghost@example.com", "viewer"), ("disable", "ghost@example.com"),
                 ("enable", "ghost@example.com")):
        result = cli(settings, "admin", *args)
        assert result.exit_code == 1 and "no admin account" in result.output, args
    result = cli(settings, "admin", "role", "bob@example.com", "owner")
    assert result.exit_code == 2 and "'owner' is not one of" in result.output  # click's usage error


def test_the_cli_registers_the_admin_command():
    assert {"create", "passwd", "list", "role", "disable", "enable"} <= set(main.get_command(None, "admin").commands)
