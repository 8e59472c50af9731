"""`valuemail db upgrade`, and commands on a database without the current schema."""

from __future__ import annotations

from click.testing import CliRunner

from engine.cli import main
from engine.migrate import head


def invoke(config, *args):
    return CliRunner().invoke(main, ["--config", str(config), *args], env={"VALUEMAIL_SECRET_KEY": "k"})


def test_commands_on_an_empty_database_say_to_upgrade_then_work(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "segments.toml").write_text("[everyone]\n")
    before = invoke(config, "segments")
    assert before.exit_code == 1 and "has no tables yet: run `valuemail db upgrade` first" in before.output
    upgraded = invoke(config, "db", "upgrade")
    assert upgraded.exit_code == 0 and f"database at revision {head()}" in upgraded.output
    assert invoke(config, "db", "current").output.strip() == head()
    assert invoke(config, "segments").exit_code == 0
    assert invoke(config, "db", "upgrade").exit_code == 0  # idempotent


def test_an_unreachable_database_is_named(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:1/x"\n')
    result = invoke(config, "segments")
    assert result.exit_code == 1 and "cannot open the database postgresql+psycopg://nobody@127.0.0.1:1/x" in result.output
