"""How reliable is a front, and what does it cost? Decision rules replayed on real scores.

1. Builds once (cached under ``NAS_WORK_DIR/bench/front_reliability`` per supernet and
   ``--docs``, by sub-network: resumable, and a larger ``--candidates`` scores only the
   new ones) a per-example score matrix: ``--candidates`` SmolLM2 sub-networks spread over the demo's
   search space (the largest, the smallest, the rest seeded random draws), each scored with
   our evaluator (bf16) on the first ``--docs`` search documents of hellaswag, arc_easy and
   piqa (``acc_norm``; the demo's held-out confirmation documents excluded).
2. Replays three decision rules ``--replicates`` times, each time on a fresh random order
   of the documents and of the candidates' arrival (as a sampler would propose them): a
   single rung at the top fidelity (``--top`` documents per task), the z-ladder as the
   search had it before racing (rungs top/2 and top, independent standard errors, z=1) and
   racing (``--chunk`` documents at a time, paired test at z=2 against the front). The
   decisions are the search's own code (``nas.search.promotion``, ``nas.search.racing``).
3. Optionally (``--study-trials N``) times real studies of N trials on SmolLM2 over the
   demo's space, up to ``--study-top`` documents per task (the demo's 100): the ladder
   re-scoring its low rung (as before nested rungs), the ladder with nested rungs, and
   racing: ``search_s`` and evaluations of each (``--studies-only``: these alone, without
   the matrix).

Per rule: ``examples_per_candidate`` (documents per task scored, mean over candidates),
``true_front_recall`` (share of the front computed on all ``--docs`` documents whose
members the rule scored to the top), ``false_front`` (members of the rule's front that are
not on the true front, mean), ``kendall_tau_search_vs_rest`` (rank agreement of the
candidates' accuracy on the documents the rule used with their accuracy on the rest).
Goal: racing spends <= 0.5 of the single rung's examples per candidate at recall >= 0.95.
``separability`` says how far that is possible at all: the margin of each dominated
candidate to its best cheaper dominator in paired standard errors at the top fidelity, how
many clear ``--z`` there, and what an oracle (stop every dominated candidate after one
chunk) would spend.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluators.evaluate import Evaluator  # noqa: E402
from evaluators.types import Fidelity, Metrics, TaskScore  # noqa: E402
from nas.cli.demo import DEMO_SPACE, DEMO_TASKS  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.params import count_params  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.pareto import non_dominated_mask  # noqa: E402
from nas.paths import work_dir  # noqa: E402
from nas.search.promotion import Estimate, aggregate_estimate, promotion_decision, score_estimate  # noqa: E402
from nas.search.racing import Contender, dominating_member  # noqa: E402
from nas.search.spec import parse_spec  # noqa: E402

METRIC = "acc_norm"
HOLDOUT = 100  # the demo's confirmation documents: never part of the matrix


def _spec(**over: Any) -> Any:
    data = {"name": "replay", "supernet": "unused", "tasks": [{"name": t, "metric": METRIC} for t in DEMO_TASKS],
            "objectives": ["accuracy", "non_embedding_params"], "budget": {"n_trials": 1}, "confirmation": None}
    data.update(over)
    return parse_spec(data, source="front_reliability spec")


# ------------------------------------------------------------------------------- the matrix
def _subnets(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    rng = random.Random(seed)
    out = {s.hash: s for s in (space.largest(), space.smallest())}
    while len(out) < n:
        s = space.sample(rng)
        out.setdefault(s.hash, s)
    return list(out.values())[:n]


def build_matrix(args: argparse.Namespace) -> dict[str, Any]:
    """Per-example acc_norm of every candidate on the first ``docs`` search documents per task."""
    loaded = load_supernet(args.supernet, dtype="bf16")
    space = SearchSpace.resolve(DEMO_SPACE, loaded.config, loaded.model.layer_rank, loaded.space)
    subnets = _subnets(space, args.candidates, args.seed)
    # one cache per supernet and document count, keyed by sub-network: a run with more
    # candidates (the same seed draws the same ones first) scores only the new ones
    key = hashlib.sha256(json.dumps([loaded.content_hash, args.docs]).encode()).hexdigest()[:12]
    path = work_dir() / "bench" / "front_reliability" / f"scores-{key}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"scores": {}}
    todo = [s for s in subnets if s.hash not in data["scores"]]
    if todo:
        evaluator = Evaluator.from_loaded(loaded, list(DEMO_TASKS), dtype="bf16", batch_size=16)
        fidelity = Fidelity(args.docs, seed=0, holdout=HOLDOUT)
        for i, subnet in enumerate(todo):
            t0 = time.perf_counter()
            metrics = evaluator.evaluate(subnet, fidelity)
            data["scores"][subnet.hash] = {s.task: list(s.example_scores) for s in metrics.scores if s.metric == METRIC}
            data.setdefault("doc_ids", {s.task: list(s.example_ids) for s in metrics.scores if s.metric == METRIC})
            data.setdefault("seconds", {})[subnet.hash] = round(time.perf_counter() - t0, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
            print(f"scored {len(subnets) - len(todo) + i + 1}/{len(subnets)}: {subnet.summary()} in "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        evaluator.close()
    data = {**data, "scores": {s.hash: data["scores"][s.hash] for s in subnets},
            "seconds": {s.hash: data.get("seconds", {}).get(s.hash, 0.0) for s in subnets}}
    data["subnets"] = [s.to_json() for s in subnets]
    data["params"] = [count_params(loaded.config, s).non_embedding_params for s in subnets]
    data["order"] = [s.hash for s in subnets]
    return data


# -------------------------------------------------------------------------------- replay
class Replay:
    """One replicate: a document order per task and an arrival order of the candidates."""

    def __init__(self, matrix: dict[str, Any], rng: np.random.Generator) -> None:
        self.tasks = list(DEMO_TASKS)
        self.n = len(matrix["order"])
        self.scores = {t: np.array([matrix["scores"][h][t] for h in matrix["order"]]) for t in self.tasks}  # (C, D)
        self.params = np.array(matrix["params"], dtype=float)
        docs = self.scores[self.tasks[0]].shape[1]
        self.perm = {t: rng.permutation(docs) for t in self.tasks}
        self.arrival = rng.permutation(self.n)
        self._examples: dict[tuple[int, int], dict[tuple[str, str], dict[int, float]]] = {}
        self._accuracy: dict[tuple[int, int | None, int | None], float] = {}

    def accuracy(self, c: int, docs: slice) -> float:
        key = (c, docs.start, docs.stop)
        if key not in self._accuracy:
            self._accuracy[key] = float(np.mean([self.scores[t][c, self.perm[t][docs]].mean() for t in self.tasks]))
        return self._accuracy[key]

    def examples(self, c: int, k: int) -> dict[tuple[str, str], dict[int, float]]:
        """Per-example scores of candidate ``c`` on the first ``k`` documents of each task's order."""
        if (c, k) not in self._examples:
            self._examples[(c, k)] = {
                (t, METRIC): dict(zip(self.perm[t][:k].tolist(), self.scores[t][c, self.perm[t][:k]].tolist()))
                for t in self.tasks
            }
        return self._examples[(c, k)]

    def estimates(self, c: int, k: int) -> list[Estimate]:
        parts = []
        for t in self.tasks:
            xs = self.scores[t][c, self.perm[t][:k]]
            parts.append(score_estimate(_task_score(t, xs)))
        return [aggregate_estimate(parts, [1.0] * len(parts)), Estimate(float(self.params[c]))]


