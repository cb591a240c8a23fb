"""Healed fronts: the same sub-networks of SmolLM2-135M scored before and after `nas heal`.

1. heal the imported supernet (``--supernet``, default ``work/smollm2``) over the demo's
   search space (:data:`nas.cli.demo.DEMO_SPACE`) for ``--time`` (default 30 min of steps on
   this 2-core CPU) or ``--tokens``, through :func:`nas.training.heal.plan_heal` /
   :func:`~nas.training.heal.run_heal` with the CPU defaults of ``nas heal`` (4 x 256 tokens
   a step, lr 1e-4, largest + smallest + 1 random arm distilling from the frozen full
   model, Gutenberg text, or ``--data``/``--text-field``: other text, e.g. boolq's Wikipedia
   passages, ``--data benchmarks/boolq/validation.jsonl --text-field passage``: a one-off check found no
   10-word overlap with the wikitext-2 test pages the held-out loss reads); 6 checkpoints are kept for the curve;
2. pick ``--subnets`` (12) homogeneous members of the demo space whose parameter counts
   are spread evenly from its smallest to its largest sub-network;
3. score each on both supernets (``--dtype``, auto by default; fp32 log-likelihoods, the study scorer) on the same
   ``--docs`` (300) seeded documents per task of hellaswag, arc_easy and piqa (``acc_norm``,
   averaged over the tasks as the demo does) and on held-out text (``--heldout`` wikitext-2
   test windows of 256 tokens, never trained on);
4. report per sub-network ``acc_unhealed``, ``acc_healed``, ``paired_diff`` (healed minus
   unhealed over the same documents, task means averaged, ± 1.96 se) and the losses;
   overall the heal's ``tokens`` and ``heal_s`` and the hypervolume of each front (mean
   acc_norm up, non-embedding parameters down) against one reference point, and
   ``smaller_half_pooled_gain``: the smaller half's mean paired gain, its error over documents
   (is there a gain at all where each sub-network's own interval is too wide to say), and
   ``arm_draw_coverage``: for each ``--arm-draw`` (how the heal draws its random arm:
   ``uniform``, the default, or ``spread``), how many of 2,000 draws fall nearest each of the
   sub-networks (which of them a random arm trains near);
5. ``--curve``: the held-out loss of the smallest, middle and largest sub-network and the
   accuracy of the smallest at every kept checkpoint of the same heal (gain vs tokens).

Everything is cached under ``NAS_WORK_DIR/bench/healed_front`` (the healed supernet, an
interrupted heal's checkpoints, every score), so a rerun skips what is done. Prints one
JSON object (progress on stderr). Reproduce:

    .venv/bin/python bench/healed_front.py --threads 2 > healed_front.json   # ~30 min heal + ~25 min scoring
    .venv/bin/python bench/healed_front.py --quick                          # smoke check, about a minute
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.evaluate import Evaluator  # noqa: E402
from evaluators.heldout import HeldOutLoss  # noqa: E402
from evaluators.types import Fidelity  # noqa: E402
from nas.cli.demo import DEMO_SPACE, DEMO_TASKS  # noqa: E402
from nas.model.directory import LoadedSupernet, load_supernet  # noqa: E402
from nas.model.params import count_params  # noqa: E402
from nas.model.precision import resolve_dtype, torch_dtype  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.pareto import hypervolume  # noqa: E402
from nas.paths import work_dir  # noqa: E402
from nas.stats import paired_weighted_difference  # noqa: E402
from nas.training import ARM_DRAWS, ArmSampler, list_checkpoints  # noqa: E402
from nas.training.checkpoints import load_checkpoint  # noqa: E402
from nas.training.heal import HEAL_FILE, HealBudget, heal_settings, plan_heal, run_heal  # noqa: E402

log = logging.getLogger("healed_front")
METRIC = "acc_norm"
Z = 1.96


def draw_coverage(space: SearchSpace, params: Any, picks: list[SubnetConfig], draws: int = 2000,
                  seed: int = 0) -> dict[str, list[int]]:
    """For each ``sandwich.arm_draw``: how many of ``draws`` random arms of the heal's sampler
    fall nearest (in non-embedding parameters) each of ``picks`` (ascending): which of the
    scored sub-networks a heal's random arm trains near, before any step is taken."""
    sizes = [params(s) for s in picks]
    edges = [(a + b) / 2 for a, b in zip(sizes, sizes[1:])]
    out = {}
    for how in ARM_DRAWS:
        sampler = ArmSampler(space, n_random=1, rng=random.Random(seed), arm_draw=how)
        counts = [0] * len(picks)
        for step in range(draws):
            for arm in sampler.arms(step):
                if arm.name.startswith("random"):
                    counts[bisect.bisect(edges, params(arm.subnet))] += 1
        out[how] = counts
    return out


