"""Deploying what the search picks: GGUF exports run in llama.cpp, quantisation as a search axis.

For 5 sub-networks spread over the demo's SmolLM2 space (``work/smollm2``, imported by
``make demo`` / ``nas supernet import smollm2-135m --out work/smollm2``), exported as GGUF
at f32, q8_0 and q4_0 and run in llama-cpp-python, prints one JSON object:

* ``logprob_max_abs_diff_f32`` / ``greedy_identical_f32`` — llama.cpp vs our fp32 model on
  the fixed text (``nas.export.engine.VERIFY_TEXT``): next-token log-probs at every position,
  32 greedy tokens (goals: <= 1e-3, identical);
* ``kl_q8_0``, ``kl_q4_0``, ``top1_agree_q4_0`` — llama.cpp's quantised model vs our
  unquantised one (mean over sub-networks), and ``kl_vs_fake_quant_*`` / ``top1_vs_fake_quant_q4_0``
  vs our fake-quantised scoring: what llama.cpp's kernels add to the weight format;
* ``acc_drop_q4_0`` — demo tasks' mean acc_norm (hellaswag, arc_easy, piqa; ``--docs`` each)
  of our q4_0 scoring minus bf16, mean over sub-networks (positive: q4_0 is worse);
* ``engine_vs_torch_decode_speed`` — llama.cpp's decode tokens/s (f32 and q4_0 GGUF) over our
  bf16 torch decode, 1 thread, CPU time of the process (a shared CPU otherwise times the
  other jobs); ``engine_latency_ms`` per sub-network and format (prefill of ``--prompt``
  tokens, median of ``--repeats``), tagged with the device and the llama.cpp version;
* ``predictor_mape_engine`` — the per-device engine lookup table
  (:mod:`evaluators.engine_table`, built by :func:`nas.export.engine_table.build_engine_table`
  as ``nas supernet engine-table`` does: per format and layer variant of the demo space, a
  stack of blocks timed in llama.cpp, calibrated on 4 other whole sub-networks) predicting
  the prefill of the 5 sub-networks above in each format, held out of its fit and timed in
  the same rounds as its stacks (at the start of the run): MAPE over the 15 (``predictor_mape_engine_by_format``,
  the table's own leave-one-out ``predictor_loo_mape_engine``); for comparison
  ``predictor_mape_engine_flops_line``, the earlier per-format line in matmul FLOPs
  (leave-one-out over the 5);
* ``study`` — a search over sub-network x {bf16, q8_0, q4_0} (held-out loss on wikitext vs
  weight memory, ``--trials`` trials): ``front_size``, ``front_quantised`` and where the
  mixed front beats both the bf16-only front and quantising the full model
  (``mixed_better_budgets_mb``: weight-memory budgets at which its best loss is lower than
  both, or it alone has a model that fits; ``mixed_better_where_both_others_fit_mb``: the
  budgets at which both others have a model and the mixed front's is still better);
* ``engine_study`` — the same search space and formats (f32, q8_0, q4_0) on (held-out loss,
  ``predicted_engine_latency_ms``) with the engine table above: ``front_size`` and the
  formats on its front; ``full_model_engine_latency_ms``: the full model's measured and
  predicted llama.cpp prefill per format.

    .venv/bin/python bench/deploy.py [--supernet work/smollm2] [--docs 50] [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.cost import cost_breakdown, quant_weight_bytes  # noqa: E402
from evaluators.engine_table import ENGINE_TABLE_FILE  # noqa: E402
from evaluators.heldout import HeldOutLoss  # noqa: E402
from evaluators.latency import LatencySetup, measure_latency  # noqa: E402
from evaluators.scorer import build_scorers  # noqa: E402
from nas.export import ExportSource  # noqa: E402
from nas.export.engine import engine_latency, engine_version, verify_gguf  # noqa: E402
from nas.export.engine_table import EngineTableOptions, build_engine_table, calibration_subnets  # noqa: E402
from nas.export.gguf import export_gguf  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.fakequant import fake_quantized  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.pareto import as_minimization, non_dominated_mask  # noqa: E402
from nas.search.quant import quant_scorers  # noqa: E402
from nas.search.spec import parse_spec  # noqa: E402
from nas.search.study import open_search  # noqa: E402

DEMO_SPACE = {"n_layer_choices": [20, 22, 24, 26, 28, 30], "n_head_choices": [6, 9], "d_ff_choices": [768, 1152, 1536]}
TASKS = ("hellaswag", "arc_easy", "piqa")
FORMATS = ("f32", "q8_0", "q4_0")


def spread_subnets(rank: tuple[int, ...], n_layer: int) -> list[SubnetConfig]:
    """5 sub-networks from the full model to the demo space's smallest corner (depth by rank)."""
    def sub(depth: int, heads: list[int], d_ff: list[int]) -> SubnetConfig:
        kept = tuple(sorted(rank[:depth]))
        return SubnetConfig(layers=kept, n_head=tuple(heads[i % len(heads)] for i in range(depth)),
                            d_ff=tuple(d_ff[i % len(d_ff)] for i in range(depth)), d_model=576)
    return [sub(n_layer, [9], [1536]), sub(28, [9], [1536, 1152]), sub(26, [9, 6], [1152]),
            sub(24, [9, 6], [1152, 768]), sub(20, [6], [768])]


