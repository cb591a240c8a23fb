"""Batches of trials: asked from the sampler at once, scored in prefix-reuse order, kept
alive by heartbeats while they wait, and queued again when a run stops in the middle."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest

import storage
from evaluators.prefix import prefix_path
from evaluators.types import Fidelity, Metrics
from nas.model.directory import LoadedSupernet
from nas.model.subnet import SubnetConfig
from nas.search.driver import TrialOutcome
from nas.search.optuna_storage import fail_stale
from nas.search.spec import parse_spec
from nas.search.status import study_status
from nas.search.study import ask_batch, open_search
from nas.search.trials import QUEUED_ATTR, UNSTARTED_ATTR

from _search import CountingScorer, heldout_scorer, make_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls


def _trials(url: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _paths(subnets: list[SubnetConfig]) -> list[tuple]:
    return [prefix_path(s) for s in subnets]


def test_batch_size_follows_the_sampler_unless_set(tiny: LoadedSupernet) -> None:
    def spec(**sampler: object):
        return make_spec(tiny.path, "sqlite://", sampler=sampler, budget={"n_trials": 100})

    assert ask_batch(spec(name="nsga2", population_size=12), 100) == 12  # one generation
    assert ask_batch(spec(name="nsga2"), 100) == 20  # the default population: a fifth of the budget
    assert ask_batch(spec(name="random"), 100) == ask_batch(spec(name="grid"), 100) == 8
    assert ask_batch(spec(name="tpe"), 100) == ask_batch(spec(name="gp"), 100) == 1
    assert ask_batch(spec(name="tpe", batch=4), 100) == 4
    with pytest.raises(Exception, match="batch"):
        parse_spec({**spec(name="tpe").to_dict(), "sampler": {"name": "tpe", "batch": 0}})


def test_a_batch_is_scored_in_prefix_reuse_order_with_the_same_trials(tiny: LoadedSupernet, tmp_path: Path) -> None:
    runs = {}
    for batch in (1, 6):
        url = f"sqlite:///{tmp_path / f'b{batch}.db'}"
        scorer = heldout_scorer(tiny)
        spec = make_spec(tiny.path, url, sampler={"name": "random", "batch": batch}, budget={"n_trials": 12}, seed=4)
        summary = open_search(spec, scorers=[scorer], loaded=tiny).optimize()
        assert summary.complete == 12 == summary.trials_run
        runs[batch] = (scorer.subnets, {t.number: (t.params, t.values) for t in _trials(url)})
    (one, trials_one), (six, trials_six) = runs[1], runs[6]
    assert trials_one == trials_six, "the sampler proposes the same trials; only the scoring order changes"
    # each batch of six is scored as a walk of its prefix trie; one at a time it is not
    first = _paths(six)[:6]
    assert first == sorted(first) and set(first) == set(_paths(one)[:6])
    assert _paths(one)[:6] != sorted(_paths(one)[:6]), "this seed must draw a batch out of trie order"


def test_a_run_stopped_mid_batch_queues_its_unstarted_trials(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, sampler={"name": "random", "batch": 6}, budget={"n_trials": 6}, seed=2)
    scorer = heldout_scorer(tiny)
    search = open_search(spec, scorers=[scorer], loaded=tiny)

    def stop_after_two(outcome: TrialOutcome) -> None:
        if outcome.complete == 2:
            search.request_stop()

    summary = search.optimize(on_trial=stop_after_two)
    assert summary.trials_run == 2 and summary.stopped == "stop requested"
    trials = _trials(sqlite_url)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 2 and "RUNNING" not in states
    unstarted = [t for t in trials if t.user_attrs.get(UNSTARTED_ATTR)]
    assert len(unstarted) == 4 and all(t.state.name == "FAIL" for t in unstarted)
    queued = {t.user_attrs["retry_of"]: t for t in trials if t.state.name == "WAITING"}
    assert sorted(queued) == sorted(t.number for t in unstarted)
    assert all(queued[t.number].system_attrs["fixed_params"] == t.params for t in unstarted)  # the same choices
    rows = {r.trial_number: r.state for r in storage.list_trials(search.db, "s")}
    assert all(rows[t.number] == "FAIL" for t in unstarted)
    assert storage.get_study(search.db, "s").status == "stopped"
    status = study_status("s", sqlite_url)
    assert (status.unstarted, status.failed, status.waiting) == (4, 0, 4)  # not failures: queued again

    again = heldout_scorer(tiny)
    summary = open_search(spec, scorers=[again], loaded=tiny).optimize()  # resume: the queued four, nothing new
    trials = _trials(sqlite_url)
    assert summary.complete == 6 and summary.trials_run == 4
    assert {t.user_attrs.get("retry_of") for t in trials if t.state.name == "COMPLETE"} - {None} == set(queued)
    assert not {h for h, _ in scorer.calls} & {h for h, _ in again.calls}, "nothing scored twice"
    assert storage.get_study(search.db, "s").status == "finished"


class SlowScorer(CountingScorer):
    """Takes ``delay`` seconds per evaluation and, like another worker would, fails the
    study's stale trials while it works."""

    def __init__(self, inner: object, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.study: optuna.Study | None = None

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        time.sleep(self.delay)
        fail_stale(self.study)
        return super().evaluate(subnet, fidelity, prior)


def test_waiting_trials_of_a_batch_keep_their_heartbeat(tiny: LoadedSupernet, sqlite_url: str) -> None:
    """The last of four trials waits ~4.5 s for its turn, beyond the 2 s grace period: without
    its own heartbeat it would be failed as stale and retried by the other worker."""
    spec = make_spec(tiny.path, sqlite_url, sampler={"name": "grid", "batch": 4}, budget={"n_trials": 4}, seed=1)
    slow = SlowScorer(heldout_scorer(tiny).inner, delay=1.5)
    search = open_search(spec, scorers=[slow], loaded=tiny)
    slow.study = search.study
    summary = search.optimize()
    trials = _trials(sqlite_url)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 and summary.complete == 4
    assert len(slow.calls) == 4


def test_a_twin_is_awaited_while_scored_not_while_queued(tiny: LoadedSupernet, sqlite_url: str) -> None:
    """Another worker's earlier trial of the same sub-network: waited for while it is being
    scored (its result is then a cache hit), not while it waits its turn in that worker's
    batch (which may be far off)."""
    spec = make_spec(tiny.path, sqlite_url, sampler={"name": "random", "batch": 2}, budget={"n_trials": 4})
    search = open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = search.study.ask()  # the other worker's trial, RUNNING, queued in its batch
        mine = search.study.ask()
    search.study._storage.record_heartbeat(other._trial_id)
    other.set_user_attr("config_hash", "h")
    other.set_user_attr(QUEUED_ATTR, True)

    def waits(batch: tuple[int, ...] = ()) -> bool:
        thread = threading.Thread(target=search._await_twin, args=(mine, "h", batch), kwargs={"poll_s": 0.05})
        thread.start()
        thread.join(1.0)
        waiting = thread.is_alive()
        search.request_stop()  # ends a wait
        thread.join()
        search._stop.clear()
        return waiting

    assert not waits()
    other.set_user_attr(QUEUED_ATTR, False)  # its turn: being scored
    assert waits()
    assert not waits(batch=(other.number, mine.number))  # a twin in this worker's own batch: no wait


def test_an_ask_never_falls_between_a_stale_trial_and_its_retry(tiny: LoadedSupernet, db_url: str) -> None:
    """Optuna fails a stale trial, then queues its retry. A worker asking in between used to
    get a new trial numbered before the retry, and the budget guard then pruned the retry
    (``bench/distributed_workers.py`` lost one killed trial per run). Held open here: the
    ask waits, then takes the retry."""
    spec = make_spec(tiny.path, db_url, sampler={"name": "random", "batch": 2}, budget={"n_trials": 2})
    search = open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    dead = search._ask()
    search._propose(dead)
    search.study._storage.record_heartbeat(dead._trial_id)  # its last heartbeat, then silence
    backend = search.study._storage._backend
    deadline = time.monotonic() + 30  # SQLite's clock counts whole seconds: wait until it calls the trial stale
    while not backend._get_stale_trial_ids(search.study._study_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend._get_stale_trial_ids(search.study._study_id) == [dead._trial_id]

    retry_callback = backend.heartbeat_stale_trial_callback
    in_gap, go = threading.Event(), threading.Event()

    def held_open(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        in_gap.set()  # the stale trial is FAIL, its retry not queued yet
        go.wait(30)
        retry_callback(study, trial)

    backend.heartbeat_stale_trial_callback = held_open
    failer = threading.Thread(target=fail_stale, args=(search.study,))
    failer.start()
    assert in_gap.wait(30)
    asked: list[optuna.Trial] = []
    asker = threading.Thread(target=lambda: asked.append(search._ask()))
    asker.start()
    asker.join(1.0)
    blocked = asker.is_alive()
    go.set()
    failer.join()
    asker.join()
    assert blocked, "an ask went through in the gap"
    trials = _trials(db_url)
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING"]  # no new trial: the ask took the retry
    assert asked[0].number == trials[1].number and trials[1].system_attrs["failed_trial"] == dead.number
    assert trials[1].params == trials[0].params
