"""A real search, one trial at a time vs a generation per batch in prefix-reuse order.

Runs the full demo's study (SmolLM2 imported, the demo's space and tasks, NSGA-II, racing
``--chunk`` documents per task at a time up to ``--top``) twice from a fresh database and
an empty prefix cache: with ``sampler.batch: 1`` (each trial asked, scored and told before
the next is asked) and with ``sampler.batch`` = the population (a generation asked at once,
scored as a walk of its prefix trie: :mod:`nas.search.driver`). The sampler proposes the
same generation-0 sub-networks either way; later generations can differ a little, because
racing decisions depend on the front at the moment a candidate is scored. Prints one JSON
object: per arm ``seconds``, ``reuse_fraction`` (layer passes skipped / all, from the
evaluator's prefix cache), ``layer_passes``, ``evaluations`` and ``complete``; ``speedup``
(one at a time / batched, seconds of the search alone, after a one-trial warm-up that
tokenises every document and the heap grown to the prefix cache's budget, ``heap_warm_s``),
``same_trials`` (trials whose parameters agree) and the settings. ``--rounds N`` runs each
arm N times, alternating which goes first (batched first in even rounds): an arm's
``seconds`` is then its median, ``seconds_all`` lists every run with ``first`` marking the
runs that went first, and ``order_effect`` is the median over arms of (seconds when first) /
(seconds when second), 1.0 when the order does not matter. ``--tied``: the demo's
space with tied widths (depth and one width for every layer), where sub-networks share
long prefixes of kept layers; the demo's own space chooses heads and width per layer, so
few candidates share more than a layer or two.

    python bench/search_batch.py [--trials 20] [--population 10] [--threads 2] [--tied] [--prefix-cache-mb N] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.prefix import shared_cache  # noqa: E402
from nas.cli.demo import DEMO_SPACE, DEMO_TASKS  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.heap import warm_heap  # noqa: E402
from nas.model.precision import resolve_dtype  # noqa: E402
from nas.search.spec import parse_spec  # noqa: E402
from nas.search.study import open_search  # noqa: E402


def run_arm(args: argparse.Namespace, loaded: Any, dtype: str, batch: int, directory: Path, *,
            trials: int | None = None, name: str | None = None) -> dict[str, Any]:
    cache = shared_cache("cpu")
    cache.clear()
    cache.layer_passes = cache.layer_passes_skipped = cache.evicted = 0
    if args.prefix_cache_mb is not None:
        cache.max_bytes = args.prefix_cache_mb * 2**20
    spec = parse_spec({
        "name": name or f"batch-{batch}",
        "supernet": str(Path(args.supernet).resolve()),
        "space": {**DEMO_SPACE, "tied": args.tied},
        "tasks": [{"name": t, "metric": "acc_norm"} for t in DEMO_TASKS],
        "objectives": ["accuracy", "non_embedding_params"],
        "sampler": {"name": "nsga2", "population_size": args.population, "batch": batch},
        "budget": {"n_trials": trials or args.trials},
        "seed": args.seed,
        "fidelities": [args.top],
        "promotion": {"mode": "racing", "chunk": args.chunk, "z": 2.0, "min_top_trials": 2},
        "confirmation": {"examples": 100},
        "constraints": [{"metric": "params", "max": 1.3e8}],
        "dtype": dtype,
        "storage": f"sqlite:///{directory / f'{name or batch}.db'}",
    }, source="bench spec")
    search = open_search(spec, loaded=loaded)
    start = time.perf_counter()
    summary = search.optimize()
    seconds = time.perf_counter() - start
    trials = search.study.get_trials(deepcopy=False)
    search.close()
    return {
        "batch": batch,
        "seconds": round(seconds, 1),
        "complete": summary.complete,
        "evaluations": summary.evaluations,
        "reuse_fraction": round(cache.reuse_fraction, 4),
        "layer_passes": cache.layer_passes + cache.layer_passes_skipped,
        "layer_passes_skipped": cache.layer_passes_skipped,
        "evicted": cache.evicted,
        "cache_mb": round(cache.max_bytes / 2**20),
        "cache_used_mb": round(cache.nbytes / 2**20),  # held at the end
        "params": [dict(t.params) for t in sorted(trials, key=lambda t: t.number) if t.state.name == "COMPLETE"],
    }


def _summary(arm: list[dict[str, Any]]) -> dict[str, Any]:
    """An arm's first run, its seconds replaced by the median over its runs (all listed)."""
    return arm[0] | {"seconds": round(statistics.median(r["seconds"] for r in arm), 1),
                     "seconds_all": [{"round": r["round"], "first": r["first"], "seconds": r["seconds"]} for r in arm]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", default=str(Path(os.environ.get("NAS_WORK_DIR", "work")) / "smollm2"))
    parser.add_argument("--trials", type=int, default=20, help="the budget (default: two generations)")
    parser.add_argument("--population", type=int, default=10, help="NSGA-II population = the batch (the demo's 10)")
    parser.add_argument("--chunk", type=int, default=25, help="racing: documents per task at a time (the demo's 25)")
    parser.add_argument("--top", type=int, default=100, help="the top fidelity (the demo's 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tied", action="store_true", help="the demo's space with tied widths (depth-only sharing)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prefix-cache-mb", type=int, default=None, help="prefix cache budget (default: from free memory)")
    parser.add_argument("--no-heap-warm", action="store_true",
                        help="do not grow the heap to the prefix cache's budget before the arms (as before: the first arm pays)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each arm, alternating which goes first (default: %(default)s; 2 gives ABBA)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    if not (Path(args.supernet) / "supernet.json").is_file():
        sys.exit(f"no supernet in {args.supernet}; import one with: nas supernet import smollm2-135m --out {args.supernet}")
    dtype = resolve_dtype(args.dtype, "cpu")
    loaded = load_supernet(args.supernet, dtype=dtype)
    runs: dict[int, list[dict[str, Any]]] = {args.population: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up, not reported: one trial to the top fidelity tokenises every document (memoised for
        # the process), so the first timed arm does not pay for it
        warmup = run_arm(args, loaded, dtype, 1, Path(tmp), trials=1, name="warmup")
        # and the heap grown to the prefix cache's budget: on a VM that hands freed pages back to its
        # host, the first arm would otherwise pay for faulting its cache's pages in (nas.model.heap)
        cache_bytes = shared_cache("cpu").max_bytes
        heap_warm_s = 0.0 if args.no_heap_warm else warm_heap(cache_bytes)
        for r in range(args.rounds):
            pair = (args.population, 1) if r % 2 == 0 else (1, args.population)
            for batch in pair:
                arm = run_arm(args, loaded, dtype, batch, Path(tmp), name=f"batch-{batch}-round-{r}")
                arm |= {"round": r, "first": batch == pair[0]}
                runs[batch].append(arm)
                print(json.dumps({k: v for k, v in arm.items() if k != "params"}), file=sys.stderr, flush=True)
    batched, single = (_summary(runs[b]) for b in (args.population, 1))
    same = sum(a == b for a, b in zip(batched.pop("params"), single.pop("params")))
    ratios = [statistics.median(r["seconds"] for r in arm if r["first"]) / statistics.median(r["seconds"] for r in arm if not r["first"])
              for arm in runs.values() if {r["first"] for r in arm} == {True, False}]
    print(json.dumps({
        "warmup_s": warmup["seconds"],
        "heap_warm_s": round(heap_warm_s, 1), "heap_warm_mb": 0 if args.no_heap_warm else round(cache_bytes / 2**20),
        "speedup": round(single["seconds"] / batched["seconds"], 3),
        "reuse_fraction_batched": batched["reuse_fraction"],
        "reuse_fraction_one_at_a_time": single["reuse_fraction"],
        "same_trials": same,
        "order_effect": round(statistics.median(ratios), 3) if ratios else None,
        "batched": batched,
        "one_at_a_time": single,
        "rounds": args.rounds,
        "trials": args.trials, "population": args.population, "chunk": args.chunk, "top": args.top, "tied": args.tied, "dtype": dtype,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
