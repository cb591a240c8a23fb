"""Two `nas worker` processes on one PostgreSQL study; one is killed with SIGKILL mid-trial.

The study must still end with exactly ``n_trials`` complete trials: the killed worker's
trial goes stale (heartbeats stop), is failed and re-queued, and the surviving worker
runs the retry.
"""

from __future__ import annotations

import os
import signal
import socket
import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

import storage
from _search import make_spec, save_tiny_supernet
from nas.search import open_search

N_TRIALS = 10


def _run_worker(study: str, url: str) -> None:
    """A ``nas worker`` process, forked after the imports so that it starts in a blink."""
    import torch

    from nas.cli import main

    torch.set_num_threads(1)
    sys.argv = ["nas", "worker", study, "--storage", url, "--quiet"]
    main()


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
    """Exactly N_TRIALS complete trials, the killed trial failed and retried once, nothing left running."""
    url = pg_url_factory()
    tiny = save_tiny_supernet(tmp_path / "supernet")
    spec = make_spec(
        tiny.path, url, name="w", budget={"n_trials": N_TRIALS},
        tasks=[{"name": "heldout_loss", "n_examples": 128, "seq_len": 32}],
        fault_tolerance={"heartbeat_interval_s": 1, "grace_period_s": 2, "max_retry": 3},
    )
    search = open_search(spec, loaded=tiny)  # create the study; the workers do the rest
    search.close()  # no pooled connection may cross the fork
    victim, survivor = _worker("w", url), _worker("w", url)
    victim_id = f"{socket.gethostname()}:{victim.pid}"
    deadline = time.monotonic() + 120
    killed_trial = None
    try:
        while time.monotonic() < deadline and killed_trial is None:
            trials = _study(url).get_trials(deepcopy=False)
            mine = [t for t in trials if t.user_attrs.get("worker") == victim_id]
            running = [t for t in mine if t.state.name == "RUNNING"]
            if running and any(t.state.name == "COMPLETE" for t in mine):
                os.kill(victim.pid, signal.SIGKILL)
                victim.join()
                # the kill may land just after the trial finished: only a trial the dead
                # worker left RUNNING tests the retry; otherwise send in a new victim
                after = _study(url).get_trials(deepcopy=False)
                left = [t for t in after if t.user_attrs.get("worker") == victim_id and t.state.name == "RUNNING"]
                if left:
                    killed_trial = left[0].number
                else:
                    victim = _worker("w", url)
                    victim_id = f"{socket.gethostname()}:{victim.pid}"
            elif not survivor.is_alive():
                break
            time.sleep(0.05)
        assert killed_trial is not None, "the victim worker never ran a second trial to be killed in"
        survivor.join(timeout=120)
        assert survivor.exitcode == 0
    finally:
        for proc in (victim, survivor):
            if proc.is_alive():
                proc.kill()
            proc.join()
    trials = _study(url).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == N_TRIALS, states
    assert "RUNNING" not in states and "WAITING" not in states
    killed = trials[killed_trial]
    assert killed.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    # the kill can land while the trial is still suggesting its sub-network (caught by CI): the
    # retry keeps every choice the dead trial had stored and samples the rest
    assert killed.params.items() <= retries[0].params.items(), (killed.params, retries[0].params)
    db = storage.open_database(url)
    rows = storage.list_trials(db, "w")
    assert [r.state for r in rows].count("COMPLETE") == N_TRIALS
    assert storage.get_study(db, "w").status == "finished"
    db.close()
