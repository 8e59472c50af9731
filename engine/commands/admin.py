"""`valuemail admin create|passwd|list|role|disable|enable`: admin accounts of the web UI."""

from __future__ import annotations

import os
import sys

import click
from sqlmodel import Session

from .. import admins
from ..cli import get_runtime
from ..db import session_scope
from ..errors import ValuemailError


def register(main: click.Group) -> None:
    main.add_command(admin)


@click.group()
def admin() -> None:
    """Admin accounts of the web UI (roles: admin changes things, viewer only looks)."""


def _password_options(command):
    command = click.option("--password-env", "password_env", metavar="VAR",
                           help="Read the password from environment variable VAR (for scripts).")(command)
    command = click.option("--password-stdin", "password_stdin", is_flag=True,
                           help="Read the password from the first line of standard input (for scripts).")(command)
    return command


@admin.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(admins.ROLES),
              help="admin or viewer; default: admin for the first account, viewer for later ones.")
@_password_options
@click.pass_context
def create(ctx: click.Context, email: str, role: str | None, password_stdin: bool, password_env: str | None) -> None:
    """Create a login for EMAIL; asks for the password twice unless given by --password-stdin/--password-env."""
    runtime = get_runtime(ctx)
    address, _ = admins.normalise_email(email)  # a typo in the address fails before the password is asked
    with Session(runtime.engine) as session:
        if admins.find_admin(session, email) is not None:
            raise admins.AdminExists(f"an admin account {address!r} already exists")
    password = _password(password_stdin, password_env)
    with session_scope(runtime.engine) as session:
        user = admins.create_admin(session, email, password, role=role, now=runtime.clock.now())
    click.echo(f"created {user.role} {user.email}")


@admin.command("passwd")
@click.argument("email")
@_password_options
@click.pass_context
def passwd(ctx: click.Context, email: str, password_stdin: bool, password_env: str | None) -> None:
    """Set EMAIL's password; every session of the account ends."""
    runtime = get_runtime(ctx)
    with Session(runtime.engine) as session:
        admins.get_admin(session, email)  # an unknown address fails before the password is asked
    password = _password(password_stdin, password_env)
    with session_scope(runtime.engine) as session:
        user = admins.set_password(session, email, password, now=runtime.clock.now())
    click.echo(f"password changed for {user.email}; its sessions have ended")


@admin.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Every account: address, role, whether it is disabled, last login."""
    runtime = get_runtime(ctx)
    tz = runtime.settings.tz
    with Session(runtime.engine) as session:
        users = admins.list_admins(session)
    if not users:
        click.echo("no admin accounts yet: valuemail admin create EMAIL")
        return
    width = max(len(u.email) for u in users)
    for u in users:
        status = "disabled" if u.disabled_at else "active"
        last = u.last_login_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
        click.echo(f"{u.email:<{width}}  {u.role:<6}  {status:<8}  last login {last}")


@admin.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(admins.ROLES))
@click.pass_context
def role(ctx: click.Context, email: str, role: str) -> None:
    """Make EMAIL an admin or a viewer (applies to its open sessions at once)."""
    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        user = admins.set_role(session, email, role, now=runtime.clock.now())
    click.echo(f"{user.email} is now {user.role}")


@admin.command("disable")
@click.argument("email")
@click.pass_context
def disable(ctx: click.Context, email: str) -> None:
    """Stop EMAIL from logging in; its sessions end at once."""
    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        user = admins.disable(session, email, now=runtime.clock.now())
    click.echo(f"disabled {user.email}")


@admin.command("enable")
@click.argument("email")
@click.pass_context
def enable(ctx: click.Context, email: str) -> None:
    """Let a disabled EMAIL log in again."""
    runtime = get_runtime(ctx)
    with session_scope(runtime.engine) as session:
        user = admins.enable(session, email, now=runtime.clock.now())
    click.echo(f"enabled {user.email}")


def _password(from_stdin: bool, env_var: str | None) -> str:
    """The new password from stdin, the environment or a hidden prompt (typed twice)."""
    if from_stdin and env_var:
        raise ValuemailError("give --password-stdin or --password-env, not both")
    if env_var:
        password = os.environ.get(env_var)
        if password is None:
            raise ValuemailError(f"environment variable {env_var} is not set")
    elif from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password",
                                value_proc=_acceptable)
    return password


def _acceptable(password: str) -> str:
    # At the prompt a too-short password is asked for again instead of ending the command.
    try:
        admins.check_password(password)
    except admins.WeakPassword as exc:
        raise click.UsageError(str(exc)) from None
    return password
