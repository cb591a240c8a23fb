"""A worker's batch of trials (:meth:`nas.search.driver.Search._run_batch`): heartbeats for
the trials waiting their turn, and the re-queue of those a run never started.

Optuna's own heartbeat thread covers the one trial inside ``study.optimize``; a batch is
asked with ``study.ask`` and told trial by trial, so it beats for itself.
"""

from __future__ import annotations

import logging
import threading
import warnings

import optuna
from optuna.trial import TrialState

from nas.search.trials import RETRY_ATTR, UNSTARTED_ATTR

log = logging.getLogger(__name__)


class Heartbeats:
    """Heartbeats for every asked trial of a batch until it is told. Optuna's own heartbeat
    thread covers the one trial inside ``study.optimize``; without beats, a batch's trials
    waiting for their turn would read as stale (:class:`~nas.search.optuna_storage.HeartbeatStorage`
    fails a RUNNING trial that never beat) and be retried by another worker."""

    def __init__(self, storage: object) -> None:
        self._storage = storage
        beats = getattr(storage, "get_heartbeat_interval", None)  # RDB storages (Optuna's BaseHeartbeat is private)
        self._interval = beats() if callable(beats) else None
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if self._interval is None:
            return
        with self._lock:
            self._ids.add(trial_id)
        self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def __enter__(self) -> Heartbeats:
        if self._interval is not None:
            self._thread = threading.Thread(target=self._beat, name="nas-batch-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        assert self._interval is not None
        while not self._done.wait(self._interval):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried next interval
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)


def requeue_unstarted(study: optuna.Study, trial: optuna.Trial) -> None:
    """A batch's trial that was never scored (the run stopped first): FAIL, marked
    ``unstarted``, and its parameters queued again so that the next run, or another
    worker, scores the same choice first."""
    trial.set_user_attr(UNSTARTED_ATTR, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})


__all__ = ["Heartbeats", "requeue_unstarted"]
