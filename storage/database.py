"""Opening a database: URL normalisation, engine setup per backend, clear connection errors.

Two backends:

* SQLite (the embedded default): one file, WAL journal, 30 s busy timeout, foreign keys
  on. Every transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers wait
  for each other instead of failing with "database is locked" half-way through.
* PostgreSQL through psycopg 3 (``postgresql+psycopg://``; plain ``postgresql://`` and
  ``postgres://`` are normalised to it) for many workers on many hosts.

:attr:`Database.url` is the normalised URL; Optuna's ``RDBStorage`` accepts the same URL,
so one file / one database holds both our tables and Optuna's.

A :class:`Database` holds an engine (a connection pool): open one per process, never
share one across ``fork``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError
from storage.migrate import VERSION_TABLE, current_revision, upgrade_schema

log = logging.getLogger(__name__)

DEFAULT_FILENAME = "nas.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10

_URL_HELP = "use sqlite:///PATH/TO/nas.db or postgresql+psycopg://USER@HOST:PORT/DBNAME"


def default_database_url() -> str:
    """``sqlite:///<NAS_WORK_DIR or ./work>/nas.db`` as an absolute path."""
    work_dir = Path(os.environ.get("NAS_WORK_DIR") or "work")
    return "sqlite:///" + str((work_dir / DEFAULT_FILENAME).expanduser().resolve())


def normalise_url(url: str | None) -> str:
    """Check ``url`` and return the canonical form used everywhere (and by Optuna).

    ``None`` means :func:`default_database_url`. SQLite paths become absolute; PostgreSQL
    URLs get the psycopg 3 driver. Raises :class:`StorageError` for anything else.
    """
    return _render(_parse(url))


def _parse(url: str | None) -> URL:
    text = default_database_url() if url is None else str(url).strip()
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise StorageError(f"{text!r} is not a database URL; {_URL_HELP}") from None
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name() if "+" in parsed.drivername else ""
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise StorageError(f"unsupported SQLite driver {driver!r} in {text!r}; use sqlite:///PATH")
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise StorageError(
                f"{text!r} is an in-memory or URI-mode SQLite database; the database is shared "
                f"with Optuna and other processes, so give a file: sqlite:///PATH/TO/nas.db"
            )
        path = Path(database).expanduser().resolve()
        return parsed.set(drivername="sqlite", database=str(path), query={})
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StorageError(
                f"unsupported PostgreSQL driver {driver!r} in {parsed.render_as_string()!r}; "
                f"use postgresql+psycopg:// (psycopg 3)"
            )
        return parsed.set(drivername="postgresql+psycopg")
    raise StorageError(
        f"unknown database URL scheme {parsed.drivername!r} in {parsed.render_as_string()!r}; "
        f"{_URL_HELP}"
    )


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