def mean_acc(scores: tuple) -> float:
    return statistics.fmean(s.value for s in scores if s.metric == "acc_norm")


def best_under(points: list[tuple[float, float]], budget: float) -> float:
    """Lowest loss among (loss, bytes) points within ``budget`` bytes (inf when none fits)."""
    return min((loss for loss, b in points if b <= budget), default=float("inf"))


def run_study(supernet: Path, loaded, trials: int, work: Path) -> dict:  # noqa: ANN001
    """A search over sub-network x weight format; fronts against bf16-only and full-model quantisation."""
    spec = parse_spec({
        "name": "deploy-bench", "supernet": str(supernet), "space": DEMO_SPACE, "storage": f"sqlite:///{work / 'nas.db'}",
        "tasks": [{"name": "heldout_loss", "n_examples": 8, "seq_len": 64, "source": "wikitext"}],
        "objectives": ["heldout_loss", "weight_memory_bytes"], "quant_choices": ["bf16", "q8_0", "q4_0"],
        "sampler": {"name": "nsga2", "population_size": 8}, "budget": {"n_trials": trials}, "seed": 0,
        "dtype": "fp32", "confirmation": None,
    })
    search = open_search(spec, loaded=loaded)
    search.optimize()
    points: list[tuple[SubnetConfig, float, float]] = []
    for t in search.study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE" and t.values:
            points.append((t.user_attrs["subnet"], float(t.values[0]), float(t.values[1])))
    # quantising the full model only: the full sub-network at each format, same scorer settings
    tok = loaded.load_tokenizer()
    full = loaded.model.full_subnet()
    full_points = []
    for q in ("bf16", "q8_0", "q4_0"):
        scorer = HeldOutLoss(fake_quantized(loaded.model, q), n_examples=8, seq_len=64, source="wikitext", tokenizer=tok,
                             seed=0, batch_size=16)
        loss = scorer.evaluate(full, search.spec.top).scores[0].value
        full_points.append((float(loss), float(quant_weight_bytes(loaded.config, full, q))))
    mixed = [(loss, b) for _, loss, b in points] + full_points
    bf16_only = [(loss, b) for s, loss, b in points if s.endswith("bf16")]
    mask = non_dominated_mask(as_minimization([list(p) for p in mixed], ["minimize", "minimize"]))
    front = [p for p, keep in zip(mixed, mask) if keep]
    labels = [s for s, _, _ in points] + [f"full {q}" for q in ("bf16", "q8_0", "q4_0")]
    front_labels = [lab for lab, keep in zip(labels, mask) if keep]
    budgets = sorted({b for _, b in mixed})
    better = [b for b in budgets if best_under(mixed, b) < min(best_under(bf16_only, b), best_under(full_points, b))]
    # of those, the budgets where the other two fronts have a model at all (not just "only the mixed one fits")
    contested = [b for b in better if max(best_under(bf16_only, b), best_under(full_points, b)) < float("inf")]
    return {
        "trials": len(points),
        "front_size": len(front),
        "front_quantised": sum(1 for lab in front_labels if lab.endswith(("q8_0", "q4_0"))),
        "front": [{"candidate": lab, "loss": round(loss, 4), "weight_mb": round(b / 1e6, 2)}
                  for lab, (loss, b) in sorted(zip(front_labels, front), key=lambda x: x[1][1])],
        "full_model_points": [{"quant": q, "loss": round(loss, 4), "weight_mb": round(b / 1e6, 2)}
                              for q, (loss, b) in zip(("bf16", "q8_0", "q4_0"), full_points)],
        "mixed_better_budgets_mb": [round(b / 1e6, 2) for b in better],
        "mixed_better_range_mb": [round(min(better) / 1e6, 2), round(max(better) / 1e6, 2)] if better else None,
        "mixed_better_where_both_others_fit_mb": [round(b / 1e6, 2) for b in contested],
        "smallest_mb": {"mixed": round(min(b for _, b in mixed) / 1e6, 2),
                        "bf16_only": round(min((b for _, b in bf16_only), default=float("nan")) / 1e6, 2),
                        "full_model_quantised": round(min(b for _, b in full_points) / 1e6, 2)},
    }


