"""Race-safe insert-or-get and upsert under a unique key (``INSERT ... ON CONFLICT``).

Both backends support ``ON CONFLICT`` with ``RETURNING``. Under PostgreSQL's READ
COMMITTED, an insert that collides with a concurrent uncommitted insert waits for it;
if that one commits, ours does nothing and the following SELECT (a fresh snapshot) sees
its row. SQLite serialises writers (``BEGIN IMMEDIATE``). Either way two workers racing
to store the same key end with one row, the same id, and no error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, record: type) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(record)
    return sqlite.insert(record)


def insert_or_get(
    session: Session, record: type, values: Mapping[str, Any], key: Sequence[str]
) -> tuple[int, bool]:
    """Insert ``values`` unless a row with the same ``key`` columns exists; return (id, created)."""
    stmt = (
        _insert(session, record)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(key))
        .returning(record.id)  # type: ignore[attr-defined]
    )
    new_id = session.execute(stmt).scalar_one_or_none()
    if new_id is not None:
        return int(new_id), True
    existing = session.execute(
        select(record.id).where(*[getattr(record, k) == values[k] for k in key])  # type: ignore[attr-defined]
    ).scalar_one()
    return int(existing), False


def upsert(
    session: Session,
    record: type,
    values: Mapping[str, Any],
    key: Sequence[str],
    update: Mapping[str, Any],
) -> int:
    """Insert ``values``, or on a ``key`` conflict set the ``update`` columns; return the id."""
    stmt = (
        _insert(session, record)
        .values(**values)
        .on_conflict_do_update(index_elements=list(key), set_=dict(update))
        .returning(record.id)  # type: ignore[attr-defined]
    )
    return int(session.execute(stmt).scalar_one())
