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
def pg_url_factory() -> Iterator[Callable[[], str]]:
    """Make fresh, uniquely named PostgreSQL databases; all are dropped at the end of the run.

    Returns a callable giving a ``postgresql+psycopg://`` URL of a new empty database.
    When the server (127.0.0.1:5432, trust auth) is unreachable the test fails if
    ``CI=true`` and is skipped otherwise.
    """
    try:
        admin = _pg_admin_connect()
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server"
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    created: list[str] = []

    def make() -> str:
        name = f"nas_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    try:
        yield make
    finally:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def pg_url(pg_url_factory: Callable[[], str]) -> str:
    """One fresh PostgreSQL database shared by the whole test session (use unique names in it)."""
    return pg_url_factory()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (not yet created) in the test's own tmp dir."""
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nas.db'}"
    return request.getfixturevalue("pg_url_factory")()
