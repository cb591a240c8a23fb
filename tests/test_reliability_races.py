"""Processes that start together or die at the wrong moment (issue 16, items 10 and 13).

* Several `nas search` processes opening one fresh database at once: creating our schema,
  Optuna's tables and the study is race-free on SQLite and PostgreSQL (one died with
  "table study_directions already exists" / a duplicate ``alembic_version`` row).
* A worker killed between creating its trial and its first heartbeat left a RUNNING trial
  that Optuna never failed, so the study waited for it forever.
* SIGKILL a `nas search` (SQLite, WAL) at random points and resume it: the short version
  of ``bench/crash_resume.py``.
* Two workers handed the same sub-network at once (GP samplers do) score it once.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest

import storage
from nas.model.directory import load_supernet
from nas.search.optuna_storage import optuna_storage
from nas.search.spec import FaultToleranceSpec
from nas.search.study import open_search

from _search import SyntheticLoss, make_spec, optimize_together, save_tiny_supernet

REPO = Path(__file__).resolve().parent.parent
N_PROCESSES = 3


def _open_together(url: str, supernet: str, barrier: Any, results: Any) -> None:
    try:
        tiny = load_supernet(supernet, dtype="fp32")
        spec = make_spec(supernet, url, name="together")
        barrier.wait(timeout=60)
        open_search(spec, loaded=tiny).close()
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _race(url: str, supernet: Path) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(N_PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_open_together, args=(url, str(supernet), barrier, results)) for _ in range(N_PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [results.get(timeout=5) for _ in procs]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_processes_creating_one_study_together(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    tiny = save_tiny_supernet(tmp_path / "supernet")
    for round_ in range(2):  # each round an empty database: the race is on creation
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'fresh{round_}.db'}"
        else:
            url = request.getfixturevalue("pg_url_factory")()
        outcomes = _race(url, tiny.path)
        assert outcomes == ["ok"] * N_PROCESSES, outcomes
        with storage.open_database(url) as db:
            assert [s.name for s in storage.list_studies(db)] == ["together"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["together"]


def test_a_trial_that_never_sent_a_heartbeat_goes_stale(sqlite_url: str) -> None:
    """Killed between ``ask`` and its first heartbeat: failed after the grace period and
    retried, instead of RUNNING forever."""
    storage.open_database(sqlite_url).close()
    rdb = optuna_storage(sqlite_url, FaultToleranceSpec(heartbeat_interval_s=1, grace_period_s=1, max_retry=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name="silent", storage=rdb, directions=["minimize"])
        orphan = study.ask()  # RUNNING, and no heartbeat thread ever starts for it
        orphan.suggest_int("x", 0, 3)
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials(deepcopy=False)[0].state.name == "RUNNING"  # still within the grace period
        time.sleep(1.3)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].system_attrs.get("failed_trial") == orphan.number and trials[1].params == {"x": orphan.params["x"]}


def test_sigkill_at_random_points_and_resume(tmp_path: Path) -> None:
    """The short version of the crash benchmark: 3 kills of a forked `nas search` (the CLI
    entry point) at random points, then a final run."""
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "crash_resume.py"), "--kills", "3", "--trials", "10", "--seed", "1",
         "--max-delay", "1.5", "--work", str(tmp_path / "crash")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    # a run that finished the study before its kill came (a fast machine) is not a kill
    assert result["kills"] >= 2 and result["kills"] + result["runs_that_finished_before_their_kill"] == 3, result
    assert result["integrity_ok"] and result["journal_mode"] == "wal", result
    assert result["lost"] == 0 and result["duplicates"] == 0, result
    assert result["complete"] and result["trials_complete"] == 10, result


class _Slow:
    """A scorer that takes ``delay_s`` per evaluation, so two workers overlap."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.tasks, self.harness_version = inner.tasks, inner.harness_version
        self.task_hashes, self.settings, self.n_docs = inner.task_hashes, inner.settings, inner.n_docs
        self.calls = 0

    def evaluate(self, subnet: Any, fidelity: Any, prior: Any = None) -> Any:
        self.calls += 1
        time.sleep(self.delay_s)
        return self.inner.evaluate(subnet, fidelity, prior)


def test_two_workers_given_one_proposal_score_it_once(tmp_path: Path, sqlite_url: str) -> None:
    """A GP sampler gives workers that ask at one moment the same sub-network; the later
    trial waits for the earlier and takes its scores from the cache (issue 16, item 12)."""
    tiny = save_tiny_supernet(tmp_path / "sn")
    one = {"n_layer_choices": [3], "n_head_choices": [4], "d_ff_choices": [64]}  # every trial: the same sub-network
    spec = make_spec(tiny.path, sqlite_url, space=one, budget={"n_trials": 2})
    scorers = [_Slow(SyntheticLoss(n_examples=16), delay_s=1.5) for _ in range(2)]
    searches = [open_search(spec, scorers=[scorers[0]], loaded=tiny),
                open_search(spec, scorers=[scorers[1]], loaded=tiny, worker=True)]
    summaries = optimize_together(searches, stagger_s=0.3, max_trials=1)  # worker 1 asks while worker 0 scores
    trials = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len({t.user_attrs["config_hash"] for t in trials}) == 1 and trials[0].values == trials[1].values
    assert scorers[0].calls + scorers[1].calls == 1  # one evaluation; the twin was a cache hit
    assert sum(s.cache_hits for s in summaries) == 1
