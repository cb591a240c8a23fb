"""Schema migrations, run programmatically with Alembic (no alembic.ini needed).

The revision scripts live in ``storage/migrations/versions``. Our Alembic version table is
``nas_alembic_version`` (Optuna keeps its own ``alembic_version`` in the same database).
:func:`upgrade_schema` brings a database to the newest revision this package knows and
refuses one written by a newer version of the package. Concurrent upgrades are safe:
PostgreSQL serialises them with a transaction-scoped advisory lock, SQLite with its write
lock (our SQLite transactions begin with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, text

from storage.errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "nas_alembic_version"
# Key of the PostgreSQL advisory lock that serialises concurrent schema upgrades.
_PG_LOCK_KEY = 0x6E61735F6462  # "nas_db"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    """The newest schema revision this package knows (e.g. ``"0002"``)."""
    head = _script().get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at; ``None`` for a database without our tables."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def _refuse_unknown(revision: str | None, url: str) -> None:
    if revision is None:
        return
    known = {rev.revision for rev in _script().walk_revisions()}
    if revision not in known:
        raise StorageError(
            f"database {url} has schema revision {revision!r}, newer than this version of "
            f"nas knows (newest: {head_revision()!r}); upgrade the nas package, or point "
            f"--storage at another database"
        )


def upgrade_schema(engine: Engine, revision: str = "head", *, url: str | None = None) -> str:
    """Upgrade the database behind ``engine`` to ``revision`` (default: newest); return it.

    Raises :class:`StorageError` if the database is at a revision this package does not
    know (written by a newer version). ``url`` only names the database in messages.
    """
    name = url or engine.url.render_as_string(hide_password=True)
    current = current_revision(engine)
    _refuse_unknown(current, name)
    target = head_revision() if revision == "head" else revision
    if current == target:
        return current
    cfg = _alembic_config()
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        # Re-check under the lock: another process may have upgraded meanwhile.
        locked_current = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
        _refuse_unknown(locked_current, name)
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, revision)
        except CommandError as exc:
            raise StorageError(f"cannot upgrade database {name} to revision {revision!r}: {exc}") from exc
    log.info("database %s upgraded from %s to %s", name, current, target)
    return target


def revision(url: str, message: str) -> None:
    """Developer helper: autogenerate a new revision script by diffing the ORM against ``url``.

    ``url`` must be a scratch database already upgraded to the current head.
    """
    cfg = _alembic_config()
    cfg.set_main_option("sqlalchemy.url", url)
    command.revision(cfg, message=message, autogenerate=True)


__all__ = ["VERSION_TABLE", "current_revision", "head_revision", "upgrade_schema"]
