"""Shared pytest fixtures. Keep each fixture small and documented; group them by area."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------ databases
PG_HOST = os.environ.get("NAS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("NAS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("NAS_TEST_PG_USER", "root")


def _pg_admin_connect():  # noqa: ANN202
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=3
    )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for the whole test session, dropped at the end.

    ``postgresql+psycopg://root@127.0.0.1:5432/nas_test_<pid>_<hex>``. When the server is
    unreachable the test fails if ``CI=true`` and is skipped otherwise.
    """
    try:
        admin = _pg_admin_connect()
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server"
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    name = f"nas_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def pg_url_factory(pg_url: str) -> Iterator[Callable[[], str]]:
    """Make empty PostgreSQL databases cheaply: each call gives a URL for a new schema.

    Each URL points at a fresh schema of the session database (``pg_url``) through the
    connection's ``search_path``, so it behaves as an empty database for our tables and
    Optuna's alike; everything goes when the session database is dropped. (Creating and
    dropping a real database per test costs a checkpoint each: about a second under load.)
    """
    import psycopg

    admin = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE SCHEMA "{schema}"')
        return f"{pg_url}?options=-csearch_path%3D{schema}"

    try:
        yield make
    finally:
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (not yet created) in the test's own tmp dir."""
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine in turn: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nas.db'}"
    return request.getfixturevalue("pg_url_factory")()


# ------------------------------------------------------------------------------ search
@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models (threads only add contention); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - LoadedSupernet, imported lazily
    """The search tests' tiny saved supernet (``_search.TINY``), loaded in fp32, one per module.
    A module defining its own ``tiny`` overrides it."""
    from _search import save_tiny_supernet

    return save_tiny_supernet(tmp_path_factory.mktemp("tiny") / "supernet")