def run_engine_study(supernet: Path, loaded, trials: int, work: Path, table, formats: tuple[str, ...]) -> dict:  # noqa: ANN001
    """A search over sub-network x weight format on (held-out loss, ``predicted_engine_latency_ms``),
    the spec option a user gets after ``nas supernet engine-table``, with the table built above."""
    home = work / "engine-work"
    home.mkdir(exist_ok=True)
    table.save(home / ENGINE_TABLE_FILE)
    before = os.environ.get("NAS_WORK_DIR")
    os.environ["NAS_WORK_DIR"] = str(home)  # where a study looks for this device's engine table
    try:
        spec = parse_spec({
            "name": "deploy-engine-bench", "supernet": str(supernet), "space": DEMO_SPACE,
            "storage": f"sqlite:///{work / 'nas.db'}",
            "tasks": [{"name": "heldout_loss", "n_examples": 8, "seq_len": 64, "source": "wikitext"}],
            "objectives": ["heldout_loss", "predicted_engine_latency_ms"], "quant_choices": list(formats),
            "sampler": {"name": "nsga2", "population_size": 8}, "budget": {"n_trials": trials}, "seed": 0,
            "dtype": "fp32", "confirmation": None,
        })
        search = open_search(spec, loaded=loaded)
        search.optimize()
    finally:
        if before is None:
            os.environ.pop("NAS_WORK_DIR", None)
        else:
            os.environ["NAS_WORK_DIR"] = before
    points = [(t.user_attrs["subnet"], float(t.values[0]), float(t.values[1]))
              for t in search.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    mask = non_dominated_mask(as_minimization([[loss, ms] for _, loss, ms in points], ["minimize", "minimize"]))
    front = sorted((p for p, keep in zip(points, mask) if keep), key=lambda p: p[2])
    fmt_of = {f: sum(1 for lab, _, _ in front if lab.endswith(f)) for f in formats}
    return {
        "trials": len(points), "front_size": len(front), "front_by_format": fmt_of,
        "front": [{"candidate": lab, "loss": round(loss, 4), "predicted_engine_latency_ms": round(ms, 2)} for lab, loss, ms in front],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", type=Path, default=Path("work/smollm2"))
    ap.add_argument("--docs", type=int, default=50, help="documents per demo task for acc_drop_q4_0")
    ap.add_argument("--trials", type=int, default=30, help="trials of the sub-network x quantisation study")
    ap.add_argument("--prompt", type=int, default=64, help="prefill tokens of engine_latency_ms")
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    start = time.time()
    loaded = load_supernet(args.supernet, dtype="fp32")
    tok = loaded.load_tokenizer()
    model = loaded.model
    subnets = spread_subnets(model.layer_rank, model.config.n_layer)
    # the engine lookup table first: the demo space's layer variants in each format, calibrated on 4 other
    # whole sub-networks; the 5 sub-networks are held out of its fit and timed in the same rounds as its stacks
    space = SearchSpace.from_dict(DEMO_SPACE, model.config, model.layer_rank)
    table = build_engine_table(loaded, space, FORMATS, options=EngineTableOptions(prompt_len=args.prompt, repeats=args.repeats),
                               calibrate_on=calibration_subnets(space, 4, exclude=subnets), check_on=subnets)
    print(json.dumps({"progress": "engine table", "build_s": round(table.build_s, 1), "loo_mape": table.loo_mape,
                      "check_mape": table.check_mape}), file=sys.stderr, flush=True)
    fake = {q: fake_quantized(model, q) for q in ("q8_0", "q4_0")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        work = Path(tmp)
        for i, subnet in enumerate(subnets):
            src = ExportSource(study="deploy-bench", trial=i, subnet=subnet, supernet_hash=loaded.content_hash,
                               supernet_path=str(args.supernet), fidelity=None, spec={})
            row: dict = {"subnet": subnet.summary(), "params": model.num_params(subnet)}
            for q in FORMATS:
                exp = export_gguf(src, work / f"s{i}", quant=q, supernet=loaded)
                rep = verify_gguf(exp.file, model, subnet, quant=q, tokenizer=tok, fake_quant=fake.get(q))
                lat = engine_latency(exp.file, prompt_len=args.prompt, decode_tokens=args.decode, repeats=args.repeats,
                                     n_threads=1, clock="process")
                row[q] = {"file_mb": round(exp.file_bytes / 1e6, 2), "architecture": exp.architecture,
                          "logprob_max_abs_diff": rep.logprob_max_abs_diff, "kl": rep.kl_mean, "top1": rep.top1_agree,
                          "greedy_identical": rep.greedy_identical, "kl_vs_fake_quant": rep.kl_vs_fake_quant,
                          "top1_vs_fake_quant": rep.top1_vs_fake_quant, "engine_latency_ms": round(lat.prefill_ms, 3),
                          "engine_decode_tokens_per_s": round(lat.decode_tokens_per_s, 2)}
                (exp.file).unlink()
            ours = measure_latency(model, subnet, setup=LatencySetup(prompt_len=args.prompt, dtype="bf16", threads=1,
                                                                     clock="process"), decode_tokens=args.decode,
                                   repeats=args.repeats)
            row["torch_bf16_decode_tokens_per_s"] = round(ours.values["decode_tokens_per_s"].value, 2)
            row["torch_bf16_prefill_ms"] = round(ours.values["prefill_latency_ms"].value, 3)
            rows.append(row)
            print(json.dumps({"progress": i, **row}), file=sys.stderr, flush=True)
        device = lat.device

        # accuracy: our q4_0 scoring vs bf16 on the demo's tasks
        spec = parse_spec({"name": "deploy-acc", "supernet": str(args.supernet), "dtype": "bf16", "budget": 1,
                           "tasks": [{"name": t, "metric": "acc_norm"} for t in TASKS], "fidelities": [args.docs],
                           "confirmation": None})
        bf16 = load_supernet(args.supernet, dtype="bf16")
        scorers = quant_scorers(("q4_0",), bf16, lambda sn: build_scorers(spec, sn))
        acc = []
        for subnet in subnets:
            a = {}
            for q in ("", "q4_0"):
                s = SubnetConfig(**{**subnet.__dict__, "quant": q})
                a[q or "bf16"] = mean_acc(tuple(x for sc in scorers for x in sc.evaluate(s, spec.top).scores))
            acc.append(a)
        study = run_study(args.supernet.resolve(), loaded, args.trials, work)
        engine_study = run_engine_study(args.supernet.resolve(), loaded, args.trials, work, table, FORMATS)

    def mean(key: str, q: str) -> float:
        return statistics.fmean(r[q][key] for r in rows)

    loo = []
    for q in FORMATS:  # leave-one-out: prefill ms = a + b * matmul FLOPs of the prompt, per format
        x = np.array([cost_breakdown(model.config, s).flops_per_token * args.prompt for s in subnets], dtype=float)
        y = np.array([r[q]["engine_latency_ms"] for r in rows])
        for k in range(len(x)):
            keep = np.arange(len(x)) != k
            coef = np.polyfit(x[keep], y[keep], 1)
            loo.append(abs(np.polyval(coef, x[k]) - y[k]) / y[k])
    result = {
        "supernet": str(args.supernet), "engine": engine_version(), "device": device,
        "logprob_max_abs_diff_f32": max(r["f32"]["logprob_max_abs_diff"] for r in rows),
        "greedy_identical_f32": all(r["f32"]["greedy_identical"] for r in rows),
        "kl_q8_0": mean("kl", "q8_0"), "kl_q4_0": mean("kl", "q4_0"), "top1_agree_q4_0": mean("top1", "q4_0"),
        "kl_vs_fake_quant_q8_0": mean("kl_vs_fake_quant", "q8_0"), "kl_vs_fake_quant_q4_0": mean("kl_vs_fake_quant", "q4_0"),
        "top1_vs_fake_quant_q4_0": mean("top1_vs_fake_quant", "q4_0"),
        "acc_drop_q4_0": statistics.fmean(a["bf16"] - a["q4_0"] for a in acc),
        "acc": [{"subnet": s.summary(), **{k: round(v, 4) for k, v in a.items()}} for s, a in zip(subnets, acc)],
        "acc_docs_per_task": args.docs,
        "engine_vs_torch_decode_speed": {q: statistics.fmean(r[q]["engine_decode_tokens_per_s"] / r["torch_bf16_decode_tokens_per_s"]
                                                             for r in rows) for q in ("f32", "q4_0")},
        "predictor_mape_engine": table.check_mape,
        "predictor_mape_engine_by_format": {
            q: statistics.fmean(abs(c["predicted_ms"] - c["measured_ms"]) / c["measured_ms"] for c in table.checks
                                if c["quant"] == q) for q in FORMATS},
        "predictor_loo_mape_engine": table.loo_mape,
        "predictor": (f"per-device engine lookup table: per format and layer variant ({len(table.layer_ms[FORMATS[0]])} "
                      f"variants), stacks of {table.stack_depth} blocks timed in llama.cpp, a line per format calibrated "
                      f"on {len(table.calibration) // len(FORMATS)} other sub-networks; MAPE on the 5 held out"),
        "engine_table": {"fingerprint": table.fingerprint, "build_s": round(table.build_s, 1), "checks": table.checks,
                         "calibration": table.calibration, "line": table.line},
        "predictor_mape_engine_flops_line": float(np.mean(loo)),
        "subnets": rows,
        "study": study,
        "engine_study": engine_study,
        "full_model_engine_latency_ms": {q: {"measured": rows[0][q]["engine_latency_ms"],
                                             "predicted": round(table.predict(subnets[0], q), 3)} for q in FORMATS},
        "seconds": round(time.time() - start, 1),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
