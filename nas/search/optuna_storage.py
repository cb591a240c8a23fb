"""Optuna's RDB storage on our database, with heartbeats and retry of stale trials.

Optuna's tables live in the same database as our ``nas_*`` tables (SQLite or
PostgreSQL), so ``optuna-dashboard URL`` shows every study. Creating Optuna's tables is
safe when several processes open a fresh database at once, and a trial whose worker died
before its first heartbeat is failed and retried like any stale trial
(:class:`HeartbeatStorage`). The workers of one study ask trials and fail stale ones under
one lock (:func:`trial_lock`), so a retry is never numbered after a trial asked while its
place in the budget looked free. On SQLite, Optuna's
connections switch to WAL with ``synchronous=NORMAL`` like ours, through storage's own
retrying helper.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import random
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._rdb import models  # the trial tables (HeartbeatStorage queries them)
from optuna.trial import TrialState
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from nas.errors import NasError
from nas.search.spec import FaultToleranceSpec
from storage.database import enable_sqlite_wal


def optuna_storage(url: str, fault_tolerance: FaultToleranceSpec) -> RDBStorage:
    """Optuna's RDB storage on ``url`` with the spec's heartbeat and retry settings.

    Opening it creates Optuna's tables in a fresh database. Several processes doing that
    at once (``nas search`` and workers started together) would collide ("table
    study_directions already exists", a duplicate ``alembic_version`` row), so on
    PostgreSQL the creation is serialised by an advisory lock and, on either backend, a
    collision with another process's creation is retried (it then finds the tables made).
    """
    ft = fault_tolerance
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    delay = 0.05
    for attempt in range(_ATTEMPTS):
        try:
            with warnings.catch_warnings(), _creation_lock(url):
                warnings.simplefilter("ignore")
                storage = HeartbeatStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=ft.heartbeat_interval_s,
                    grace_period=ft.grace_period_s or 3 * ft.heartbeat_interval_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=ft.max_retry),
                )
            break
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors vary by backend
            if attempt + 1 < _ATTEMPTS and _lost_creation_race(exc):
                time.sleep(delay * (1 + random.random()))
                delay *= 2
                continue
            raise NasError(f"Optuna cannot open storage {_safe(url)}: {str(exc).splitlines()[0]}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage.engine)
    return storage


class HeartbeatStorage(RDBStorage):
    """Optuna's RDB storage, whose stale trials also include a RUNNING trial that never
    sent a heartbeat and started more than the grace period ago.

    A worker killed between creating its trial (``study.ask``) and the first beat of its
    heartbeat thread leaves a RUNNING trial without a heartbeat row; Optuna never counts it
    as stale, so it is never failed nor retried, and a study waiting for its budget's last
    trial waits forever (found by ``bench/crash_resume.py``)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = list(super()._get_stale_trial_ids(study_id))
        assert self.heartbeat_interval is not None
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        cutoff = dt.datetime.now() - dt.timedelta(seconds=grace)  # datetime_start reads as naive local time
        session = self.scoped_session()
        try:
            silent = [
                t.trial_id
                for t in session.query(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(~models.TrialModel.heartbeats.any())
                .all()
                if t.datetime_start is not None and t.datetime_start < cutoff
            ]
        finally:
            session.close()
        return stale + [trial_id for trial_id in silent if trial_id not in stale]

    @contextmanager
    def study_lock(self, study_id: int) -> Iterator[None]:
        """Held by one worker of the study at a time, across processes: a transaction-level
        advisory lock on PostgreSQL (released at commit, or when a killed worker's connection
        drops), an ``flock`` on a file in the temporary directory named after the database on
        SQLite (whose own locks must not be touched: closing any descriptor of the database
        file drops them), a thread lock for an in-memory database."""
        url = make_url(self.url)
        if url.get_backend_name() == "postgresql":
            with self.engine.connect() as conn, conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:key, :study)"), {"key": _PG_STUDY_KEY, "study": study_id})
                yield
            return
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            name = hashlib.sha1(str(Path(url.database).resolve()).encode()).hexdigest()[:16]
            with open(Path(tempfile.gettempdir()) / f"nas-study-{name}-{study_id}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
                yield
            return
        with _MEMORY_LOCK:  # an in-memory database lives in one process
            yield


@contextmanager
def trial_lock(study: optuna.Study) -> Iterator[None]:
    """Serialise, across the workers of ``study``, asking a trial with failing stale trials.

    Optuna fails a stale trial and only then queues its retry. A worker that counted the
    budget in that gap saw a free place and asked a new trial, numbered before the retry;
    the budget guard then pruned the retry, and the killed worker's sub-network was never
    scored (``bench/distributed_workers.py``: one trial lost per run). Under this lock an
    ask comes before the stale trial is failed (it still holds its place) or after its
    retry is queued (which ``ask`` takes first)."""
    backend = getattr(study._storage, "_backend", study._storage)  # Optuna's cache wraps the RDB storage
    if not isinstance(backend, HeartbeatStorage):
        yield
        return
    with backend.study_lock(study._study_id):
        yield


def fail_stale(study: optuna.Study) -> None:
    """Fail (and, by the storage's callback, re-queue) the study's stale trials, under
    :func:`trial_lock`."""
    with trial_lock(study), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat is experimental
        fail_stale_trials(study)


_ATTEMPTS = 6
#: PostgreSQL advisory lock key serialising the creation of Optuna's tables ("nas_optuna").
_PG_LOCK_KEY = 0x6E61735F6F70
_MEMORY_LOCK = threading.Lock()
#: The first key of the two-key PostgreSQL advisory lock of one study's trials ("nasT").
_PG_STUDY_KEY = 0x6E617354


def _lost_creation_race(exc: BaseException) -> bool:
    """True for the errors of two processes creating Optuna's schema at once."""
    if isinstance(exc, IntegrityError):
        return True
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


@contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """A session-level advisory lock on PostgreSQL (released on exit); nothing elsewhere."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
                conn.commit()
    finally:
        engine.dispose()


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


__all__ = ["HeartbeatStorage", "fail_stale", "optuna_storage", "trial_lock"]
