from sqlalchemy import inspect

from engine.migrate import current


def test_migrations_create_every_table(db):
    names = set(inspect(db).get_table_names())
    assert {"contacts", "contact_tags", "orders", "events", "campaigns", "runs", "deliveries",
            "suppressions", "coupons", "workers", "alembic_version"} <= names
    assert current(db) == "0001"


def test_ledger_is_unique_per_run_and_contact(db):
    uniques = {tuple(u["column_names"]) for u in inspect(db).get_unique_constraints("deliveries")}
    assert ("run_id", "contact_id") in uniques
    run_uniques = {tuple(u["column_names"]) for u in inspect(db).get_unique_constraints("runs")}
    assert ("campaign_id", "occurrence_at") in run_uniques
