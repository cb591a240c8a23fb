"""Two `nas worker` processes on one PostgreSQL study; one is killed with SIGKILL mid-trial
(at a fixed point: it hangs in its second evaluation until the test kills it).

The study must still end with exactly ``n_trials`` complete trials: the killed worker's
trials (the one it was scoring and the rest of its batch, waiting their turn) go stale
(heartbeats stop), are failed and re-queued, and the surviving worker runs the retries.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

import storage
from nas.search.study import open_search

from _search import make_spec, save_tiny_supernet

N_TRIALS = 10


def _run_worker(study: str, url: str) -> None:
    """A ``nas worker`` process, forked after the imports so that it starts in a blink."""
    import torch

    from nas.cli import main

    torch.set_num_threads(1)
    sys.argv = ["nas", "worker", study, "--storage", url, "--quiet"]
    main()


def _run_victim(study: str, url: str, hung: Any) -> None:
    """A worker that hangs in its second evaluation (one fidelity: one evaluation per trial,
    but a repeated sub-network is a cache hit, not an evaluation) until the parent kills it."""
    from evaluators.heldout import HeldOutLoss

    evaluate = HeldOutLoss.evaluate
    calls = 0

    def hang_on_the_second(self: HeldOutLoss, subnet: Any, fidelity: Any, prior: Any = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            hung.set()
            time.sleep(600)
        return evaluate(self, subnet, fidelity, prior)

    HeldOutLoss.evaluate = hang_on_the_second  # type: ignore[method-assign]
    _run_worker(study, url)


def _worker(study: str, url: str) -> multiprocessing.process.BaseProcess:
    proc = multiprocessing.get_context("fork").Process(target=_run_worker, args=(study, url))
    proc.start()
    return proc


def _study(url: str) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name="w", storage=url)


@pytest.mark.postgres
def test_two_workers_finish_the_study_when_one_is_killed(pg_url_factory: Callable[[], str], tmp_path: Path) -> None:
    """Exactly N_TRIALS complete trials, each killed trial failed and retried once, nothing left running."""
    url = pg_url_factory()
    tiny = save_tiny_supernet(tmp_path / "supernet")
    spec = make_spec(
        tiny.path, url, name="w", budget={"n_trials": N_TRIALS},
        tasks=[{"name": "heldout_loss", "n_examples": 128, "seq_len": 32}],
        promotion={"mode": "ladder"},  # one evaluation per trial: the victim hangs in its second trial
        fault_tolerance={"heartbeat_interval_s": 1, "grace_period_s": 2, "max_retry": 3},
    )
    search = open_search(spec, loaded=tiny)  # create the study; the workers do the rest
    search.close()  # no pooled connection may cross the fork
    ctx = multiprocessing.get_context("fork")
    hung = ctx.Event()
    victim = ctx.Process(target=_run_victim, args=("w", url, hung))
    victim.start()
    survivor = None
    try:
        assert hung.wait(timeout=120), "the victim worker never reached its second evaluation"
        victim_id = f"{socket.gethostname()}:{victim.pid}"
        mine = [t for t in _study(url).get_trials(deepcopy=False) if t.user_attrs.get("worker") == victim_id]
        # a batch of 8: its first trial scored (and any cache hit of a repeated sub-network), hung in
        # its second evaluation, the rest of the batch asked and waiting
        states = [t.state.name for t in mine]
        assert len(states) == 8 and set(states) == {"COMPLETE", "RUNNING"}, states
        killed_trials = [t.number for t in mine if t.state.name == "RUNNING"]
        survivor = _worker("w", url)
        os.kill(victim.pid, signal.SIGKILL)  # mid-trial: its sub-network chosen, its score not
        victim.join()
        survivor.join(timeout=120)
        assert survivor.exitcode == 0
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.is_alive():
                proc.kill()
            if proc is not None:
                proc.join()
    trials = _study(url).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == N_TRIALS, states
    assert "RUNNING" not in states and "WAITING" not in states
    for number in killed_trials:
        killed = trials[number]
        assert killed.state.name == "FAIL"
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == killed.params
    db = storage.open_database(url)
    rows = storage.list_trials(db, "w")
    assert [r.state for r in rows].count("COMPLETE") == N_TRIALS
    assert storage.get_study(db, "w").status == "finished"
    db.close()
