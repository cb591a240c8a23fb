"""Optuna's RDB storage on our database, with heartbeats and retry of stale trials.

Optuna's tables live in the same database as our ``nas_*`` tables (SQLite or
PostgreSQL), so ``optuna-dashboard URL`` shows every study. On SQLite, Optuna's
connections switch to WAL with ``synchronous=NORMAL`` like ours, through storage's own
retrying helper.
"""

from __future__ import annotations

import warnings
from typing import Any

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from nas.errors import NasError
from nas.search.spec import FaultToleranceSpec
from storage.database import enable_sqlite_wal


def optuna_storage(url: str, fault_tolerance: FaultToleranceSpec) -> RDBStorage:
    """Optuna's RDB storage on ``url`` with the spec's heartbeat and retry settings."""
    ft = fault_tolerance
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=ft.heartbeat_interval_s,
                grace_period=ft.grace_period_s or 3 * ft.heartbeat_interval_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=ft.max_retry),
            )
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors vary by backend
            raise NasError(f"Optuna cannot open storage {_safe(url)}: {str(exc).splitlines()[0]}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage.engine)
    return storage


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL with synchronous=NORMAL on Optuna's SQLite connections, as on ours: one fsync per
    checkpoint instead of per commit (an Optuna trial makes dozens of small commits)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            enable_sqlite_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    engine.dispose()  # connections opened before the listener reconnect with it


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database>"


__all__ = ["optuna_storage"]