def spread(space: SearchSpace, params: Any, k: int) -> list[SubnetConfig]:
    """``k`` distinct homogeneous members of ``space`` (one choice per dim for every layer)
    whose parameter counts are nearest ``k`` evenly spaced targets from the smallest to the largest."""
    choices = {"n_layer_choices": list(space.n_layer_choices), "n_head_choices": list(space.layers[0].n_head),
               "d_ff_choices": list(space.layers[0].d_ff), "tied": True}
    tied = SearchSpace.from_dict(choices, space.config, space.layer_rank)
    members = sorted(tied.enumerate(), key=params)
    lo, hi = params(members[0]), params(members[-1])
    picks: list[SubnetConfig] = []
    for i in range(min(k, len(members))):
        target = lo + (hi - lo) * i / max(1, k - 1)
        free = [m for m in members if m not in picks]
        picks.append(min(free, key=lambda s: (abs(params(s) - target), s.to_json())))
    return sorted(picks, key=params)


def _save(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class Scores:
    """Per-example scores of sub-networks of one supernet (cached in a JSON file)."""

    def __init__(self, loaded: LoadedSupernet, args: argparse.Namespace, root: Path, docs: int) -> None:
        self.loaded = loaded
        self.args = args
        self.docs = docs
        key = f"{loaded.content_hash}-{args.dtype}-d{docs}-h{args.heldout}-{'+'.join(args.tasks)}"
        self.path = root / "scores" / f"{key}.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self._evaluator: Evaluator | None = None
        self._heldout: HeldOutLoss | None = None

    def get(self, subnet: SubnetConfig) -> dict[str, Any]:
        if subnet.hash not in self.data:
            t0 = time.perf_counter()
            if self._evaluator is None:
                self._evaluator = Evaluator.from_loaded(self.loaded, self.args.tasks, dtype=self.args.dtype, batch_size=16)
                self._heldout = HeldOutLoss(self.loaded.model, n_examples=self.args.heldout, seq_len=256, source="wikitext",
                                            tokenizer=self.loaded.load_tokenizer(), batch_size=8)
            assert self._heldout is not None
            metrics = self._evaluator.evaluate(subnet, Fidelity(self.docs, seed=0))
            loss = self._heldout.evaluate(subnet, Fidelity(None)).scores[0]
            self.data[subnet.hash] = {
                "tasks": {s.task: dict(zip(map(str, s.example_ids), s.example_scores)) for s in metrics.scores
                          if s.metric == METRIC},
                "heldout": list(loss.example_scores),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            _save(self.path, self.data)
            log.info("scored %s on %s in %.0f s", subnet.summary(), self.loaded.content_hash, time.perf_counter() - t0)
        return self.data[subnet.hash]

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()


def accuracy(entry: dict[str, Any], docs: dict[str, Any] | None = None) -> float:
    """Mean over the tasks of the mean acc_norm (the demo's aggregate), on the documents
    ``docs`` (task -> ids; default all the entry has)."""
    tasks = entry["tasks"]
    means = []
    for task, scores in tasks.items():
        kept = [v for k, v in scores.items() if docs is None or k in docs[task]]
        means.append(sum(kept) / len(kept))
    return sum(means) / len(means)


def shared_docs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, set[str]]:
    """Per task, the documents both entries scored (the paired comparison's documents)."""
    return {t: set(a["tasks"][t]) & set(b["tasks"][t]) for t in a["tasks"]}


def pooled_tasks(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task and document, the mean score over ``entries`` (several sub-networks scored on
    the same documents): paired against another such mean it gives the mean gain over the
    sub-networks, with an error over documents that counts each document once."""
    out: dict[str, dict[str, float]] = {}
    for task in entries[0]["tasks"]:
        shared = set.intersection(*(set(e["tasks"][task]) for e in entries))
        out[task] = {d: sum(e["tasks"][task][d] for e in entries) / len(entries)
                     for d in entries[0]["tasks"][task] if d in shared}
    return out


def ci95(diff: tuple[float, float]) -> list[float]:
    """The 95 % interval ``mean ± 1.96 stderr`` of a ``(mean, stderr)``, rounded as the JSON prints it."""
    return [round(diff[0] - Z * diff[1], 4), round(diff[0] + Z * diff[1], 4)]


def gain(diff: tuple[float, float]) -> dict[str, Any]:
    """A paired difference as the JSON prints it: mean, stderr and 95 % interval."""
    return {"mean": round(diff[0], 4), "stderr": round(diff[1], 4), "ci95": ci95(diff)}


def heldout_loss(entry: dict[str, Any]) -> float:
    return sum(entry["heldout"]) / len(entry["heldout"])


def run_heal_cached(args: argparse.Namespace, parent: LoadedSupernet, space: SearchSpace, root: Path) -> dict[str, Any]:
    """The healed supernet (healed now, resumed, or found from an earlier run) and its record."""
    budget = HealBudget(tokens=args.tokens) if args.tokens else HealBudget.parse(args.time, what="--time")
    settings = heal_settings(args.device, checkpoints=6, keep_checkpoints=6, evals=4, eval_tokens=4096, lr=args.lr,
                             corpus=args.data, text_field=args.text_field, arm_draw=args.arm_draw,
                             **({"max_chars": 400_000} if args.quick else {}))
    label = f"{parent.content_hash}-{budget.tokens or int(budget.seconds or 0)}{'tok' if budget.tokens else 's'}"
    if args.lr is not None:  # the default's runs keep their old folder
        label += f"-lr{args.lr:g}"
    if args.data or args.text_field:  # other text than Gutenberg's: its own folder
        named = json.dumps([settings.corpus, settings.text_field])
        label += f"-data{hashlib.sha256(named.encode()).hexdigest()[:8]}"
    if settings.arm_draw != "uniform":
        label += f"-{settings.arm_draw}"
    out = root / "healed" / label
    if (out / "supernet.json").is_file() and "heal" in load_supernet(out, verify=False).provenance:
        log.info("healed supernet found at %s", out)
        return {"out": out, "resumed": False, "cached": True}
    resume = bool(list_checkpoints(out)) and (out / "train" / HEAL_FILE).is_file()
    t0 = time.perf_counter()
    plan = plan_heal(parent.path, out, budget=None if resume else budget, space=space, settings=settings,
                     resume=resume, fresh=not resume, loaded=parent)
    log.info("heal: %d steps of %d tokens (%s), measured %.2f s a step", plan.steps, plan.config.tokens_per_step,
             budget.describe(), (plan.record.get("timing") or {}).get("step_s", float("nan")))

    def on_step(r: Any) -> None:
        if r.step % 25 == 0 or r.step == r.total_steps:
            arms = " ".join(f"{k} {v.loss:.3f}" for k, v in r.arms.items())
            log.info("step %d/%d, %d tokens, %s, %.0f tok/s, %.0f s left", r.step, r.total_steps, r.tokens, arms,
                     r.tokens_per_s, r.eta_s)

    def on_eval(r: Any) -> None:
        log.info("step %d held-out loss %s", r.step, r.val_loss)

    run_heal(plan, fresh=not resume, on_step=on_step, on_eval=on_eval)
    return {"out": out, "resumed": resume, "cached": False, "heal_wall_s": round(time.perf_counter() - t0, 1)}


def curve(args: argparse.Namespace, parent: LoadedSupernet, healed_dir: Path, subnets: list[SubnetConfig],
          unhealed: Scores, root: Path) -> list[dict[str, Any]]:
    """Held-out loss of the smallest, middle and largest and accuracy of the smallest at each
    kept checkpoint of the heal (cached per checkpoint)."""
    docs = args.docs_healed or args.docs
    path = root / "curve" / f"{healed_dir.name}-{args.dtype}-d{docs}-h{args.heldout}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    picks = {"smallest": subnets[0], "middle": subnets[len(subnets) // 2], "largest": subnets[-1]}
    points = []
    for ckpt in list_checkpoints(healed_dir):
        if ckpt.name not in cache:
            state = load_checkpoint(ckpt)
            model = load_supernet(parent.path, dtype="fp32").model
            model.load_state_dict(state["model"])
            view = LoadedSupernet(model=model.to(torch_dtype(args.dtype)), space=parent.space, path=parent.path,
                                  content_hash=f"{parent.content_hash}@{ckpt.stem}", provenance={})
            scorer = Evaluator.from_loaded(view, args.tasks, dtype=args.dtype, batch_size=16)
            held = HeldOutLoss(view.model, n_examples=args.heldout, seq_len=256, source="wikitext",
                               tokenizer=parent.load_tokenizer(), batch_size=8)
            entry: dict[str, Any] = {"tokens": int(state["tokens"]), "step": int(state["step"])}
            for name, sub in picks.items():
                losses = held.evaluate(sub, Fidelity(None)).scores[0].example_scores
                entry[f"loss_{name}"] = sum(losses) / len(losses)
            m = scorer.evaluate(picks["smallest"], Fidelity(docs, seed=0))
            entry["smallest_tasks"] = {s.task: dict(zip(map(str, s.example_ids), s.example_scores)) for s in m.scores
                                       if s.metric == METRIC}
            scorer.close()
            cache[ckpt.name] = entry
            _save(path, cache)
            log.info("curve: %s scored", ckpt.name)
        e = cache[ckpt.name]
        before = unhealed.get(picks["smallest"])
        diff = paired_weighted_difference(e["smallest_tasks"], before["tasks"], {t: 1.0 for t in args.tasks})
        points.append({
            "tokens": e["tokens"], "step": e["step"],
            **{f"loss_gain_{n}": round(heldout_loss(unhealed.get(s)) - e[f"loss_{n}"], 4) for n, s in picks.items()},
            "acc_gain_smallest": None if diff is None else round(diff[0], 4),
            "acc_gain_smallest_ci": None if diff is None else ci95(diff),
        })
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--supernet", default=str(work_dir() / "smollm2"))
    p.add_argument("--time", default="30m", help="heal budget in time of steps (90s, 30m, 1h)")
    p.add_argument("--tokens", type=int, default=None, help="heal budget in tokens (instead of --time)")
    p.add_argument("--docs", type=int, default=300, help="seeded documents per task")
    p.add_argument("--docs-healed", type=int, default=None,
                   help="score the healed supernet on the first N of them only (default: all; paired on those)")
    p.add_argument("--tasks", default=",".join(DEMO_TASKS))
    p.add_argument("--subnets", type=int, default=12)
    p.add_argument("--heldout", type=int, default=64, help="wikitext-2 test windows of 256 tokens")
    p.add_argument("--device", default="auto")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the heal (default: nas heal's, 1e-4)")
    p.add_argument("--data", action="append", default=None,
                   help="text to heal on (files, folders, .jsonl; repeatable; default Gutenberg under NAS_DATA_DIR)")
    p.add_argument("--arm-draw", default=None, choices=ARM_DRAWS,
                   help="how the heal draws its random arms (default: nas heal's, uniform)")
    p.add_argument("--text-field", default=None, help="field holding the text in .jsonl --data files (default: text)")
    p.add_argument("--curve", action="store_true", help="also score the heal's checkpoints (gain vs tokens)")
    p.add_argument("--only-unhealed", action="store_true", help="score the unhealed supernet (cached) and stop")
    p.add_argument("--quick", action="store_true", help="smoke check: 2 heal steps, 3 sub-networks, 10 documents")
    p.add_argument("--work", default=str(work_dir() / "bench" / "healed_front"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                   help="scoring dtype (default: %(default)s: bf16 where the CPU computes it natively, else fp32)")
    args = p.parse_args()
    args.dtype = resolve_dtype(args.dtype, "cpu")  # a name in the score caches' keys: scores of one dtype only
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.quick:
        args.tokens, args.docs, args.subnets, args.heldout = 2 * 1024, 10, 3, 8
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    source = Path(args.supernet)
    if not (source / "config.json").is_file():
        raise SystemExit(f"{source} is not a supernet directory; run `nas supernet import smollm2-135m --out {source}` first")
    root = Path(args.work)
    t_start = time.perf_counter()
    parent = load_supernet(source, dtype="fp32")
    space = SearchSpace.resolve(DEMO_SPACE, parent.config, parent.model.layer_rank, parent.space)
    ne_params = {}

    def params(s: SubnetConfig) -> int:
        if s not in ne_params:
            ne_params[s] = count_params(parent.config, s).non_embedding_params
        return ne_params[s]

    subnets = spread(space, params, args.subnets)

    # the unhealed scores first (the heal then runs alone), then the heal, then the healed scores
    t0 = time.perf_counter()
    unhealed_loaded = load_supernet(source, dtype=args.dtype)
    unhealed = Scores(unhealed_loaded, args, root, args.docs)
    for s in subnets:
        unhealed.get(s)
    unhealed.close()
    score_unhealed_s = time.perf_counter() - t0
    if args.only_unhealed:
        log.info("unhealed scores of %d sub-networks cached in %s", len(subnets), unhealed.path)
        return

    healed_info = run_heal_cached(args, parent, space, root)
    healed_loaded = load_supernet(healed_info["out"], dtype=args.dtype)
    record = healed_loaded.provenance["heal"]
    t0 = time.perf_counter()
    healed = Scores(healed_loaded, args, root, args.docs_healed or args.docs)
    for s in subnets:
        healed.get(s)
    healed.close()
    score_healed_s = time.perf_counter() - t0

    rows = []
    weights = {t: 1.0 for t in args.tasks}
    for s in subnets:
        a, b = unhealed.get(s), healed.get(s)
        docs = shared_docs(a, b)
        diff = paired_weighted_difference(b["tasks"], a["tasks"], weights)
        loss_diff = paired_weighted_difference({"h": dict(enumerate(a["heldout"]))}, {"h": dict(enumerate(b["heldout"]))}, {"h": 1.0})
        assert diff is not None and loss_diff is not None
        rows.append({
            "subnet": s.summary(), "subnet_hash": s.hash, "non_embedding_params": params(s),
            "params": count_params(parent.config, s).params,
            "acc_unhealed": round(accuracy(a, docs), 4), "acc_healed": round(accuracy(b, docs), 4),
            "paired_diff": gain(diff),
            "per_task": {t: {k: round(sum(e["tasks"][t][d] for d in docs[t]) / len(docs[t]), 4)
                             for k, e in (("unhealed", a), ("healed", b))} for t in args.tasks},
            "loss_unhealed": round(heldout_loss(a), 4), "loss_healed": round(heldout_loss(b), 4),
            "loss_gain": {"mean": round(loss_diff[0], 4), "ci95": ci95(loss_diff)},
        })
    # one reference point for both fronts: below the worst accuracy, above the most parameters
    acc_all = [r[k] for r in rows for k in ("acc_unhealed", "acc_healed")]
    reference = (min(acc_all) - 0.01, 1.05 * max(r["non_embedding_params"] for r in rows) / 1e6)
    directions = ("maximize", "minimize")
    hv = {k: hypervolume([(r[f"acc_{k}"], r["non_embedding_params"] / 1e6) for r in rows], reference, directions)
          for k in ("unhealed", "healed")}
    half = rows[: len(rows) // 2]
    largest = rows[-1]
    # the smaller half's mean gain, the document the unit of its error: is there a gain at all
    # where each sub-network's own interval is too wide to say
    smaller = subnets[: len(subnets) // 2]
    pooled = paired_weighted_difference(pooled_tasks([healed.get(s) for s in smaller]),
                                        pooled_tasks([unhealed.get(s) for s in smaller]), weights) if smaller else None
    out: dict[str, Any] = {
        "supernet": str(source), "parent_hash": parent.content_hash, "healed_hash": healed_loaded.content_hash,
        "healed_path": str(healed_info["out"]), "space": DEMO_SPACE, "tasks": args.tasks, "metric": METRIC,
        "docs_per_task": min(args.docs, args.docs_healed or args.docs), "heldout_windows": args.heldout, "heldout_source": "wikitext-2 test, 256 tokens",
        "subnets": rows,
        "tokens": record["tokens"], "steps": record["steps"], "heal_s": record.get("wall_time_s"),
        "heal_budget": record["budget"], "heal_timing": record.get("timing"),
        "heal_settings": record["settings"], "heal_data": record.get("data"), "heal_val_loss": record.get("val_loss"),
        "heal_cached": healed_info["cached"], "heal_resumed": healed_info["resumed"],
        "heal_wall_s": healed_info.get("heal_wall_s"),  # with the timing steps, evaluations and checkpoints
        "front_hv_unhealed": round(hv["unhealed"], 4), "front_hv_healed": round(hv["healed"], 4),
        "hv_units": "mean acc_norm x million non-embedding parameters",
        "hv_reference": {"acc": round(reference[0], 4), "non_embedding_params_m": round(reference[1], 3)},
        "smaller_half_pooled_gain": None if pooled is None else gain(pooled),
        # of 2,000 random arms per sandwich.arm_draw, how many fall nearest each sub-network above (ascending)
        "arm_draw_coverage": draw_coverage(space, params, subnets),
        "goals": {
            "smaller_half_gain_ci_excludes_0": all(r["paired_diff"]["ci95"][0] > 0 for r in half),
            "smaller_half_gain_ci_excludes_0_count": f"{sum(r['paired_diff']['ci95'][0] > 0 for r in half)}/{len(half)}",
            "full_model_drop_within_interval": largest["paired_diff"]["mean"] >= -Z * largest["paired_diff"]["stderr"],
            "healed_hv_higher": hv["healed"] > hv["unhealed"],
        },
        "wall_s": {"score_unhealed": round(score_unhealed_s, 1), "score_healed": round(score_healed_s, 1),
                   "total": round(time.perf_counter() - t_start, 1)},
        "threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    if args.curve:
        out["curve"] = curve(args, parent, Path(healed_info["out"]), subnets, unhealed, root)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