class Database:
    """An open database at the newest schema: its normalised URL, engine and sessions.

    Use :meth:`session_scope` for every unit of work; the record/query functions of
    :mod:`storage` take a ``Database`` and do that for you.
    """

    __slots__ = ("_sessions", "engine", "url")

    def __init__(self, *, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception, always close.

        Lost connections, timeouts and locks (SQLAlchemy ``OperationalError``) surface as
        :class:`StorageError`.
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise StorageError(f"database {self.safe_url} failed: {_first_line(exc.orig)}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"


def open_database(url: str | None = None, *, create: bool = True, init: bool = False) -> Database:
    """Open the database at ``url`` and upgrade its schema to the newest.

    ``url``: ``sqlite:///PATH`` or ``postgresql+psycopg://USER@HOST:PORT/DB`` (plain
    ``postgresql://`` is accepted); ``None`` means ``sqlite:///<NAS_WORK_DIR or ./work>/nas.db``.

    ``create``: make the SQLite file (and its directory) when missing and our tables when
    absent; commands that only read pass ``False`` and get a :class:`StorageError` for a
    missing file or a database without our tables, so that a mistyped path creates
    nothing. ``init``: also add our tables to an existing SQLite file that holds other
    tables (neither ours nor Optuna's); without it such a file is refused untouched. A
    PostgreSQL database must exist.

    Raises :class:`StorageError` for an unknown URL scheme, an unreachable server, a
    read-only path, a file that is not a SQLite database, a database written by a newer
    version of this package, or the cases above.
    """
    parsed = _parse(url)
    normalised = _render(parsed)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        path = Path(parsed.database)
        _check_sqlite_path(path, create=create)
        if path.exists():
            _check_sqlite_owner(path, create=create, init=init)
        engine = _sqlite_engine(parsed)
    else:
        engine = _postgres_engine(parsed)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        if not create and current_revision(engine) is None:
            raise StorageError(
                f"database {engine.url.render_as_string(hide_password=True)} holds no NAS results yet (no nas_* tables); "
                "check --storage / NAS_STORAGE, or create it with `nas search SPEC.yaml` or `nas db upgrade URL`"
            )
        upgrade_schema(engine, url=engine.url.render_as_string(hide_password=True))
    except DBAPIError as exc:
        engine.dispose()
        raise _explain(exc, parsed) from exc
    except BaseException:
        engine.dispose()
        raise
    log.debug("opened database %s", engine.url.render_as_string(hide_password=True))
    return Database(url=normalised, engine=engine)


def require_database(url: str | None = None) -> str:
    """Check that ``url`` names an existing database with our tables, creating nothing
    (for commands that only read); return the normalised URL. Raises :class:`StorageError`."""
    with open_database(url, create=False) as db:
        return db.url


#: Optuna's own tables (a database Optuna made may receive ours: they share it by design).
_OPTUNA_TABLES = frozenset({"studies", "version_info"})


def _check_sqlite_path(path: Path, *, create: bool = True) -> None:
    if path.is_dir():
        raise StorageError(f"SQLite path {path} is a directory; give a file path such as {path / DEFAULT_FILENAME}")
    parent = path.parent
    if not create:
        if not path.is_file():
            raise StorageError(
                f"no database at {path} (nothing was created: this command only reads); check --storage, "
                f"NAS_STORAGE or NAS_WORK_DIR, or create it with `nas search SPEC.yaml`"
            )
    else:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory {parent} for SQLite database {path} ({exc.strerror}); "
                f"choose a writable location"
            ) from None
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(
            f"SQLite database {path} is read-only; make it writable or copy it to a writable location"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"the directory {parent} of SQLite database {path} is read-only (SQLite needs to "
            f"create its journal files there); choose a writable location"
        )


def _check_sqlite_owner(path: Path, *, create: bool, init: bool) -> None:
    """Refuse (before anything writes to it, even the journal mode) an existing SQLite
    file that holds tables but none of ours or Optuna's, unless ``init``."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc).lower() or "malformed" in str(exc).lower():
            raise StorageError(
                f"{path} is not a SQLite database (the file is corrupt or holds something else); "
                f"move it away or point --storage at another file"
            ) from None
        raise StorageError(f"cannot open SQLite database {path}: {_first_line(exc)}") from None
    names = {n for n in names if not n.startswith("sqlite_")}
    if not names or VERSION_TABLE in names or _OPTUNA_TABLES <= names or init:
        return
    shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
    if not create:
        raise StorageError(
            f"SQLite database {path} holds no NAS results: it has {len(names)} other table(s) ({shown}) and none "
            "of ours; check --storage / NAS_STORAGE"
        )
    raise StorageError(
        f"SQLite database {path} belongs to something else: it has {len(names)} other table(s) ({shown}) and "
        "none of ours; point --storage at another file, or pass --init to `nas search` (or run "
        "`nas db upgrade URL`) to add the NAS tables to it"
    )


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            enable_sqlite_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes
        # fails at once (no busy wait) when another writer committed in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def enable_sqlite_wal(cursor: Any) -> None:
    """Switch the file to write-ahead logging (persistent: once per file).

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, while another connection holds the file
    (two processes opening a new database together). Retry until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _postgres_engine(url: URL) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


def _explain(exc: DBAPIError, url: URL) -> StorageError:
    """Turn a driver error raised while opening ``url`` into one clear message."""
    reason = _first_line(exc.orig)
    lower = str(exc.orig).lower()
    if url.get_backend_name() == "sqlite":
        path = url.database
        if "not a database" in lower or "malformed" in lower:
            return StorageError(
                f"{path} is not a SQLite database (the file is corrupt or holds something else); "
                f"move it away or point --storage at another file"
            )
        if "readonly" in lower or "read-only" in lower:
            return StorageError(
                f"SQLite database {path} is read-only; make it and its directory writable or "
                f"choose another location"
            )
        if "locked" in lower:
            return StorageError(
                f"SQLite database {path} stayed locked by another process for "
                f"{SQLITE_BUSY_TIMEOUT_S:.0f} s; retry when the other writer is done"
            )
        return StorageError(f"cannot open SQLite database {path}: {reason}")
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if "does not exist" in lower and "database" in lower:
        return StorageError(
            f"PostgreSQL database {url.database!r} does not exist on {where}; create it "
            f"(createdb -h {url.host or 'localhost'} -p {url.port or 5432} {url.database}) or fix the URL"
        )
    return StorageError(
        f"cannot connect to PostgreSQL at {where} (database {url.database!r}): {reason}; "
        f"check that the server is running and the URL is right"
    )


__all__ = ["Database", "default_database_url", "enable_sqlite_wal", "normalise_url", "open_database", "require_database"]
