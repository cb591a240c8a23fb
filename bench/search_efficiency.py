"""How close does each sampler get to the true Pareto front on a small budget?

An enumerable space of 576 sub-networks of a small byte-level supernet (briefly trained
with the sandwich rule on tiny-shakespeare), a cheap but real objective pair: held-out
loss on a fixed batch of wikitext-2 sequences (minimise) vs non-embedding parameters
(minimise). The true front comes from evaluating every sub-network once. Each sampler then
runs 5 seeds of the driver's trial logic in memory (``nas.search``'s sampler factory and
seeds, ``suggest_subnet``, the grid plan), answered from the exhaustive table
since the objective is deterministic; one run is repeated through the real driver
(``open_search`` on SQLite, our tables and cache) to check that it runs the same trials.
Budgets of 2.5%, 5% and 10% of the space are prefixes of one run per (sampler, seed): the
samplers' settings do not depend on the budget, so trial k of a long run is trial k of a
short one.

``hv_ratio[sampler][budget]`` = hypervolume of the front found (mean over seeds) / the true
front's, both on axes normalised to the space's range with the reference point at the
space's nadir + 10% of the range.

Prints one JSON object: ``hv_ratio``, ``hv_ratio_std``, ``best_sampler``,
``hv_ratio_best_at_10pct``, ``hv_ratio_random_at_10pct``, ``space_size``, ``true_front_size``,
``seconds_per_sampler``, ...
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluators.heldout import HeldOutLoss  # noqa: E402
from evaluators.types import Fidelity, Metrics  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.pareto import hypervolume, non_dominated_mask  # noqa: E402
from nas.search.params import suggest_subnet  # noqa: E402
from nas.search.spec import parse_spec  # noqa: E402
from nas.search.study import enqueue_plan, make_sampler, open_search  # noqa: E402

from _search_common import SPACE, build_supernet, heldout_text_path  # noqa: E402

SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random", "qmc", "grid")
BUDGETS = (0.025, 0.05, 0.10)


class TableScorer:
    """Answers the (deterministic) held-out loss from the exhaustive table; counts lookups."""

    def __init__(self, scorer: HeldOutLoss, table: dict[str, Metrics]) -> None:
        self.tasks = scorer.tasks
        self.harness_version = scorer.harness_version
        self.task_hashes = scorer.task_hashes
        self.settings = scorer.settings
        self.n_docs = scorer.n_docs
        self.table = table
        self.calls = 0

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        self.calls += 1
        return self.table[subnet.hash]


def _spec(name: str, seed: int, n_trials: int, loaded: Any, source: str, population: int, storage: str | None) -> Any:
    sampler: dict[str, Any] = {"name": name}
    if name in ("nsga2", "nsga3"):
        sampler["population_size"] = population
    return parse_spec({
        "name": f"{name}-s{seed}", "supernet": str(loaded.path), "space": SPACE,
        "tasks": [{"name": "heldout_loss", "n_examples": 32, "seq_len": 64, "source": source}],
        "objectives": ["heldout_loss", "non_embedding_params"], "sampler": sampler,
        "budget": {"n_trials": n_trials}, "seed": seed, "dtype": "fp32", "storage": storage, "batch_size": 32,
        "confirmation": None,  # the sampler comparison needs every one of the 32 sequences
    })


def replay(spec: Any, space: SearchSpace, value_of: dict[str, tuple[float, float]], n_trials: int) -> list[tuple[dict[str, Any], tuple[float, float]]]:
    """The driver's trial logic for an unconstrained single-fidelity study, in memory: the
    same sampler factory and seed, the same parametrisation (``suggest_subnet``), the same
    plan for grid; values from the exhaustive table."""
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(spec, spec.seed, n_trials))
    enqueue_plan(study, spec, space, n_trials)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        return value_of[suggest_subnet(space, trial).hash]

    study.optimize(objective, n_trials=n_trials)
    return [(t.params, tuple(t.values)) for t in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--population", type=int, default=10, help="NSGA-II/III population size (the driver default at this budget)")
    parser.add_argument("--driver-check", default="tpe", help="Sampler whose seed-0 run is repeated through the real driver")
    parser.add_argument("--work", type=Path, default=None, help="Directory for the supernet and the database")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)

    loaded, train_s = build_supernet(work / "supernet", steps=args.train_steps, log=lambda m: print(m, file=sys.stderr))
    space = SearchSpace.from_dict(SPACE, loaded.config, loaded.model.layer_rank)
    source = heldout_text_path()
    scorer = HeldOutLoss(loaded.model, n_examples=32, seq_len=64, source=source, batch_size=32)

    # --- the true front, by evaluating every sub-network once
    t0 = time.perf_counter()
    from evaluators.cost import analytic_costs

    subnets = list(space.enumerate())
    table: dict[str, Metrics] = {}
    costs_of: dict[str, float] = {}
    points = []
    for s in subnets:
        metrics = scorer.evaluate(s, Fidelity())
        table[s.hash] = metrics
        costs_of[s.hash] = analytic_costs(loaded.config, s)["non_embedding_params"]
        points.append((metrics.scores[0].value, costs_of[s.hash]))
    exhaustive_s = time.perf_counter() - t0
    pts = np.array(points)
    ideal, nadir = pts.min(axis=0), pts.max(axis=0)
    scale = nadir - ideal
    reference = np.ones(2) * 1.1  # nadir + 10% of the range, on normalised axes

    def hv(values: np.ndarray) -> float:
        return hypervolume((values - ideal) / scale, reference)

    true_mask = non_dominated_mask(pts)
    hv_true = hv(pts[true_mask])
    size = len(subnets)
    budgets = {b: max(2, round(b * size)) for b in BUDGETS}
    n_max = max(budgets.values())
    print(f"space {size} sub-networks, true front {int(true_mask.sum())}, exhaustive {exhaustive_s:.1f} s, "
          f"budgets {budgets}", file=sys.stderr)

    samplers = [s for s in args.samplers.split(",") if s]
    ratios: dict[str, dict[str, list[float]]] = {s: {f"{b:.3g}": [] for b in BUDGETS} for s in samplers}
    seconds: dict[str, float] = {}
    value_of = {h: (m.scores[0].value, costs_of[h]) for h, m in table.items()}
    runs: dict[tuple[str, int], list[tuple[dict[str, Any], tuple[float, float]]]] = {}
    for name in samplers:
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            spec = _spec(name, seed, n_max, loaded, source, args.population, storage=None)
            trials = replay(spec, space, value_of, n_max)
            runs[(name, seed)] = trials
            values = np.array([v for _, v in trials])
            for b, k in budgets.items():
                found = values[:k]
                ratios[name][f"{b:.3g}"].append(hv(found[non_dominated_mask(found)]) / hv_true)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {({b: round(statistics.mean(v), 4) for b, v in ratios[name].items()})} in {seconds[name]} s",
              file=sys.stderr)

    # The in-memory replay is the driver's trial logic minus storage: check that the real
    # driver (SQLite, our tables, cache) runs exactly the same trials for one sampler.
    check = args.driver_check if args.driver_check in samplers else samplers[0]
    t0 = time.perf_counter()
    spec = _spec(check, 0, n_max, loaded, source, args.population, storage=f"sqlite:///{work / 'bench.db'}")
    fake = TableScorer(scorer, table)
    search = open_search(spec, scorers=[fake], loaded=loaded)
    search.optimize()
    driven = [(t.params, tuple(t.values)) for t in sorted(search.study.get_trials(deepcopy=False), key=lambda t: t.number)
              if t.state.name == "COMPLETE"]
    search.close()
    driver_matches = driven == [(p, tuple(v)) for p, v in runs[(check, 0)]]
    driver_s = time.perf_counter() - t0

    mean = {s: {b: round(statistics.mean(v), 4) for b, v in by_b.items()} for s, by_b in ratios.items()}
    std = {s: {b: round(statistics.pstdev(v), 4) for b, v in by_b.items()} for s, by_b in ratios.items()}
    top = f"{BUDGETS[-1]:.3g}"
    best = max(mean, key=lambda s: mean[s][top])
    result = {
        "hv_ratio": mean,
        "hv_ratio_std": std,
        "best_sampler": best,
        "hv_ratio_best_at_10pct": mean[best][top],
        "hv_ratio_random_at_10pct": mean.get("random", {}).get(top),
        "space_size": size,
        "true_front_size": int(true_mask.sum()),
        "budgets_trials": {f"{b:.3g}": k for b, k in budgets.items()},
        "seeds": args.seeds,
        "nsga_population_size": args.population,
        "objectives": ["heldout_loss/loss (wikitext-2, 32 x 64 bytes)", "non_embedding_params"],
        "driver_check": {"sampler": check, "seed": 0, "same_trials_as_replay": driver_matches,
                         "seconds": round(driver_s, 1), "scorer_calls": fake.calls},
        "train_s": round(train_s, 1),
        "exhaustive_s": round(exhaustive_s, 1),
        "seconds_per_sampler": seconds,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
