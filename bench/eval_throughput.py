"""Seconds per candidate and per study: our lm-eval adapter vs extract -> transformers -> HFLM.

The default run prints one JSON object with three parts (``--parts``):

- ``throughput``: 5 homogeneous sub-networks of the imported SmolLM2 (same sizes in every
  kept layer, so that a transformers LlamaForCausalLM can hold them) on hellaswag, arc_easy
  and piqa (100 seeded examples each, in ``--dtype`` on both sides: ``auto`` by default, bf16
  where the CPU computes it natively, else fp32, as a study would). Ours: one
  :class:`evaluators.Evaluator` per study, its scoring plan built once (``ours_plan_s``,
  apart, as ``ours_setup_s``), then ``evaluate(subnet, Fidelity(100, seed))`` per candidate
  *without* prefix reuse (one candidate's speed). HFLM: what a user pays per candidate:
  ``Supernet.extract`` -> ``to_hf_model`` -> ``HFLM(pretrained=model)`` ->
  ``lm_eval.evaluator.evaluate`` on the same documents (task objects shared, which favours
  it). Keys: ``ours_s``, ``hflm_s`` (means), ``speedup`` (of the means; ``speedup_median``),
  ``hflm_task_setup_s`` / ``speedup_vs_simple_evaluate`` (what ``lm_eval.simple_evaluate``
  adds per call), ``acc_max_abs_diff``, ``tokens_per_s``, ``mfu`` (model FLOPs/s over the
  matmul peak this run measures in its dtype, ``peak_bf16_gflop_per_s`` (or ``peak_fp32_...``)
  at the start and ``..._end`` at the end; FLOPs per token = 2 x (non-embedding + LM-head parameters)),
  ``tokens`` / ``hflm_tokens`` / ``token_ratio``, ``hflm_mfu``, and ``hflm_fit`` (HFLM
  seconds per candidate as a line in model FLOPs per token). ``kernels``: whether ours ran the
  fused norms and RoPE (:mod:`nas.model.fused`, by default for bf16 on a CPU); where it did,
  ``ours_eager_s`` is the same scoring with eager kernels, timed alternately with it on the
  same candidates, and ``fused_speedup`` its ratio; ``fused_vs_eager_acc_max_abs_diff`` and
  ``fused_vs_eager_docs_differing`` (of ``fused_vs_eager_docs``) say how far the scores moved.
- ``study``: a population drawn as the demo's NSGA-II draws it — 2 generations of
  ``--population`` (15: 30 sub-networks) over the demo's space — each generation scored as
  one batch in trie order with plan and prefix reuse (:meth:`Evaluator.evaluate_many`),
  against HFLM's time for the same sub-networks from ``hflm_fit``: ``study_speedup``,
  ``reuse_fraction`` (layer passes skipped / all; ``reuse_bound`` what an unbounded cache
  could skip in the same order); ``study_speedup_depth`` and
  ``reuse_fraction_depth`` on the same space tied (depth and one width for every layer).
  A sub-network drawn twice is scored once (a study's cache answers the second). The
  evaluator knows the study's space and stores only the boundaries where another of its
  sub-networks can branch off (:meth:`nas.model.space.SearchSpace.branch_depths`);
  ``--compare-reuse`` also runs the tied space storing every depth (the policy before), keys
  ``*_depth_all_depths``, in the same run. Before the first study the heap is grown to the
  prefix cache's budget, untimed (``heap_warm_s``; :func:`nas.model.heap.warm_heap`): a
  study's first growth to its peak is a one-off per process, and on a VM that hands freed
  pages back to its host (ours) faulting them in costs seconds per GiB that the HFLM side,
  with its small heap, never pays.
- ``parity``: the largest sub-network on 200 seeded examples per task: ours fp32 vs HFLM
  fp32 (``fp32_acc_identical``: acc and acc_norm equal on every task) and our bf16 vs our
  fp32: ``bf16_vs_fp32_acc_max_diff`` as scored by default (bf16 matmuls with mixed
  numerics: the residual stream and the decisive logits in fp32, ``numerics: mixed``),
  ``bf16_model_numerics_vs_fp32_acc_max_diff`` with everything in bf16 (``numerics: model``,
  the default before), ``bf16_recheck_vs_fp32_acc_max_diff`` with close calls re-scored in
  fp32 (:mod:`evaluators.recheck`, opt-in: ``recheck_nats`` in a spec; ``rechecked_fraction``
  of the documents under ``--recheck-nats``), ``bf16_hflm_vs_fp32_acc_max_diff`` all bf16
  with HFLM's bf16 log-softmax instead of the fp32 logsumexp; ``bf16_ll_err_p50`` / ``_p99``
  / ``_max`` (and ``bf16_model_numerics_ll_err``): the error per request in nats, which the
  re-check assumes bounded; ``mixed_s`` / ``model_numerics_s``: the two numerics timed
  alternately (median of ``--numerics-repeats`` each) and ``mixed_cost`` their ratio;
  ``bf16_weights_fp32_compute_acc_max_diff`` and ``_ll_err``: the weights rounded to bf16
  with every operation in fp32, the part of the error no bf16 arithmetic can remove.

    python bench/eval_throughput.py [--threads 2] [--parts throughput,study,parity] [--population 15]
    python bench/eval_throughput.py --parity [--dtype fp32] [--limit 200]
    python bench/eval_throughput.py --calibrate [--dtype bf16] [--limit 100]
    python bench/eval_throughput.py --breakdown [--threads 2]

``--calibrate`` shows how far bf16 results move with the batch composition alone
(HFLM at batch sizes 32 and 8, and our adapter, on the largest sub-network).
``--breakdown`` times the parts of one evaluation of the largest sub-network (context
pass, continuation pass, LM head, log-probabilities) with the FLOP rate of each model pass
and of attention (over every query-key pair of its padded groups, masked ones included).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import Evaluator, Fidelity, ScoringOptions  # noqa: E402
from evaluators.recheck import DEFAULT_RECHECK_NATS  # noqa: E402
from nas.importing.hf import to_hf_model  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.heap import warm_heap  # noqa: E402
from nas.model.precision import resolve_dtype, torch_dtype  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402

METRICS = ("acc", "acc_norm")


def measure_peak(dtype: str = "bf16", size: int = 2048, repeats: int = 5) -> float:
    """This machine's ``dtype`` matmul FLOP/s now (best of ``repeats`` ``size``-square products
    at the current thread count): the peak ``mfu`` is measured against."""
    a, b = (torch.randn(size, size, dtype=torch_dtype(dtype)) for _ in range(2))
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


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


def throughput(args: argparse.Namespace, peak: float) -> dict[str, Any]:
    loaded = load_supernet(args.supernet, dtype=args.dtype)
    tokenizer = loaded.load_tokenizer()
    # one candidate's speed: no prefix reuse between these candidates (they share layers)
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(
        dtype=args.dtype, batch_size=args.batch_size, prefix_cache_bytes=0))
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    samples = {task: evaluator.subset(task, fidelity) for task in args.tasks}
    plan_s = evaluator.prepare(fidelity)  # once per study and fidelity
    # the same scoring with eager kernels, side by side (only where ours runs fused ones)
    eager = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(
        dtype=args.dtype, batch_size=args.batch_size, prefix_cache_bytes=0, kernels="eager")) if evaluator.fused else None
    if eager is not None:
        eager.prepare(fidelity)
        eager.evaluate(loaded.space.largest(), Fidelity(limit=10, seed=args.seed + 1))  # both warm (compiles untimed)
        evaluator.evaluate(loaded.space.largest(), Fidelity(limit=10, seed=args.seed + 1))
    rows = []
    hflm_tokens = hflm_token_count(evaluator, samples)
    for i, subnet in enumerate(homogeneous_candidates(loaded.space, args.candidates)):
        eager_metrics = None
        if eager is not None and i % 2:  # alternate which kind runs first
            eager_metrics = eager.evaluate(subnet, fidelity)
        metrics = evaluator.evaluate(subnet, fidelity)
        stats = dict(evaluator.last_stats)
        if eager is not None and not i % 2:
            eager_metrics = eager.evaluate(subnet, fidelity)
        eager_s = None if eager_metrics is None else eager_metrics.wall_s
        flips = None if eager_metrics is None else fused_vs_eager(metrics, eager_metrics, args.tasks)
        reference, hflm_s = hflm_scores(loaded.model, subnet, tokenizer, dict(evaluator.tasks.tasks), samples, args.batch_size)
        diffs = {
            f"{task}/{metric}": abs(metrics.get(task, metric).value - reference["results"][task][f"{metric},none"])
            for task in args.tasks for metric in METRICS
        }
        rows.append({
            "subnet": subnet.summary(),
            "subnet_dict": subnet.to_dict(),
            "ours_s": round(metrics.wall_s, 3),
            "ours_eager_s": None if eager_s is None else round(eager_s, 3),
            "fused_vs_eager": flips,
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
    eager_mean = statistics.mean(r["ours_eager_s"] for r in rows) if eager is not None else None
    return {
        "ours_s": round(ours_s, 3),
        "kernels": "fused" if evaluator.fused else "eager",
        "ours_eager_s": None if eager_mean is None else round(eager_mean, 3),
        "fused_speedup": None if eager_mean is None else round(eager_mean / ours_s, 3),
        # how far fused scores move from eager ones: the largest acc/acc_norm difference of a task, and
        # the documents (of all tasks and candidates) whose acc or acc_norm differs
        "fused_vs_eager_acc_max_abs_diff": None if eager is None else max(r["fused_vs_eager"]["acc_max_abs_diff"] for r in rows),
        "fused_vs_eager_docs_differing": None if eager is None else sum(r["fused_vs_eager"]["docs_differing"] for r in rows),
        "fused_vs_eager_docs": None if eager is None else sum(r["fused_vs_eager"]["docs"] for r in rows),
        "hflm_s": round(hflm_s, 3),
        "speedup": round(hflm_s / ours_s, 2),
        "speedup_median": round(statistics.median(r["hflm_s"] / r["ours_s"] for r in rows), 2),
        "hflm_task_setup_s": round(task_setup_s, 2),
        "speedup_vs_simple_evaluate": round((hflm_s + task_setup_s) / ours_s, 2),
        "acc_max_abs_diff": max(r["acc_abs_diff"] for r in rows),
        "tokens_per_s": round(sum(r["tokens"] for r in rows) / total_time, 1),
        "mfu": round(sum(r["model_flops"] for r in rows) / total_time / peak, 4),
        "tokens": rows[0]["tokens"],
        "hflm_tokens": hflm_tokens,
        "token_ratio": round(hflm_tokens / rows[0]["tokens"], 3),
        # HFLM's model FLOPs over its whole per-candidate time (extraction and set-up included)
        "hflm_mfu": round(sum(r["hflm_model_flops"] for r in rows) / sum(r["hflm_s"] for r in rows) / peak, 4),
        "ours_setup_s": round(evaluator.setup_s, 2),
        "ours_plan_s": round(plan_s, 2),
        "dtype": args.dtype,
        "limit": args.limit,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "tasks": list(args.tasks),
        "threads": torch.get_num_threads(),
        "candidates": [{k: r[k] for k in ("subnet", "ours_s", "ours_eager_s", "hflm_s", "acc_abs_diff", "tokens")} for r in rows],
        # seconds HFLM takes per candidate as a line in model FLOPs per token (Theil-Sen: robust to one slowed run)
        "hflm_fit": _linear_fit([flops_per_token(loaded.model, SubnetConfig.from_dict(r["subnet_dict"])) for r in rows],
                                [r["hflm_s"] for r in rows]),
    }


def fused_vs_eager(fused: Any, eager: Any, tasks: list[str]) -> dict[str, Any]:
    """The largest acc/acc_norm difference of a task between two scorings of one candidate, and
    how many of its documents got a different acc or acc_norm."""
    diff, differing, docs = 0.0, 0, 0
    for task in tasks:
        changed: set[int] = set()
        for metric in METRICS:
            a, b = fused.get(task, metric), eager.get(task, metric)
            diff = max(diff, abs(a.value - b.value))
            changed |= {i for i, x, y in zip(a.example_ids, a.example_scores, b.example_scores, strict=True) if x != y}
        differing += len(changed)
        docs += fused.get(task, METRICS[0]).n_examples
    return {"acc_max_abs_diff": round(diff, 4), "docs_differing": differing, "docs": docs}


def _linear_fit(x: list[float], y: list[float]) -> list[float]:
    """[intercept, slope] of the Theil-Sen line through (x, y): the median of pairwise slopes
    and of the residual intercepts, so one candidate slowed by another job on a shared
    machine does not tilt it."""
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x)) if x[j] != x[i]]
    slope = statistics.median(slopes) if slopes else 0.0
    return [statistics.median(b - slope * a for a, b in zip(x, y)), slope]


def nsga_population(evaluator: Evaluator, space: SearchSpace, fidelity: Fidelity, *, population: int, generations: int,
                    seed: int, reuse: bool) -> dict[str, Any]:
    """Draw ``generations`` x ``population`` sub-networks as a study's NSGA-II does (the first
    generation at random, then children of the scored parents) and score each generation as
    one batch in trie order (:meth:`Evaluator.evaluate_many`); a sub-network drawn again is
    not re-scored (the study's cache would answer it)."""
    import optuna

    from nas.search.params import suggest_subnet

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    cache = evaluator.prefix_cache
    passes, skipped = cache.layer_passes, cache.layer_passes_skipped
    scored: dict[SubnetConfig, list[float]] = {}
    seconds = 0.0
    for _ in range(generations):
        trials = [study.ask() for _ in range(population)]
        batch = [suggest_subnet(space, t) for t in trials]
        fresh = list(dict.fromkeys(b for b in batch if b not in scored))
        start = time.perf_counter()
        results = evaluator.evaluate_many(fresh, fidelity) if reuse else [evaluator.evaluate(b, fidelity) for b in fresh]
        seconds += time.perf_counter() - start
        for subnet, metrics in zip(fresh, results):
            acc = statistics.mean(metrics.get(t, "acc_norm").value for t in evaluator.tasks.tasks)
            scored[subnet] = [acc, float(evaluator.model.num_params(subnet, embedding=False))]
        for trial, subnet in zip(trials, batch):
            study.tell(trial, scored[subnet])
    total = cache.layer_passes - passes + cache.layer_passes_skipped - skipped
    return {"subnets": list(scored), "seconds": seconds, "reuse_bound": reuse_bound(list(scored)),
            "reuse_fraction": (cache.layer_passes_skipped - skipped) / total if total else 0.0}


def reuse_bound(subnets: list[SubnetConfig]) -> float:
    """The layers an unbounded cache could skip, scoring ``subnets`` in this order: each one's
    longest shared first layers with any earlier one, over all their layers."""
    from evaluators.prefix import prefix_path

    paths = [prefix_path(s) for s in subnets]
    skipped = 0
    for i, path in enumerate(paths):
        best = 0
        for other in paths[:i]:
            k = 0
            while k + 1 < min(len(path), len(other)) and path[0] == other[0] and path[k + 1] == other[k + 1]:
                k += 1
            best = max(best, k)
        skipped += best
    return skipped / sum(len(p) - 1 for p in paths) if paths else 0.0


def study_throughput(args: argparse.Namespace, hflm_fit: list[float]) -> dict[str, Any]:
    """``study_speedup``: the demo's space (per-layer heads and widths), 2 NSGA-II generations of
    ``--population``, scored back to back with plan and prefix reuse, against HFLM's time for the
    same sub-networks (HFLM seconds per candidate as a linear function of model FLOPs per token,
    fitted on the homogeneous candidates HFLM ran in this run); ``study_speedup_depth``: the same
    on the tied-width space (depth and one width for every layer)."""
    from nas.cli.demo import DEMO_SPACE

    loaded = load_supernet(args.supernet, dtype=args.dtype)
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    out: dict[str, Any] = {}
    runs = [("", False, True), ("_depth", True, True)]
    if args.compare_reuse:  # the tied space again, every depth's residual stream a candidate to store (as before)
        runs.append(("_depth_all_depths", True, False))
    for name, tied, branch in runs:
        space = SearchSpace.from_dict({**DEMO_SPACE, "tied": tied}, loaded.model.config, loaded.model.layer_rank)
        evaluator = Evaluator.from_loaded(loaded, args.tasks, space=space, options=ScoringOptions(
            dtype=args.dtype, batch_size=args.batch_size, prefix_cache_bytes=args.prefix_cache_bytes))
        evaluator.reuse_branch_depths = branch
        if not out:  # the heap grown to the cache's budget once, untimed: on a VM that hands freed pages back
            # to its host, the first study would otherwise pay for faulting its cache's pages in (nas.model.heap)
            out["heap_warm_s"] = round(warm_heap(evaluator.prefix_cache.max_bytes), 1)
        plan_s = evaluator.prepare(fidelity)
        run = nsga_population(evaluator, space, fidelity, population=args.population, generations=2, seed=args.seed,
                              reuse=True)
        hflm_s = sum(hflm_fit[0] + hflm_fit[1] * flops_per_token(loaded.model, s) for s in run["subnets"])
        out |= {
            f"study_speedup{name}": round(hflm_s / (run["seconds"] + plan_s), 2),
            f"study_candidates{name}": len(run["subnets"]),
            f"study_ours_s{name}": round(run["seconds"] + plan_s, 1),
            f"study_hflm_s{name}": round(hflm_s, 1),
            f"reuse_fraction{name}": round(run["reuse_fraction"], 3),
            f"reuse_bound{name}": round(run["reuse_bound"], 3),  # what an unbounded cache could skip
            f"prefix_cache_mb{name}": round(evaluator.prefix_cache.max_bytes / 2**20),
        }
        evaluator.prefix_cache.clear()  # the next space starts from an empty cache (one budget per process)
        del evaluator
        gc.collect()
    return out


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
    bf16: dict[str, Any] = {}
    if args.dtype == "fp32":  # our bf16 against our fp32 on the same documents
        fp32_lls = request_lls(evaluator, samples)
        del evaluator, lm
        gc.collect()
        plain = Evaluator.from_loaded(load_supernet(args.supernet, dtype="bf16"), args.tasks,
                                      options=ScoringOptions(dtype="bf16", batch_size=args.batch_size, prefix_cache_bytes=0))
        plain_metrics = plain.evaluate(largest, fidelity)  # the default: bf16 matmuls, mixed numerics
        mixed_errors = sorted(abs(a - b) for a, b in zip(request_lls(plain, samples), fp32_lls, strict=True))
        all_bf16 = Evaluator(plain.model, plain.tokenizer, args.tasks, options=ScoringOptions(
            dtype="bf16", batch_size=args.batch_size, prefix_cache_bytes=0, numerics="model"), space=plain.space)
        model_metrics = all_bf16.evaluate(largest, fidelity)
        model_errors = sorted(abs(a - b) for a, b in zip(request_lls(all_bf16, samples), fp32_lls, strict=True))
        times: dict[str, list[float]] = {"mixed": [], "model": []}
        for i in range(args.numerics_repeats):  # alternated, each side first in turn
            for name, ev in ((("mixed", plain), ("model", all_bf16)) if i % 2 == 0 else (("model", all_bf16), ("mixed", plain))):
                times[name].append(ev.evaluate(largest, fidelity).wall_s)
        # close calls re-scored in fp32 (recheck_nats), and plain bf16 with HFLM's arithmetic (log-softmax in bf16)
        low = Evaluator(plain.model, plain.tokenizer, args.tasks, options=ScoringOptions(
            dtype="bf16", batch_size=args.batch_size, prefix_cache_bytes=0), space=plain.space, recheck_nats=args.recheck_nats)
        low_metrics = low.evaluate(largest, fidelity)
        checked = dict(low.last_stats)
        hflm_style = Evaluator(plain.model, plain.tokenizer, args.tasks, options=ScoringOptions(
            dtype="bf16", batch_size=args.batch_size, logprobs="hflm", numerics="model", prefix_cache_bytes=0),
            space=plain.space).evaluate(largest, fidelity)

        def max_diff(got: Any) -> float:
            return round(max(abs(got.get(t, m).value - per_task[t][f"ours_{m}"]) for t in args.tasks for m in METRICS), 4)

        def quantiles(errs: list[float]) -> dict[str, float]:
            errs = sorted(errs)
            return {"p50": round(errs[len(errs) // 2], 4), "p99": round(errs[min(len(errs) - 1, int(0.99 * len(errs)))], 4),
                    "max": round(errs[-1], 4)}

        # the error budget: how much of bf16's difference the weights' rounding alone makes
        # (weights rounded to bf16, every operation in fp32)
        rounded = load_supernet(args.supernet, dtype="fp32")
        with torch.no_grad():
            for param in rounded.model.parameters():
                param.copy_(param.to(torch.bfloat16).float())
        rounded_ev = Evaluator.from_loaded(rounded, args.tasks, options=ScoringOptions(
            dtype="fp32", batch_size=args.batch_size, prefix_cache_bytes=0))
        rounded_metrics = rounded_ev.evaluate(largest, fidelity)
        rounded_errs = [abs(a - b) for a, b in zip(request_lls(rounded_ev, samples), fp32_lls, strict=True)]
        del rounded_ev, rounded
        gc.collect()

        mixed_s, model_s = statistics.median(times["mixed"]), statistics.median(times["model"])
        bf16 = {"bf16_vs_fp32_acc_max_diff": max_diff(plain_metrics), "bf16_s": round(plain_metrics.wall_s, 2),
                "bf16_kernels": "fused" if plain.fused else "eager", "numerics": plain.options.numerics,
                "bf16_model_numerics_vs_fp32_acc_max_diff": max_diff(model_metrics),
                "bf16_model_numerics_ll_err": quantiles(model_errors),
                "mixed_s": round(mixed_s, 2), "model_numerics_s": round(model_s, 2), "mixed_cost": round(mixed_s / model_s, 3),
                "numerics_repeats": args.numerics_repeats,
                "bf16_recheck_vs_fp32_acc_max_diff": max_diff(low_metrics), "bf16_recheck_s": round(low_metrics.wall_s, 2),
                "recheck_nats": low.recheck_nats,
                "rechecked_fraction": round(checked["rechecked_docs"] / checked["scored_docs"], 4),
                "bf16_hflm_vs_fp32_acc_max_diff": max_diff(hflm_style),
                # |bf16 - fp32| log-likelihood per request (plain bf16): what the re-check's assumed error is set against
                **{f"bf16_ll_err_{k}": v for k, v in quantiles(mixed_errors).items()}, "n_requests": len(mixed_errors),
                "bf16_weights_fp32_compute_acc_max_diff": max_diff(rounded_metrics),
                "bf16_weights_fp32_compute_ll_err": quantiles(rounded_errs),
                "bf16_acc": {f"{t}/{m}": plain_metrics.get(t, m).value for t in args.tasks for m in METRICS},
                "bf16_model_numerics_acc": {f"{t}/{m}": model_metrics.get(t, m).value for t in args.tasks for m in METRICS},
                "bf16_recheck_acc": {f"{t}/{m}": low_metrics.get(t, m).value for t in args.tasks for m in METRICS},
                "bf16_hflm_acc": {f"{t}/{m}": hflm_style.get(t, m).value for t in args.tasks for m in METRICS}}
    return {
        "parity": equal,
        "fp32_acc_identical": equal if args.dtype == "fp32" else None,
        **bf16,
        "dtype": args.dtype,
        "limit": args.limit,
        "seed": args.seed,
        "subnet": largest.summary(),
        "tasks": per_task,
        "max_ll_abs_diff": max_ll_diff,
        "ours_s": round(metrics.wall_s, 2),
        "hflm_s": round(hflm_s, 2),
    }


def request_lls(evaluator: Evaluator, samples: dict[str, list[int]]) -> list[float]:
    """The log-likelihood of every request of ``samples``' documents in ``evaluator``'s last
    evaluation, in document and request order."""
    return [inst.resps[0][0] for task, ids in samples.items() for d in ids for inst in evaluator.instances(task, d)]


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


def breakdown(args: argparse.Namespace, peak: float) -> dict[str, Any]:
    """Where our time goes on the largest sub-network: the packed model passes (every kept
    layer over a round's contexts and continuation tokens at once, with the FLOP rate over
    the matmul FLOPs they do), the attention inside them, the LM head at the positions whose
    logits are needed, the log-probabilities over the vocabulary, and the rest (lm-eval's
    aggregation)."""
    import evaluators.prefix as prefix
    from nas.model.supernet import Supernet

    loaded = load_supernet(args.supernet, dtype=args.dtype)
    evaluator = Evaluator.from_loaded(loaded, args.tasks, options=ScoringOptions(
        dtype=args.dtype, batch_size=args.batch_size, prefix_cache_bytes=0))
    largest = loaded.space.largest()
    fidelity = Fidelity(limit=args.limit, seed=args.seed)
    evaluator.prepare(fidelity)
    evaluator.evaluate(largest, Fidelity(limit=10, seed=args.seed + 1))  # warm-up
    parts = {name: {"s": 0.0, "calls": 0, "tokens": 0, "flops": 0} for name in ("layers", "attention", "head", "logprobs")}
    run_layers, head, exact, attend = Supernet.run_layers, Supernet.head, prefix.exact_logprobs, prefix._PackedRound.attend

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            out = fn(*a, **kw)
            parts[name]["s"] += time.perf_counter() - start
            parts[name]["calls"] += 1
            if name == "layers":
                parts[name]["tokens"] += a[1].shape[1]  # the round's real tokens: what the matmuls ran
            if name == "attention":  # QK^T and PV over every (query, key) pair of each padded group, masked or not
                heads, head_dim = a[1].shape[1], a[1].shape[3]
                parts[name]["flops"] += sum(4 * i.shape[0] * i.shape[1] ** 2 * heads * head_dim for i in a[0].index)
            return out
        return wrapper

    Supernet.run_layers, Supernet.head = timed("layers", run_layers), timed("head", head)  # type: ignore[method-assign]
    prefix.exact_logprobs, prefix._PackedRound.attend = timed("logprobs", exact), timed("attention", attend)  # type: ignore[method-assign]
    try:
        metrics = evaluator.evaluate(largest, fidelity)
    finally:
        Supernet.run_layers, Supernet.head, prefix.exact_logprobs = run_layers, head, exact  # type: ignore[method-assign]
        prefix._PackedRound.attend = attend  # type: ignore[method-assign]
    body = 2.0 * loaded.model.num_params(largest, embedding=False)
    out: dict[str, Any] = {"subnet": largest.summary(), "total_s": round(metrics.wall_s, 2), "dtype": args.dtype,
                           "kernels": "fused" if evaluator.fused else "eager",
                           "limit": args.limit, "threads": torch.get_num_threads()}
    for name, part in parts.items():
        row: dict[str, Any] = {"s": round(part["s"], 2), "calls": part["calls"], "share": round(part["s"] / metrics.wall_s, 3)}
        if name == "layers":  # the attention inside them is its own row too
            rate = part["tokens"] * body / (part["s"] - parts["attention"]["s"])
            row |= {"tokens": part["tokens"], "gflop_per_s_outside_attention": round(rate / 1e9, 1), "of_peak": round(rate / peak, 3)}
        if name == "attention":  # the dense rate: the kernel computes masked pairs too
            rate = part["flops"] / part["s"]
            row |= {"gflop_per_s_dense": round(rate / 1e9, 1), "of_peak": round(rate / peak, 3)}
        out[name] = row
    rest = metrics.wall_s - sum(p["s"] for n, p in parts.items() if n != "attention")
    out["scoring_and_rest"] = {"s": round(rest, 2), "share": round(rest / metrics.wall_s, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", default=str(Path(os.environ.get("NAS_WORK_DIR", "work")) / "smollm2"))
    parser.add_argument("--tasks", default="hellaswag,arc_easy,piqa")
    parser.add_argument("--dtype", default=None, help="auto (default: bf16 where the CPU computes it natively, else "
                                                     "fp32), bf16 (default for --calibrate) or fp32 (default for --parity)")
    parser.add_argument("--limit", type=int, default=None, help="examples per task (100; 200 with --parity)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--parts", default="throughput,study,parity",
                        help="comma-separated parts of the default run: throughput (one candidate, ours vs HFLM), "
                             "study (needs throughput: 2 NSGA-II generations with plan and prefix reuse), "
                             "parity (fp32 vs HFLM fp32 and our bf16 vs our fp32 at --parity-limit documents)")
    parser.add_argument("--population", type=int, default=15, help="NSGA-II population of the study part")
    parser.add_argument("--prefix-cache-bytes", type=int, default=None, help="prefix reuse budget (default: from free memory)")
    parser.add_argument("--compare-reuse", action="store_true",
                        help="study part: also score the tied space storing every depth's boundary (the policy before "
                             "branch depths), keys *_depth_all_depths, side by side in the same run")
    parser.add_argument("--parity-limit", type=int, default=200)
    parser.add_argument("--numerics-repeats", type=int, default=4,
                        help="parity: alternated timings of mixed and all-bf16 numerics, each (the median is kept)")
    parser.add_argument("--recheck-nats", type=float, default=DEFAULT_RECHECK_NATS,
                        help="parity: the bf16 error assumed per request when close calls are re-scored in fp32")
    parser.add_argument("--parity", action="store_true", help="only the parity part, at --dtype (fp32 default)")
    parser.add_argument("--calibrate", action="store_true", help="HFLM at two batch sizes vs ours (bf16 noise)")
    parser.add_argument("--breakdown", action="store_true", help="largest sub-network: time per part and FLOP rates")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tasks = [t for t in args.tasks.split(",") if t]
    logging.basicConfig(level=logging.WARNING)
    for name in ("lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.parity or args.calibrate or args.breakdown:
        # --calibrate measures bf16's noise: bf16 unless told otherwise
        args.dtype = resolve_dtype(args.dtype or ("fp32" if args.parity else "bf16" if args.calibrate else "auto"))
        peak = measure_peak(args.dtype) if args.breakdown else math.nan
        args.limit = args.limit or (args.parity_limit if args.parity else 100)
        result = parity(args) if args.parity else calibrate(args) if args.calibrate else breakdown(args, peak)
    else:
        parts = set(args.parts.split(","))
        args.dtype = resolve_dtype(args.dtype or "auto")  # bf16 where the CPU computes it natively, else fp32
        args.limit = args.limit or 100
        peak = measure_peak(args.dtype)
        result = {f"peak_{args.dtype}_gflop_per_s": round(peak / 1e9, 1)}
        if "throughput" in parts or "study" in parts:
            result |= throughput(args, peak)
        if "study" in parts:
            result |= study_throughput(args, result["hflm_fit"])
        if "parity" in parts:
            checked = parity(argparse.Namespace(**{**vars(args), "dtype": "fp32", "limit": args.parity_limit}))
            result |= {"fp32_acc_identical": checked["fp32_acc_identical"],
                       "bf16_vs_fp32_acc_max_diff": checked["bf16_vs_fp32_acc_max_diff"],
                       "bf16_hflm_vs_fp32_acc_max_diff": checked["bf16_hflm_vs_fp32_acc_max_diff"], "parity_detail": checked}
        result[f"peak_{args.dtype}_gflop_per_s_end"] = round(measure_peak(args.dtype) / 1e9, 1)  # the machine drifts: both ends
    print(json.dumps(result))


if __name__ == "__main__":
    main()
