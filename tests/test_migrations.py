from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from engine.migrate import HEAD, alembic_config, current, head, upgrade


def test_migrations_create_every_table(db):
    names = set(inspect(db).get_table_names())
    assert {"contacts", "contact_tags", "orders", "events", "campaigns", "runs", "deliveries",
            "suppressions", "coupons", "workers", "alembic_version", "leases", "trigger_sends", "points_ledger",
            "content_items", "item_sends", "survey_responses", "survey_answers", "contests",
            "contest_entries"} <= names
    assert current(db) == head()


def test_the_migrated_schema_matches_the_models(db):
    with db.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_migrations_downgrade_and_upgrade_again(db):
    cfg = alembic_config(db.url.render_as_string(hide_password=False))
    command.downgrade(cfg, "0001")
    assert current(db) == "0001"
    command.upgrade(cfg, "head")
    assert current(db) == head()


def test_ledger_is_unique_per_run_and_contact(db):
    uniques = {tuple(u["column_names"]) for u in inspect(db).get_unique_constraints("deliveries")}
    assert ("run_id", "contact_id") in uniques
    run_uniques = {tuple(u["column_names"]) for u in inspect(db).get_unique_constraints("runs")}
    assert ("campaign_id", "occurrence_at") in run_uniques


def test_the_head_constant_is_the_newest_migration_script():
    assert HEAD == head()


def test_current_reads_an_empty_database_as_never_migrated(tmp_path):
    from engine.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert current(engine) is None
        upgrade(engine)
        assert current(engine) == HEAD
    finally:
        engine.dispose()
