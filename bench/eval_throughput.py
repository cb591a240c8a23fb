"""Seconds per candidate: our in-memory lm-eval adapter vs extract -> transformers -> HFLM.

For 5 homogeneous sub-networks of the imported SmolLM2 (same sizes in every kept layer,
so that a transformers LlamaForCausalLM can hold them) on hellaswag, arc_easy and piqa
(100 seeded examples each, same dtype on both sides; ``--threads 1`` is steadier on a
shared CPU):

- ours: one :class:`evaluators.Evaluator` per study (its set-up is reported apart as
  ``ours_setup_s``), then ``evaluate(subnet, Fidelity(100, seed))`` per candidate;
- hflm: what a user pays per candidate today: ``Supernet.extract`` -> ``to_hf_model`` ->
  ``HFLM(pretrained=model)`` -> ``lm_eval.evaluator.evaluate`` on the same documents
  (the task objects are loaded once and shared, which favours this side).

Prints one JSON object with ``ours_s`` and ``hflm_s`` (mean seconds per candidate),
``speedup`` (of the means; ``speedup_median`` over candidates is steadier on a shared
CPU), ``hflm_task_setup_s`` and ``speedup_vs_simple_evaluate`` (what
``lm_eval.simple_evaluate`` adds per call: a TaskManager over every built-in task and
loading the tasks), ``acc_max_abs_diff`` (over candidates, tasks, acc and acc_norm),
``tokens_per_s`` (real tokens our adapter ran per second) and ``mfu`` (model FLOPs/s
over the bf16 matmul peak of this machine, ~930 GFLOP/s; FLOPs per token =
2 x (non-embedding + LM-head parameters), attention scores left out), ``tokens`` and
``hflm_tokens`` (tokens each side runs per candidate; ``token_ratio`` = their ratio, the
saving from running each shared context once) and ``hflm_mfu`` (the same model FLOPs
rate for HFLM over its whole per-candidate time, extraction and set-up included).

``--parity`` instead checks the issue's done condition on the largest sub-network:
acc equal to HFLM on the transformers model on 200 seeded examples of each task, plus
the largest per-request loglikelihood difference.

    python bench/eval_throughput.py [--supernet work/smollm2] [--dtype bf16] [--limit 100]
    python bench/eval_throughput.py --parity [--dtype fp32] [--limit 200]
    python bench/eval_throughput.py --calibrate [--dtype bf16] [--limit 100]
    python bench/eval_throughput.py --breakdown [--threads 2]

``--calibrate`` shows how far bf16 results move with the batch composition alone
(HFLM at batch sizes 32 and 8, and our adapter, on the largest sub-network).
``--breakdown`` times the parts of one evaluation of the largest sub-network (context
pass, continuation pass, KV gather, scoring) with the FLOP rate of each model pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import Evaluator, Fidelity, ScoringOptions  # noqa: E402
from nas.importing.hf import to_hf_model  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402

PEAK_BF16_FLOPS = 930e9  # measured bf16 matmul peak of this machine (shared/DESIGN.md)
METRICS = ("acc", "acc_norm")


def homogeneous_candidates(space: SearchSpace, count: int) -> list[SubnetConfig]:
    """``count`` homogeneous sub-networks from the largest down (depth, heads and FFN width shrink)."""
    c = space.layers[0]
    depths, heads, widths = sorted(space.n_layer_choices), sorted(c.n_head), sorted(c.d_ff)
    d_model = max(space.d_model_choices)
    picks = [
        (depths[-1], heads[-1], widths[-1]),
        (depths[-1], heads[-1], widths[len(widths) // 2]),
        (depths[len(depths) // 2], heads[-1], widths[-1]),
        (depths[len(depths) // 2], heads[len(heads) // 2], widths[len(widths) // 2]),
        (depths[0], heads[0], widths[0]),
    ][:count]
    out = []
    for n, h, f in picks:
        layers = space.kept_layers(n)
        out.append(SubnetConfig(layers=layers, n_head=(h,) * n, d_ff=(f,) * n, d_model=d_model))
    return out


def hflm_scores(model: Any, subnet: SubnetConfig, tokenizer: Any, tasks: dict[str, Any], samples: dict[str, list[int]],
                batch_size: int, log_samples: bool = False) -> tuple[dict[str, Any], float]:
    """The user's path: extract, convert to transformers, wrap in HFLM, run lm-eval."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    hf_model = to_hf_model(model.extract(subnet))
    lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    results = evaluate(lm, {"tasks": tasks, "groups": {}}, samples=samples, bootstrap_iters=0, log_samples=log_samples)
    elapsed = time.perf_counter() - start
    del lm, hf_model
    gc.collect()
    return results, elapsed


