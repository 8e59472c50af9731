"""`valuemail web`: options, defaults from settings, and the waitress server helpers."""

from __future__ import annotations

import logging
import urllib.request

from click.testing import CliRunner

from engine.cli import main
from engine.commands import web as web_command
from engine.commands.web import close_server, make_server, start_in_thread
from engine.web import create_app


def test_web_help_lists_host_and_port():
    result = CliRunner().invoke(main, ["web", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output


def test_web_serves_on_settings_defaults_and_overrides(settings, monkeypatch):
    calls = []
    monkeypatch.setattr(web_command, "serve", lambda app, *, host, port: calls.append((app, host, port)))
    monkeypatch.setenv("VALUEMAIL_SECRET_KEY", "cli-secret")
    config = str(settings.root / "config.toml")
    result = CliRunner().invoke(main, ["--config", config, "web"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--config", config, "web", "--host", "0.0.0.0", "--port", "9001"])
    assert result.exit_code == 0, result.output
    assert [(h, p) for _, h, p in calls] == [("127.0.0.1", 8000), ("0.0.0.0", 9001)]
    assert calls[0][0].config["SECRET_KEY"] == "cli-secret"
    # "View in browser" works under `valuemail web` as under `valuemail run`.
    assert calls[0][0].extensions["valuemail"].view_renderer is not None


def test_start_in_thread_serves_the_app_and_stops_cleanly(settings, db, clock):
    app = create_app(settings=settings, engine=db, clock=clock)
    background = start_in_thread(app, host="127.0.0.1", port=0)
    try:
        assert background.url.startswith("http://127.0.0.1:") and not background.url.endswith(":0")
        with urllib.request.urlopen(f"{background.url}/healthz", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b'{"status":"ok"}\n'
    finally:
        background.stop()
    assert not background.thread.is_alive()


def test_binding_off_loopback_logs_a_warning(settings, db, clock, caplog):
    app = create_app(settings=settings, engine=db, clock=clock)
    with caplog.at_level(logging.WARNING, logger="engine.commands.web"):
        close_server(make_server(app, host="0.0.0.0", port=0))
        close_server(make_server(app, host="127.0.0.1", port=0))
    assert caplog.text.count("bind to 127.0.0.1 only") == 1
