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