def _task_score(task: str, xs: np.ndarray) -> TaskScore:
    return TaskScore(task, METRIC, float(xs.mean()), 0.0, len(xs), tuple(range(len(xs))), tuple(float(x) for x in xs))


def run_rule(rule: str, rep: Replay, *, top: int, chunk: int, z: float, spec: Any) -> dict[str, Any]:
    """Process the candidates in arrival order under ``rule``; what it scored and kept."""
    directions = ["maximize", "minimize"]
    kept: list[int] = []
    spent: list[int] = []

    def front() -> list[int]:
        if not kept:
            return []
        pts = np.array([[rep.accuracy(c, slice(0, top)), rep.params[c]] for c in kept])
        return [c for c, keep in zip(kept, non_dominated_mask(pts, directions)) if keep]

    for c in rep.arrival:
        if rule == "single":
            kept.append(int(c))
            spent.append(top)
            continue
        stops = [top // 2, top] if rule == "ladder" else list(range(chunk, top, chunk)) + [top]
        members = front()
        for k in stops:
            if k == top:
                kept.append(int(c))
                spent.append(top)
                break
            if len(members) < 2:
                continue
            if rule == "ladder":
                values = [[rep.accuracy(m, slice(0, top)), rep.params[m]] for m in members]
                promote, _ = promotion_decision(rep.estimates(c, k), values, directions, z=1.0)
            else:
                cands = [Contender(int(m), (rep.accuracy(m, slice(0, top)), rep.params[m]), rep.examples(m, top))
                         for m in members]
                me = Contender(int(c), (rep.accuracy(c, slice(0, k)), rep.params[c]), rep.examples(c, k))
                promote = dominating_member(cands, me, spec, z=z)[0] is None
            if not promote:
                spent.append(k)
                break
    truth = np.array([[rep.accuracy(c, slice(None)), rep.params[c]] for c in range(rep.n)])
    true_front = {c for c, keep in zip(range(rep.n), non_dominated_mask(truth, directions)) if keep}
    mine = set(front())
    searched = np.array([rep.accuracy(c, slice(0, top)) for c in kept])
    rest = np.array([rep.accuracy(c, slice(top, None)) for c in kept])
    tau = kendalltau(searched, rest).statistic if len(kept) > 2 else float("nan")
    return {"examples": float(np.mean(spent)), "recall": len(true_front & set(kept)) / len(true_front),
            "false_front": len(mine - true_front), "tau": float(tau)}


def separability(matrix: dict[str, Any], *, top: int, chunk: int, z: float) -> dict[str, Any]:
    """How far apart the candidates are: for each one off the front of all documents, its
    margin to the best cheaper member that beats it, in paired standard errors of the mean
    accuracy at ``top`` documents per task (true means; tasks independent). A rule can stop a
    dominated candidate early only if its margin exceeds ``z`` well before ``top``."""
    tasks = list(DEMO_TASKS)
    scores = {t: np.array([matrix["scores"][h][t] for h in matrix["order"]]) for t in tasks}
    acc = np.mean([scores[t].mean(axis=1) for t in tasks], axis=0)
    params = np.array(matrix["params"], dtype=float)
    on_front = non_dominated_mask(np.column_stack([acc, params]), ["maximize", "minimize"])
    margins = []
    for c in np.flatnonzero(~on_front):
        best = 0.0
        for m in np.flatnonzero((params <= params[c]) & (acc > acc[c])):
            var = sum(float(np.var(scores[t][m] - scores[t][c], ddof=1)) for t in tasks)
            best = max(best, float(acc[m] - acc[c]) / (np.sqrt(var / top) / len(tasks)))
        margins.append(best)
    n, front = len(acc), int(on_front.sum())
    return {
        "true_front_size": front, "dominated": n - front,
        "dominated_margin_z_median": round(float(np.median(margins)), 2) if margins else None,
        f"dominated_separable_at_z{z:g}": int(sum(m >= z for m in margins)),
        # stop every dominated candidate after one chunk, score every front member in full
        "oracle_examples_vs_single": round((front * top + (n - front) * chunk) / n / top, 3),
    }


def replay_rules(matrix: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    spec = _spec()
    out: dict[str, Any] = {}
    rng = np.random.default_rng(args.seed)
    reps = [Replay(matrix, rng) for _ in range(args.replicates)]
    for rule in ("single", "ladder", "racing"):
        runs = [run_rule(rule, rep, top=args.top, chunk=args.chunk, z=args.z, spec=spec) for rep in reps]
        out[rule] = {
            "examples_per_candidate": round(float(np.mean([r["examples"] for r in runs])), 1),
            "true_front_recall": round(float(np.mean([r["recall"] for r in runs])), 3),
            "false_front": round(float(np.mean([r["false_front"] for r in runs])), 2),
            "kendall_tau_search_vs_rest": round(float(np.nanmean([r["tau"] for r in runs])), 3),
        }
    out["racing"]["examples_vs_single"] = round(out["racing"]["examples_per_candidate"] / out["single"]["examples_per_candidate"], 3)
    return out


# ------------------------------------------------------------------------------ real studies
class _NoPrior:
    """A scorer that ignores ``prior``: promotion re-scores the low rung's documents (as before nested rungs)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        for name in ("tasks", "harness_version", "task_hashes", "settings", "n_docs"):
            setattr(self, name, getattr(inner, name))

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        return self.inner.evaluate(subnet, fidelity)


def time_studies(args: argparse.Namespace) -> dict[str, Any]:
    # deferred: the search loads optuna; the replay alone does not need it
    import optuna

    from evaluators.scorer import build_scorers
    from nas.search.study import open_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    loaded = load_supernet(args.supernet, dtype="bf16")
    top = args.study_top
    out: dict[str, Any] = {"trials": args.study_trials, "top": top}
    base = {"supernet": str(loaded.path), "space": DEMO_SPACE, "sampler": {"name": "nsga2", "population_size": 6},
            "budget": {"n_trials": args.study_trials}, "dtype": "bf16", "batch_size": 16,
            "constraints": [{"metric": "params", "max": 1.3e8}], "confirmation": {"examples": HOLDOUT}}
    modes = {
        "ladder_rescoring": {"fidelities": [top // 2, top], "promotion": {"mode": "ladder", "z": 1.0}},
        "ladder_nested": {"fidelities": [top // 2, top], "promotion": {"mode": "ladder", "z": 1.0}},
        "racing": {"fidelities": [top], "promotion": {"mode": "racing", "chunk": args.chunk, "z": args.z}},
    }
    scorers = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, over in modes.items():
            spec = _spec(**base, **over, name=f"timing-{name}", storage=f"sqlite:///{Path(tmp) / (name + '.db')}")
            scorers = scorers or build_scorers(spec, loaded)
            use = [_NoPrior(s) for s in scorers] if name == "ladder_rescoring" else scorers
            t0 = time.perf_counter()
            search = open_search(spec, scorers=use, loaded=loaded)
            summary = search.optimize()
            search.close()
            out[name] = {"search_s": round(time.perf_counter() - t0, 1), "evaluations": summary.evaluations,
                         "low_fidelity_only": summary.low_fidelity_only}
            print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", default=str(work_dir() / "smollm2"), help="the imported SmolLM2 supernet")
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--docs", type=int, default=600, help="search documents per task in the matrix")
    parser.add_argument("--top", type=int, default=200, help="the top fidelity of the replayed rules (documents per task)")
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--z", type=float, default=2.0, help="racing's paired-test bar in standard errors")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--study-trials", type=int, default=0, help="also time real studies of this many trials")
    parser.add_argument("--study-top", type=int, default=100, help="their top fidelity (the demo's: 100 documents per task)")
    parser.add_argument("--studies-only", action="store_true", help="only time the studies (no matrix, no replay)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.studies_only:
        if not args.study_trials:
            parser.error("--studies-only needs --study-trials N")
        print(json.dumps({"study_trials": args.study_trials, "study_top": args.study_top, "studies": time_studies(args)}))
        return
    t0 = time.perf_counter()
    matrix = build_matrix(args)
    built_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "candidates": len(matrix["order"]), "docs_per_task": args.docs, "tasks": list(DEMO_TASKS), "metric": METRIC,
        "top": args.top, "chunk": args.chunk, "z": args.z, "replicates": args.replicates,
        "matrix_scoring_s": round(sum(matrix.get("seconds", {}).values()), 1), "matrix_load_s": round(built_s, 1),
        "rules": replay_rules(matrix, args),
        "separability": separability(matrix, top=args.top, chunk=args.chunk, z=args.z),
    }
    result["replay_s"] = round(time.perf_counter() - t0, 1)
    racing = result["rules"]["racing"]
    result["goal_met"] = racing["examples_vs_single"] <= 0.5 and racing["true_front_recall"] >= 0.95
    if args.study_trials:
        result["studies"] = time_studies(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
