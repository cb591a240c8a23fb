"""The search space works for every sampler we offer with several workers (issue 16, item 11).

Per-layer parameters used to be asked only for the layers a sub-network keeps (a
conditional space). With two workers, NSGA-II computed its search space while a shallow
trial was still running and, by the time it sampled, that trial had finished and been
chosen as a parent: ``KeyError: 'layer_2.d_ff'`` from its crossover, a FAIL trial and a
dead worker. Now every trial asks every parameter (depth decides which are used).
"""

from __future__ import annotations

import random
import warnings

import optuna
import pytest

from nas.model.space import SearchSpace
from nas.search.params import param_distributions, suggest_subnet
from nas.search.spec import SAMPLERS
from nas.search.study import make_sampler

from _search import TINY, TINY_SPACE, make_spec

SPACE = SearchSpace.from_dict(TINY_SPACE, TINY)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")


def _study(sampler: optuna.samplers.BaseSampler, storage: optuna.storages.BaseStorage, create: bool) -> optuna.Study:
    if create:
        return optuna.create_study(storage=storage, study_name="s", directions=["minimize", "minimize"], sampler=sampler)
    return optuna.load_study(storage=storage, study_name="s", sampler=sampler)


def _values(subnet) -> list[float]:  # noqa: ANN001
    return [3.0 - 0.5 * subnet.n_layer + 0.001 * sum(subnet.d_ff), float(sum(subnet.d_ff) + sum(subnet.n_head))]


def test_nsga2_parent_that_finished_while_another_worker_sampled() -> None:
    """The exact interleaving of the crash: worker B's trial gets its search space while a
    shallow trial of worker A runs; A's trial completes and becomes a parent; B samples."""
    storage = optuna.storages.InMemoryStorage()
    a = _study(optuna.samplers.NSGAIISampler(population_size=2, seed=0), storage, create=True)
    b_sampler = optuna.samplers.NSGAIISampler(population_size=2, seed=1)
    b = _study(b_sampler, storage, create=False)
    for _ in range(2):  # generation 0: two deep sub-networks
        a.enqueue_trial({"n_layer": 3})
        t = a.ask()
        a.tell(t, _values(suggest_subnet(SPACE, t)))
    a.enqueue_trial({"n_layer": 2})  # generation 1: a shallow one (drops layer 2) and another
    shallow = a.ask()
    shallow_subnet = suggest_subnet(SPACE, shallow)
    other = a.ask()
    other_subnet = suggest_subnet(SPACE, other)
    trial = b.ask()  # B's search space is computed now, while both still run
    frozen = b._storage.get_trial(trial._trial_id)
    search_space = b_sampler.infer_relative_search_space(b, frozen)
    a.tell(shallow, [0.0, 0.0])  # dominates everything: surely a parent
    a.tell(other, _values(other_subnet))
    assert shallow_subnet.n_layer == 2
    params = b_sampler.sample_relative(b, frozen, search_space)  # KeyError: 'layer_2.d_ff' before the fix
    assert set(params) <= set(param_distributions(SPACE))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_with_two_interleaved_workers(sampler: str) -> None:
    """Two workers (two sampler instances on one storage) ask and tell out of order: no
    sampler error, and every trial carries the whole space's parameters."""
    spec = make_spec("x", "sqlite:///unused.db", sampler={"name": sampler, "population_size": 4}
                     if sampler.startswith("nsga") else {"name": sampler, "n_startup_trials": 3})
    n = 6 if sampler == "gp" else 24  # a GP fit per trial costs seconds: 3 startup trials, then 3 fitted
    storage = optuna.storages.InMemoryStorage()
    workers = [_study(make_sampler(spec, 1, n), storage, create=True), _study(make_sampler(spec, 2, n), storage, create=False)]
    rng = random.Random(0)
    running: list[tuple[optuna.Study, optuna.Trial, object]] = []
    for i in range(n):
        study = workers[i % 2]
        trial = study.ask()
        running.append((study, trial, suggest_subnet(SPACE, trial)))
        while len(running) > 2 or (running and rng.random() < 0.5):
            owner, done, subnet = running.pop(rng.randrange(len(running)))
            owner.tell(done, _values(subnet))
    for owner, done, subnet in running:
        owner.tell(done, _values(subnet))
    trials = workers[0].get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * n
    names = set(param_distributions(SPACE))
    assert all(set(t.params) == names for t in trials), [sorted(t.params) for t in trials if set(t.params) != names][:2]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "qmc"])
def test_same_seed_gives_the_same_trials(sampler: str) -> None:
    spec = make_spec("x", "sqlite:///unused.db", sampler=sampler)

    def run() -> list[str]:
        study = _study(make_sampler(spec, 7, 12), optuna.storages.InMemoryStorage(), create=True)
        out = []
        for _ in range(12):
            trial = study.ask()
            subnet = suggest_subnet(SPACE, trial)
            study.tell(trial, _values(subnet))
            out.append(subnet.hash)
        return out

    first = run()
    assert first == run() and len(set(first)) > 1
