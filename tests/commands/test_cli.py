"""The `valuemail` group: commands load on demand, and the table of them is the truth."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from engine.cli import COMMANDS, ValuemailGroup, main


def test_the_command_table_names_every_command_its_modules_register():
    group = ValuemailGroup(name="valuemail").load_all()
    assert {name: cmd.callback.__module__ for name, cmd in group.commands.items()} == {
        name: f"engine.commands.{module}" for name, module in COMMANDS.items()}


def test_help_lists_every_command_without_loading_them_first():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)


def test_running_one_command_imports_neither_the_web_app_nor_alembic():
    code = ("import sys; from engine.cli import main; main(['providers', '--help'], standalone_mode=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'alembic', 'waitress')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_unexpected_error_is_one_line_and_the_traceback_comes_with_v(tmp_path, monkeypatch):
    """Whatever fails that is not ours (here: settings loading made to raise, as a bug would): one line."""
    def broken(path):
        raise RuntimeError("the disk said no\nand a second line")

    monkeypatch.setattr("engine.cli.load_settings", broken)
    quiet = CliRunner().invoke(main, ["segments"])
    assert quiet.exit_code == 1 and "Traceback" not in quiet.output
    assert quiet.output == "error: RuntimeError: the disk said no (-v shows the traceback)\n"
    verbose = CliRunner().invoke(main, ["-v", "segments"])
    assert verbose.exit_code == 1 and isinstance(verbose.exception, RuntimeError)