def simple_evaluate_task_setup(tasks: list[str], pack_dir: Path) -> float:
    """What ``lm_eval.simple_evaluate`` adds per call on top of ``hflm_s``: a TaskManager
    (indexing every built-in task, plus the offline pack) and loading the tasks."""
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    TaskManager(include_path=str(pack_dir)).load(list(tasks))
    return time.perf_counter() - start


def hflm_token_count(evaluator: Evaluator, samples: dict[str, list[int]]) -> int:
    """Tokens HFLM runs through the model for these documents: every request is its own
    sequence, ``(context + continuation)[-(max_length + 1):][:-1]``, shared contexts included."""
    lm = evaluator.lm("largest")
    total = 0
    for task, ids in samples.items():
        for doc_id in ids:
            for inst in evaluator.instances(task, doc_id):
                context, continuation = inst.args
                if context == "":
                    ctx, cont = [lm.prefix_token_id], lm.tok_encode(continuation)
                else:
                    ctx, cont = lm._encode_pair(context, continuation)
                total += min(len(ctx) + len(cont), lm.max_length + 1) - 1
    return total


def flops_per_token(model: Any, subnet: SubnetConfig) -> float:
    return 2.0 * (model.num_params(subnet, embedding=False) + model.config.vocab_size * subnet.d_model)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_supernet(args.supernet, dtype=args.dtype)
    tokenizer = loaded.load_tokenizer()
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(dtype=args.dtype, batch_size=args.batch_size))
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    samples = {task: evaluator.subset(task, fidelity) for task in args.tasks}
    rows = []
    hflm_tokens = hflm_token_count(evaluator, samples)
    for subnet in homogeneous_candidates(loaded.space, args.candidates):
        metrics = evaluator.evaluate(subnet, fidelity)
        stats = dict(evaluator.last_stats)
        reference, hflm_s = hflm_scores(loaded.model, subnet, tokenizer, dict(evaluator.tasks.tasks), samples, args.batch_size)
        diffs = {
            f"{task}/{metric}": abs(metrics.get(task, metric).value - reference["results"][task][f"{metric},none"])
            for task in args.tasks for metric in METRICS
        }
        rows.append({
            "subnet": subnet.summary(),
            "ours_s": round(metrics.wall_s, 3),
            "hflm_s": round(hflm_s, 3),
            "tokens": stats["n_tokens"],
            "model_flops": stats["n_tokens"] * flops_per_token(loaded.model, subnet),
            "hflm_model_flops": hflm_tokens * flops_per_token(loaded.model, subnet),
            "acc": {f"{t}/{m}": round(metrics.get(t, m).value, 4) for t in args.tasks for m in METRICS},
            "acc_abs_diff": max(diffs.values()),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    ours_s = statistics.mean(r["ours_s"] for r in rows)
    hflm_s = statistics.mean(r["hflm_s"] for r in rows)
    total_time = sum(r["ours_s"] for r in rows)
    task_setup_s = simple_evaluate_task_setup(args.tasks, evaluator.pack.directory)
    return {
        "ours_s": round(ours_s, 3),
        "hflm_s": round(hflm_s, 3),
        "speedup": round(hflm_s / ours_s, 2),
        "speedup_median": round(statistics.median(r["hflm_s"] / r["ours_s"] for r in rows), 2),
        "hflm_task_setup_s": round(task_setup_s, 2),
        "speedup_vs_simple_evaluate": round((hflm_s + task_setup_s) / ours_s, 2),
        "acc_max_abs_diff": max(r["acc_abs_diff"] for r in rows),
        "tokens_per_s": round(sum(r["tokens"] for r in rows) / total_time, 1),
        "mfu": round(sum(r["model_flops"] for r in rows) / total_time / PEAK_BF16_FLOPS, 4),
        "tokens": rows[0]["tokens"],
        "hflm_tokens": hflm_tokens,
        "token_ratio": round(hflm_tokens / rows[0]["tokens"], 3),
        # HFLM's model FLOPs over its whole per-candidate time (extraction and set-up included)
        "hflm_mfu": round(sum(r["hflm_model_flops"] for r in rows) / sum(r["hflm_s"] for r in rows) / PEAK_BF16_FLOPS, 4),
        "ours_setup_s": round(evaluator.setup_s, 2),
        "dtype": args.dtype,
        "limit": args.limit,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "tasks": list(args.tasks),
        "threads": torch.get_num_threads(),
        "candidates": [{k: r[k] for k in ("subnet", "ours_s", "hflm_s", "acc_abs_diff", "tokens")} for r in rows],
    }


def parity(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_supernet(args.supernet, dtype=args.dtype)
    tokenizer = loaded.load_tokenizer()
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(dtype=args.dtype, batch_size=args.batch_size))
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    largest = loaded.space.largest()
    metrics = evaluator.evaluate(largest, fidelity)
    samples = {task: evaluator.subset(task, fidelity) for task in args.tasks}
    reference, hflm_s = hflm_scores(loaded.model, largest, tokenizer, dict(evaluator.tasks.tasks), samples,
                                    args.batch_size, log_samples=True)
    # per-request loglikelihoods of our adapter on exactly HFLM's logged requests
    lm = evaluator.lm(largest)
    from lm_eval.api.instance import Instance

    per_task = {}
    max_ll_diff = 0.0
    for task in args.tasks:
        logged = reference["samples"][task]
        requests = [Instance("loglikelihood", {}, tuple(args), 0) for s in logged for args in s["arguments"]]
        ours_ll = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        theirs_ll = [float(r[0][0]) for s in logged for r in s["resps"]]
        diff = max(abs(a - b) for a, b in zip(ours_ll, theirs_ll, strict=True))
        max_ll_diff = max(max_ll_diff, diff)
        per_task[task] = {
            **{f"ours_{m}": metrics.get(task, m).value for m in METRICS},
            **{f"hflm_{m}": reference["results"][task][f"{m},none"] for m in METRICS},
            "n_examples": metrics.get(task, "acc").n_examples,
            "max_ll_abs_diff": diff,
        }
    equal = all(v[f"ours_{m}"] == v[f"hflm_{m}"] for v in per_task.values() for m in METRICS)
    return {
        "parity": equal,
        "dtype": args.dtype,
        "limit": args.limit,
        "seed": args.seed,
        "subnet": largest.summary(),
        "tasks": per_task,
        "max_ll_abs_diff": max_ll_diff,
        "ours_s": round(metrics.wall_s, 2),
        "hflm_s": round(hflm_s, 2),
    }


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """How far bf16 scores move with the batch composition alone: HFLM at two batch sizes
    vs our adapter, on the largest sub-network (acc / acc_norm and per-request loglikelihoods)."""
    from lm_eval.api.instance import Instance

    loaded = load_supernet(args.supernet, dtype=args.dtype)
    tokenizer = loaded.load_tokenizer()
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(dtype=args.dtype, batch_size=args.batch_size))
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    largest = loaded.space.largest()
    samples = {task: evaluator.subset(task, fidelity) for task in args.tasks}
    runs = {}
    for bs in (args.batch_size, max(1, args.batch_size // 4)):
        runs[f"hflm_bs{bs}"], _ = hflm_scores(loaded.model, largest, tokenizer, dict(evaluator.tasks.tasks), samples, bs, log_samples=True)
    lm = evaluator.lm(largest)
    first = next(iter(runs.values()))
    names = list(runs)
    out: dict[str, Any] = {"dtype": args.dtype, "limit": args.limit, "subnet": largest.summary()}
    ours_scores = evaluator.evaluate(largest, fidelity)
    for task in args.tasks:
        requests = [Instance("loglikelihood", {}, tuple(a), 0) for s in first["samples"][task] for a in s["arguments"]]
        lls = {name: [float(r[0][0]) for s in run["samples"][task] for r in s["resps"]] for name, run in runs.items()}
        lls["ours"] = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        accs = {name: {m: run["results"][task][f"{m},none"] for m in METRICS} for name, run in runs.items()}
        accs["ours"] = {m: ours_scores.get(task, m).value for m in METRICS}
        pairs = {}
        for a, b in ((names[0], names[1]), (names[0], "ours"), (names[1], "ours")):
            pairs[f"{a}_vs_{b}"] = {
                "acc_max_abs_diff": max(abs(accs[a][m] - accs[b][m]) for m in METRICS),
                "max_ll_abs_diff": max(abs(x - y) for x, y in zip(lls[a], lls[b], strict=True)),
            }
        out[task] = {"acc": accs, "pairs": pairs}
    return out


def breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """Where our time goes on the largest sub-network: the context pass, the continuation
    pass (model calls, with the FLOP rate of each over the matmul FLOPs it does), the KV
    gather, and the rest (log-softmax scoring over the vocabulary, lm-eval's aggregation)."""
    from evaluators.harness import SubnetLM

    loaded = load_supernet(args.supernet, dtype=args.dtype)
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(dtype=args.dtype, batch_size=args.batch_size))
    largest = loaded.space.largest()
    evaluator.evaluate(largest, Fidelity(limit=10, seed=args.seed + 1))  # warm-up
    parts = {name: {"s": 0.0, "calls": 0, "tokens": 0} for name in ("context", "continuation", "gather")}
    forward, gather = SubnetLM._forward, SubnetLM._gather_cache

    def timed_forward(self: Any, tokens: torch.Tensor, cache: Any = None, mask: Any = None, logits_index: Any = None) -> Any:
        part = parts["continuation" if cache is not None and cache.length else "context"]
        start = time.perf_counter()
        out = forward(self, tokens, cache, mask, logits_index)
        part["s"] += time.perf_counter() - start
        part["calls"] += 1
        part["tokens"] += tokens.numel()  # padded tokens: what the matmuls ran
        return out

    def timed_gather(self: Any, *a: Any) -> Any:
        start = time.perf_counter()
        out = gather(self, *a)
        parts["gather"]["s"] += time.perf_counter() - start
        parts["gather"]["calls"] += 1
        return out

    SubnetLM._forward, SubnetLM._gather_cache = timed_forward, timed_gather  # type: ignore[method-assign]
    try:
        metrics = evaluator.evaluate(largest, Fidelity(limit=args.limit, seed=args.seed))
    finally:
        SubnetLM._forward, SubnetLM._gather_cache = forward, gather  # type: ignore[method-assign]
    body = 2.0 * loaded.model.num_params(largest, embedding=False)
    head = 2.0 * loaded.model.config.vocab_size * largest.d_model
    flops = {"context": body, "continuation": body + head}  # the LM head runs only where logits are scored
    out: dict[str, Any] = {"subnet": largest.summary(), "total_s": round(metrics.wall_s, 2), "dtype": args.dtype,
                           "limit": args.limit, "threads": torch.get_num_threads()}
    for name, part in parts.items():
        row: dict[str, Any] = {"s": round(part["s"], 2), "calls": part["calls"], "share": round(part["s"] / metrics.wall_s, 3)}
        if name in flops:
            rate = part["tokens"] * flops[name] / part["s"]
            row |= {"padded_tokens": part["tokens"], "gflop_per_s": round(rate / 1e9, 1), "of_peak": round(rate / PEAK_BF16_FLOPS, 3)}
        out[name] = row
    rest = metrics.wall_s - sum(p["s"] for p in parts.values())
    out["scoring_and_rest"] = {"s": round(rest, 2), "share": round(rest / metrics.wall_s, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", default=str(Path(os.environ.get("NAS_WORK_DIR", "work")) / "smollm2"))
    parser.add_argument("--tasks", default="hellaswag,arc_easy,piqa")
    parser.add_argument("--dtype", default=None, help="bf16 (default) or fp32 (default for --parity)")
    parser.add_argument("--limit", type=int, default=None, help="examples per task (100; 200 with --parity)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--parity", action="store_true", help="largest sub-network: acc must equal HFLM's")
    parser.add_argument("--calibrate", action="store_true", help="HFLM at two batch sizes vs ours (bf16 noise)")
    parser.add_argument("--breakdown", action="store_true", help="largest sub-network: time per part and FLOP rates")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.dtype = args.dtype or ("fp32" if args.parity else "bf16")
    args.limit = args.limit or (200 if args.parity else 100)
    logging.basicConfig(level=logging.WARNING)
    for name in ("lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = (parity(args) if args.parity else calibrate(args) if args.calibrate
              else breakdown(args) if args.breakdown else throughput(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
