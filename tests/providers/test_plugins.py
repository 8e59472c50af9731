"""A third-party provider installed from its own package plugs in through the entry-point group."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from engine.models import Delivery
from tests.conftest import ROOT, write_settings
from tests.sending.test_send import only_spring_sale
from tests.support.data import add_contacts

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")
PLUGIN = ROOT / "tests" / "fixtures" / "provider_plugin"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The plug-in package installed with pip into a directory of its own (not into our venv)."""
    target = tmp_path_factory.mktemp("plugin")
    # pip builds in the source tree; build from a copy so the repository stays clean.
    build = tmp_path_factory.mktemp("plugin-src") / "provider_plugin"
    shutil.copytree(PLUGIN, build)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(build)], check=True, capture_output=True)
    return target


def valuemail(project: Path, *args, plugin: Path | None = None):
    env = {**os.environ, "VALUEMAIL_SECRET_KEY": "test-secret-key"}
    env.pop("VALUEMAIL_CONFIG", None)
    if plugin is not None:
        env["PYTHONPATH"] = str(plugin)
    return subprocess.run([VALUEMAIL, "--config", str(project / "config.toml"), *args], env=env, capture_output=True,
                          text=True, timeout=180)


def test_a_campaign_is_delivered_through_an_installed_plugin(project, database_url, db, plugin_dir):
    only_spring_sale(project)
    add_contacts(db, 3)
    drop = project / "drop.jsonl"
    # Written by hand: loading it here would fail, the plug-in is installed for the subprocess only.
    (project / "config.toml").write_text(
        f'[database]\nurl = "{database_url}"\n[sending]\nretry_base_seconds = 0\n'
        f'[provider]\nname = "filedrop"\n[provider.filedrop]\npath = "{drop}"\nlabel = "from-config"\n')
    done = valuemail(project, "send", "spring-sale", plugin=plugin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in drop.read_text().splitlines()]
    assert sorted(line["to"] for line in lines) == ["user0@example.com", "user1@example.com", "user2@example.com"]
    assert {line["label"] for line in lines} == {"from-config"}  # its section reached it as a dict
    with Session(db) as session:
        deliveries = session.execute(select(Delivery)).scalars().all()
    assert {d.status for d in deliveries} == {"sent"} and {d.provider for d in deliveries} == {"filedrop"}
    by_delivery = {line["metadata"]["valuemail_delivery"]: line for line in lines}
    for d in deliveries:
        assert d.provider_message_id == "filedrop:" + by_delivery[str(d.id)]["message_id"].strip("<>")


def test_without_the_plugin_the_name_is_a_clear_error(project, database_url, db, plugin_dir):
    only_spring_sale(project)
    add_contacts(db, 1)
    write_settings(project, database_url, extra='[provider]\nname = "filedrop"\n')
    done = valuemail(project, "send", "spring-sale")
    assert done.returncode != 0
    assert "unknown provider 'filedrop'" in done.stdout + done.stderr
    assert "installed: mailgun, outbox, postmark, resend, sendgrid, ses, smtp" in done.stdout + done.stderr


def test_a_section_for_an_uninstalled_provider_is_a_config_error(project, database_url, db):
    # A typo in a provider section is not silently passed to nobody.
    (project / "config.toml").write_text(f'[database]\nurl = "{database_url}"\n[provider.postmrak]\ntoken_env = "X"\n')
    done = valuemail(project, "send", "spring-sale")
    assert done.returncode != 0
    assert "unknown section [provider.postmrak]: no installed provider is called 'postmrak'" in done.stdout + done.stderr
