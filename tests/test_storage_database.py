"""Opening databases: URL normalisation, engine settings, Optuna sharing the database, bad input."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

import storage
from storage import StorageError


# ------------------------------------------------------------------------------ URLs
def test_postgres_urls_get_the_psycopg3_driver() -> None:
    assert storage.normalise_url("postgresql://root@db:5433/nas") == "postgresql+psycopg://root@db:5433/nas"
    assert storage.normalise_url("postgres://root@db/nas") == "postgresql+psycopg://root@db/nas"
    assert storage.normalise_url("postgresql+psycopg://u:s3cret@h/d") == "postgresql+psycopg://u:s3cret@h/d"


def test_sqlite_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.normalise_url("sqlite:///sub/x.db") == f"sqlite:///{tmp_path}/sub/x.db"
    assert storage.normalise_url(f"sqlite:///{tmp_path}/y.db") == f"sqlite:///{tmp_path}/y.db"


def test_default_url_is_nas_db_in_the_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAS_WORK_DIR", raising=False)
    assert storage.default_database_url() == f"sqlite:///{tmp_path}/work/nas.db"
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "elsewhere"))
    with storage.open_database() as db:
        assert db.url == f"sqlite:///{tmp_path}/elsewhere/nas.db"
    assert (tmp_path / "elsewhere" / "nas.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/nas", "unknown database URL scheme 'mysql'"),
        ("mongodb://localhost/nas", "unknown database URL scheme 'mongodb'"),
        ("work/nas.db", "is not a database URL; use sqlite:///"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql+psycopg2://root@localhost/nas", "use postgresql\\+psycopg://"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        storage.open_database(url)


# -------------------------------------------------------------------------- engines
def test_sqlite_settings(sqlite_url: str) -> None:
    with storage.open_database(sqlite_url) as db, db.engine.connect() as conn:
        assert db.dialect == "sqlite"
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert "postgres" not in repr(db)


def test_password_is_masked_in_repr() -> None:
    url = storage.normalise_url("postgresql://u:s3cret@127.0.0.1:1/d")
    assert "s3cret" in url  # Optuna needs the real URL
    db = storage.Database(url=url, engine=__import__("sqlalchemy").create_engine(url))
    assert "s3cret" not in repr(db) and "s3cret" not in db.safe_url


# ------------------------------------------------------- Optuna shares the database
@pytest.fixture
def optuna_quiet() -> Iterator[object]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield optuna


def _optuna_study(optuna: object, url: str, name: str) -> None:
    study = optuna.create_study(  # type: ignore[attr-defined]
        storage=url, study_name=name, directions=["maximize", "minimize"]
    )
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 4)), n_trials=2)


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_optuna_after_our_tables(db_url: str, optuna_quiet: object) -> None:
    optuna = optuna_quiet
    with storage.open_database(db_url) as db:
        sn = storage.upsert_supernet(db, content_hash="h", name="n", path="p", config={}, space={}, provenance={})
        storage.create_study(db, name="s", optuna_study_name="opt-s", spec={}, supernet_id=sn)
        _optuna_study(optuna, db.url, "opt-s")  # Optuna creates its tables next to ours
    with storage.open_database(db_url) as db:  # and we still open cleanly afterwards
        assert storage.get_study(db, "s") is not None
        assert storage.current_revision(db.engine) == storage.head_revision()
        loaded = optuna.load_study(study_name="opt-s", storage=db.url)  # type: ignore[attr-defined]
        assert len(loaded.trials) == 2
    tables = _tables(db.url)
    assert {"studies", "trials", "alembic_version", "nas_alembic_version", "nas_study"} <= tables


def test_our_tables_after_optuna(db_url: str, optuna_quiet: object) -> None:
    optuna = optuna_quiet
    url = storage.normalise_url(db_url)
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _optuna_study(optuna, url, "first")
    with storage.open_database(db_url) as db:
        assert db.url == url
        assert storage.current_revision(db.engine) == storage.head_revision()
        assert storage.list_studies(db) == []
        assert len(optuna.load_study(study_name="first", storage=db.url).trials) == 2  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- bad input
def test_unreachable_postgres_server() -> None:
    with pytest.raises(StorageError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1 .*server is running"):
        storage.open_database("postgresql://root@127.0.0.1:1/nas")


@pytest.mark.postgres
def test_missing_postgres_database(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/nas_no_such_database"
    with pytest.raises(StorageError, match="database 'nas_no_such_database' does not exist.*createdb"):
        storage.open_database(missing)


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nas.db"
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    with pytest.raises(StorageError, match="is not a SQLite database .*move it away"):
        storage.open_database(f"sqlite:///{path}")


def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a directory"):
        storage.open_database(f"sqlite:///{tmp_path}")


def test_sqlite_directory_that_cannot_be_created() -> None:
    with pytest.raises(StorageError, match="cannot create the directory /proc/nas-test"):
        storage.open_database("sqlite:////proc/nas-test/nas.db")


def _run_unprivileged(fn: Callable[[], None]) -> str:
    """Run ``fn`` and return the StorageError message (or 'OK'); as root, in a child as nobody.

    Root ignores file permissions, so a read-only path is only read-only for another user.
    """
    def attempt() -> str:
        try:
            fn()
        except StorageError as exc:
            return f"StorageError: {exc}"
        except BaseException as exc:  # noqa: BLE001 - report anything else as a failure
            return f"{type(exc).__name__}: {exc}"
        return "OK"

    if os.geteuid() != 0:
        return attempt()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_fd, attempt().encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir outside pytest's root-only tree, so another user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="nas-storage-"))
    path.chmod(0o777)
    yield path
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
    shutil.rmtree(path)


def test_read_only_directory(shared_tmp: Path) -> None:
    ro = shared_tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = _run_unprivileged(lambda: storage.open_database(f"sqlite:///{ro}/nas.db").close())
    assert out.startswith("StorageError: ") and f"directory {ro} of SQLite database" in out and "read-only" in out


def test_read_only_database_file(shared_tmp: Path) -> None:
    path = shared_tmp / "nas.db"
    storage.open_database(f"sqlite:///{path}").close()
    for p in shared_tmp.iterdir():
        p.chmod(0o444)
    shared_tmp.chmod(0o555)
    out = _run_unprivileged(lambda: storage.open_database(f"sqlite:///{path}").close())
    assert out.startswith("StorageError: ") and f"SQLite database {path} is read-only" in out
