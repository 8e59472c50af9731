"""`valuemail run --demo`: the quick start serves the web UI with demo data and sends."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import ROOT
from tests.support.smtpd import free_port

VALUEMAIL = str(Path(sys.executable).parent / "valuemail")


def test_run_demo_serves_runs_and_deliveries_and_sends_what_is_due(tmp_path):
    for folder in ("campaigns", "templates"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    port = free_port()
    (tmp_path / "config.toml").write_text(f'[web]\nport = {port}\n')
    env = {**os.environ, "VALUEMAIL_SECRET_KEY": "k"}
    proc = subprocess.Popen([VALUEMAIL, "--config", str(tmp_path / "config.toml"), "run", "--demo"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the web UI did not come up"
            time.sleep(0.5)
        # The quick start prints a demo admin account, made because none existed.
        printed = []
        while not printed or not printed[-1].startswith("web UI on"):
            printed.append(proc.stdout.readline().decode())
        found = [re.search(r"demo admin: (\S+)  password: (\S+)", line) for line in printed]
        email, password = next(m.groups() for m in found if m)
        web = _log_in(base, email, password)
        assert "<h1>Runs</h1>" in web.get(f"{base}/admin/runs", timeout=5).text
        web = _logged_in(base, tmp_path, env)
        assert "<h1>Runs</h1>" in web.get(f"{base}/admin/runs", timeout=5).text
        # A send from another process is picked up and shown.
        send = subprocess.run([VALUEMAIL, "--config", str(tmp_path / "config.toml"), "send", "spring-sale"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert send.returncode == 0, send.stdout + send.stderr
        # The server's own workers may still hold a batch of that run when `send` returns; they finish it.
        deadline = time.monotonic() + 60
        while "finished" not in (page := web.get(f"{base}/admin/runs", timeout=5).text) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "Spring sale" in page and "finished" in page, page
        detail = web.get(f"{base}/admin/runs/1", timeout=5).text
        assert "@example." in detail and "sent" in detail
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) > 1000


def _logged_in(base: str, project: Path, env: dict) -> requests.Session:
    """An admin account made with `valuemail admin create` while the server runs, logged in through the form."""
    password = "quick start passphrase"
    created = subprocess.run([VALUEMAIL, "--config", str(project / "config.toml"), "admin", "create", "ops@example.com",
                              "--password-stdin"], input=password + "\n", env=env, capture_output=True, text=True,
                             timeout=60)
    assert created.returncode == 0, created.stdout + created.stderr
    return _log_in(base, "ops@example.com", password)


def _log_in(base: str, email: str, password: str) -> requests.Session:
    """A browser-like session logged in through the form."""
    web = requests.Session()
    form = web.get(f"{base}/admin/runs", timeout=5)  # anonymous: the login form
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = web.post(f"{base}/admin/login", data={"csrf_token": token, "email": email, "password": password},
                        timeout=5, allow_redirects=False)
    assert response.status_code == 302, response.text
    return web


def test_a_failed_round_of_sending_is_logged_and_run_goes_on(tmp_path, caplog):
    """The database gone (or any error in a round): `run` logs one line and tries again later."""
    from engine.clock import FixedClock
    from engine.commands.run import retry_delay, send_round
    from engine.config import load_settings
    from engine.db import make_engine
    from engine.runtime import Runtime
    from tests.support.data import T0

    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/no-such-dir/valuemail.db"\n')
    runtime = Runtime(settings=load_settings(config), clock=FixedClock(T0))
    runtime.__dict__["engine"] = make_engine(runtime.settings.database_url)
    with caplog.at_level("ERROR", logger="engine.commands.run"):
        assert send_round(runtime, sender=None) is False
    (record,) = [r for r in caplog.records if r.name == "engine.commands.run"]
    assert record.getMessage() == "sending stopped: (sqlite3.OperationalError) no such table: runs"
    assert not record.exc_info  # a traceback only with -v
    assert [retry_delay(n) for n in (0, 1, 2, 10)] == [2.0, 4.0, 8.0, 300.0]
