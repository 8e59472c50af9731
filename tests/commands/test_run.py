"""`valuemail run --demo`: the quick start serves the web UI with demo data and sends."""

from __future__ import annotations

import os
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
        assert "<h1>Runs</h1>" in requests.get(f"{base}/admin/runs", timeout=5).text
        # A send from another process is picked up and shown.
        send = subprocess.run([VALUEMAIL, "--config", str(tmp_path / "config.toml"), "send", "spring-sale"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert send.returncode == 0, send.stdout + send.stderr
        page = requests.get(f"{base}/admin/runs", timeout=5).text
        assert "Spring sale" in page and "finished" in page, page
        detail = requests.get(f"{base}/admin/runs/1", timeout=5).text
        assert "@example." in detail and "sent" in detail
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) > 1000
