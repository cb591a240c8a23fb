"""Alembic environment for the storage schema.

:func:`storage.migrate.upgrade_schema` runs Alembic programmatically and hands over an
open connection (inside a transaction that holds the migration lock) through
``config.attributes["connection"]``; no alembic.ini is needed. Our version table is
``nas_alembic_version`` so that it never collides with Optuna's ``alembic_version``.

Developers can still autogenerate a new revision against a scratch database::

    python -c "from storage.migrate import revision; revision('sqlite:///scratch.db', 'message')"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from storage.records import Base

VERSION_TABLE = "nas_alembic_version"


def _include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    # Only our tables: Optuna's tables share the database and are none of our business.
    if type_ == "table":
        return bool(name) and name.startswith("nas_")
    return True


def _configure_and_run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    _configure_and_run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _configure_and_run(conn)
    engine.dispose()
