"""Alembic migrations: empty database, previous revision, newer schema, ORM/migration agreement."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import storage
from storage import StorageError
from storage.migrate import VERSION_TABLE

OUR_TABLES = {
    "nas_alembic_version",
    "nas_supernet",
    "nas_study",
    "nas_subnet",
    "nas_evaluation",
    "nas_example_scores",
    "nas_cost",
    "nas_trial",
}


def test_there_are_several_revisions() -> None:
    assert storage.head_revision() == "0002"


def test_empty_database_is_upgraded_on_open(db_url: str) -> None:
    with storage.open_database(db_url) as db:
        assert storage.current_revision(db.engine) == storage.head_revision()
        assert set(inspect(db.engine).get_table_names()) == OUR_TABLES


def test_previous_revision_is_upgraded_and_keeps_data(db_url: str) -> None:
    url = storage.normalise_url(db_url)
    engine = create_engine(url)
    if url.startswith("sqlite"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    assert storage.upgrade_schema(engine, "0001") == "0001"
    assert storage.current_revision(engine) == "0001"
    assert "ix_nas_trial_subnet_id" not in {ix["name"] for ix in inspect(engine).get_indexes("nas_trial")}
    with engine.begin() as conn:  # data written by an older version of the package
        conn.execute(
            text(
                "INSERT INTO nas_supernet (id, content_hash, name, path, config, space, provenance, created_at) "
                "VALUES (1, 'old', 'old-net', '/p', '{}', '{}', '{}', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()

    with storage.open_database(db_url) as db:
        assert storage.current_revision(db.engine) == "0002"
        indexes = {ix["name"] for ix in inspect(db.engine).get_indexes("nas_trial")}
        assert "ix_nas_trial_subnet_id" in indexes
        row = storage.get_supernet(db, "old")
        assert row is not None and row.name == "old-net"


def test_newer_schema_is_refused(db_url: str) -> None:
    with storage.open_database(db_url) as db, db.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'"))
    with pytest.raises(StorageError, match="schema revision '9999_future', newer than this version of nas knows"):
        storage.open_database(db_url)


def test_orm_matches_migrated_schema(db_url: str) -> None:
    """The Record classes and the migrations describe the same schema (no drift)."""
    with storage.open_database(db_url) as db, db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "version_table": VERSION_TABLE,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    type_ != "table" or name in OUR_TABLES - {"nas_alembic_version"}
                ),
            },
        )
        assert compare_metadata(ctx, storage.Base.metadata) == []


def test_upgrade_is_idempotent(sqlite_url: str) -> None:
    with storage.open_database(sqlite_url) as db:
        assert storage.upgrade_schema(db.engine) == storage.head_revision()
    with storage.open_database(sqlite_url) as db:
        assert storage.current_revision(db.engine) == storage.head_revision()
