"""`valuemail import ...` through the real command line (click's CliRunner)."""

from __future__ import annotations

from click.testing import CliRunner

from engine.cli import main

from .conftest import contact, snapshot, write_csv


def invoke(settings, *args):
    return CliRunner().invoke(main, ["--config", str(settings.source), "import", *map(str, args)])


def test_import_prints_a_summary_and_exits_0_even_with_rejects(db, settings, tmp_path):
    path = write_csv(tmp_path / "contacts.csv", "email,first_name\na@example.com,A\nbad,B\n")
    result = invoke(settings, "contacts", path)
    assert result.exit_code == 0, result.output
    assert f"{path}: 1 inserted, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    assert f"1 rejected row(s) with reasons written to {tmp_path / 'contacts.rejects.csv'}" in result.stdout
    assert contact(db, "a@example.com").first_name == "A"

    again = invoke(settings, "contacts", path, "--rejects", tmp_path / "elsewhere.csv")
    assert "0 inserted, 0 updated, 1 unchanged, 1 rejected" in again.stdout
    assert (tmp_path / "elsewhere.csv").exists()


def test_strict_failure_lists_rejects_and_exits_1(db, settings, tmp_path):
    path = write_csv(tmp_path / "contacts.csv", "email,country\na@example.com,NL\nb@example.com,XX\n")
    before = snapshot(db)
    result = invoke(settings, "contacts", path, "--strict")
    assert result.exit_code == 1
    assert f"{path}:3: unknown country 'XX'" in result.stderr
    assert "--strict: nothing was applied" in result.stderr
    assert snapshot(db) == before


def test_file_errors_exit_1_and_name_the_file(db, settings, tmp_path):
    path = write_csv(tmp_path / "orders.csv", "order_id,email\n1,a@example.com\n")
    result = invoke(settings, "orders", path)
    assert result.exit_code == 1
    assert f"{path}:1: missing required columns placed_at, total" in result.stderr
    missing = invoke(settings, "events", tmp_path / "missing.csv")
    assert missing.exit_code == 1 and f"{tmp_path / 'missing.csv'}: file not found" in missing.stderr


def test_orders_and_events_commands(db, settings, tmp_path):
    invoke(settings, "contacts", write_csv(tmp_path / "c.csv", "email\na@example.com\n"))
    orders = invoke(settings, "orders", write_csv(tmp_path / "o.csv", "order_id,email,placed_at,total\n1,a@example.com,2027-01-01,9.95\n"))
    assert orders.exit_code == 0 and "1 inserted" in orders.stdout
    events = invoke(settings, "events", write_csv(tmp_path / "e.csv", "email,type,occurred_at\na@example.com,trial_started,2027-01-01\n"))
    assert events.exit_code == 0 and "1 inserted" in events.stdout


def test_help_documents_exit_status_and_columns():
    result = CliRunner().invoke(main, ["import", "contacts", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Exit status: 0 when the file was imported, even if some rows were rejected" in text
    assert "--strict" in text and "--rejects" in text and "ISO 3166-1 alpha-2" in text
