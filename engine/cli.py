"""The `valuemail` command line."""

from __future__ import annotations

import importlib
import logging
import sys
from datetime import datetime

import click

from .clock import ShiftedClock
from .config import load_settings
from .errors import InvalidFile, ValuemailError
from .runtime import Runtime

#: Each command and the module under engine.commands that defines it (`register(group)` adds it).
COMMANDS = {
    "admin": "admin", "api-key": "api_key", "contest": "contest", "db": "database", "demo": "demo", "dkim": "dkim",
    "import": "imports", "points": "points", "preview": "validate", "providers": "providers", "run": "run",
    "segments": "segments", "send": "send", "survey": "report_kinds", "tick": "tick", "trial": "report_kinds",
    "uncertain": "uncertain", "validate": "validate", "web": "web", "worker": "tick",
}
#: Modules under engine.commands that each define `register(group)`.
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


class ValuemailGroup(click.Group):
    """Loads a command's module only when that command runs, and turns our own exceptions into a
    clear message and exit code instead of a traceback.

    Importing every command (the web app, alembic, the webhook verifiers' X.509 code) costs more
    than half a second, paid by every `send`, `tick` and helper process before its first message.
    """

    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"engine.commands.{COMMANDS[name]}").register(self)
        return super().get_command(ctx, name)

    def load_all(self) -> "ValuemailGroup":
        """Every command registered now (for code that reads `commands` directly)."""
        for module in COMMAND_MODULES:
            importlib.import_module(f"engine.commands.{module}").register(self)
        return self

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InvalidFile as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(1)
        except ValuemailError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors and exits, which it prints itself
        except Exception as exc:  # noqa: BLE001 - the database gone, a bug: one line, the traceback with -v
            if ctx.params.get("verbose"):
                raise
            first_line = (str(exc) or type(exc).__name__).splitlines()[0]  # a database error carries its SQL
            click.echo(f"error: {type(exc).__name__}: {first_line} (-v shows the traceback)", err=True)
            sys.exit(1)


@click.group(cls=ValuemailGroup)
@click.option("--config", "config_path", envvar="VALUEMAIL_CONFIG", type=click.Path(dir_okay=False),
              help="Settings file (default ./config.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option("--as-of", "as_of", envvar="VALUEMAIL_AS_OF", metavar="ISO-8601",
              help="Act as if the time were this instant, running on from there (replays, dated examples).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool, as_of: str | None) -> None:
    """Valuemail: email-newsletter value campaigns."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.ensure_object(dict)

    def build() -> Runtime:
        settings = load_settings(config_path)
        if as_of is None:
            return Runtime(settings=settings)
        return Runtime(settings=settings, clock=ShiftedClock(parse_instant(as_of, settings.tz, option="--as-of")))

    ctx.obj["build_runtime"] = build


def parse_instant(text: str, tz, *, option: str) -> datetime:
    """An ISO 8601 instant from the command line; without an offset it is in the configured timezone."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not ISO 8601, e.g. 2027-03-20T09:00+01:00", param_hint=option) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def get_runtime(ctx: click.Context, *, migrated: bool = True) -> Runtime:
    """The process's Runtime, built on first use so `--help` never touches the database.

    With `migrated` (the default) a database without the current schema is a clear error
    rather than a traceback from the first query.
    """
    root = ctx.find_root()
    if "runtime" not in root.obj:
        root.obj["runtime"] = root.obj["build_runtime"]()
        root.call_on_close(root.obj["runtime"].close)
    runtime = root.obj["runtime"]
    if migrated and not root.obj.get("schema_checked"):
        require_current_schema(runtime)
        root.obj["schema_checked"] = True
    return runtime


def require_current_schema(runtime: Runtime) -> None:
    """Raise when the database is empty or behind the code's migrations."""
    from .migrate import HEAD, current

    url = runtime.engine.url.render_as_string(hide_password=True)
    try:
        revision = current(runtime.engine)
    except Exception as exc:  # an unreachable server or a bad URL: say which
        raise ValuemailError(f"cannot open the database {url}: {exc}") from None
    if revision is None:
        raise ValuemailError(f"the database {url} has no tables yet: run `valuemail db upgrade` first")
    if revision != HEAD:
        raise ValuemailError(f"the database {url} is at schema {revision}, this version needs {HEAD}: "
                             "run `valuemail db upgrade`")

