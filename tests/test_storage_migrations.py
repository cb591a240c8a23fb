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
    assert storage.head_revision() == "0003"


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
        assert storage.current_revision(db.engine) == storage.head_revision()
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


def test_0003_gives_existing_evaluations_the_settings_their_study_scored_them_with(db_url: str) -> None:
    """Rows written before the cache key had settings get their study's dtype (and context
    window), or 'unknown' where no study or several disagreeing ones could have scored them."""
    import datetime as dt
    from pathlib import Path

    import sqlalchemy as sa

    url = storage.normalise_url(db_url)
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    storage.upgrade_schema(engine, "0002")
    meta = sa.MetaData()
    t = {name: sa.Table(name, meta, autoload_with=engine) for name in ("nas_supernet", "nas_study", "nas_subnet",
                                                                         "nas_trial", "nas_evaluation")}
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def spec(dtype: str, rungs: list) -> dict:
        return {"tasks": [{"name": "piqa"}], "dtype": dtype, "fidelities": [{"limit": r, "seed": 0} for r in rungs]}

    with engine.begin() as conn:
        conn.execute(t["nas_supernet"].insert(), [{"id": 1, "content_hash": "h", "name": "n", "path": "/p",
                                                    "config": {"max_seq_len": 2048}, "space": {}, "provenance": {},
                                                    "created_at": t0}])
        conn.execute(t["nas_study"].insert(), [
            {"id": 1, "name": "a", "optuna_study_name": "a", "spec": spec("bf16", [50, None]), "supernet_id": 1,
             "status": "finished", "created_at": t0},
            {"id": 2, "name": "b", "optuna_study_name": "b", "spec": spec("fp32", [100, None]), "supernet_id": 1,
             "status": "finished", "created_at": t0 + dt.timedelta(days=1)},
        ])
        conn.execute(t["nas_subnet"].insert(), [
            {"id": i, "supernet_id": 1, "config_json": "{}", "config_hash": f"c{i}", "n_layer": 1, "params": 1,
             "created_at": t0} for i in (1, 2, 3)
        ])
        conn.execute(t["nas_trial"].insert(), [
            {"id": 1, "study_id": 1, "trial_number": 0, "subnet_id": 1, "fidelity": "full", "feasible": True,
             "state": "COMPLETE", "created_at": t0, "updated_at": t0},
            {"id": 2, "study_id": 1, "trial_number": 1, "subnet_id": 2, "fidelity": "full", "feasible": True,
             "state": "COMPLETE", "created_at": t0, "updated_at": t0},
            {"id": 3, "study_id": 2, "trial_number": 0, "subnet_id": 1, "fidelity": "full", "feasible": True,
             "state": "COMPLETE", "created_at": t0, "updated_at": t0},
        ])
        rows = {  # id: (subnet, fidelity, created)
            1: (1, "n50-s0", t0 + dt.timedelta(hours=1)),  # only study a has this rung: bf16
            2: (1, "n100-s0", t0 + dt.timedelta(days=2)),  # only study b: fp32
            3: (1, "full", t0 + dt.timedelta(days=2)),  # both ladders end at full: a bf16, b fp32 -> unknown
            4: (2, "full", t0 + dt.timedelta(hours=2)),  # subnet 2 is only in study a: bf16
            5: (3, "full", t0),  # no study has a trial on it -> unknown
        }
        conn.execute(t["nas_evaluation"].insert(), [
            {"id": i, "subnet_id": s, "task": "piqa", "metric": "acc", "value": 0.5, "stderr": 0.1, "n_examples": 10,
             "fidelity": f, "harness_version": "0.4.9", "task_hash": "th", "wall_s": 1.0, "created_at": c}
            for i, (s, f, c) in rows.items()
        ])
    engine.dispose()
    with storage.open_database(db_url) as db:
        assert storage.current_revision(db.engine) == storage.head_revision()
        settings = {e.id: e.settings for s in (1, 2, 3) for e in storage.list_evaluations(db, s)}
    bf16 = '{"dtype":"bf16","max_length":2048,"softmax":"bf16"}'
    fp32 = '{"dtype":"fp32","max_length":2048,"softmax":"fp32"}'
    unknown = '{"legacy":"unknown"}'
    assert settings == {1: bf16, 2: fp32, 3: unknown, 4: bf16, 5: unknown}
