"""ERNIE 5's elastic-training ablation at our scale: does one run give many models?

Trains a small MoE decoder from scratch on the Gutenberg novels, every run for the same
steps, batch, sequence length, seed and so the same tokens in the same order:

* **baseline** — no elasticity (the full architecture alone, cross-entropy);
* **elastic** — ERNIE 5's schedule (``schedule: ernie``: depth full on 75% of the steps,
  all experts on 80%, the full top-k on 80%, else a smaller choice);
* **sandwich** — the same space with our sandwich rule (largest + smallest + one random
  arm per step, each learning the data);
* **standalone twins** — the reduced architectures trained from scratch: 3/4 depth, half
  the experts, top-k/2 and top-1.

Every model is scored by its next-token loss on the run's held-out split (text no run
trained on). Prints one JSON object: ``table`` (one row per axis: baseline, elastic at full
size, elastic reduced, its twin, the sandwich's, and ERNIE's own numbers — every loss also
as a change relative to the baseline), ``full_size_penalty`` (elastic full vs baseline),
``max_gap_to_twin`` (worst reduced sub-model vs its twin), ``family_cost_ratio`` (training
FLOPs of the elastic run / of the baseline plus the twins trained separately), ``spread``
(the elastic top-1 sub-model vs its full size: evidence that the model is trained enough for
sub-models to differ), each comparison's 95% interval (``*_ci95``: the relative change's,
paired over the same held-out windows, so the noise of the text cancels), ``sandwich_rule`` (the
same four figures for the sandwich run, each variant's with its ``goals_met``), ``goals``,
``runs_meeting_all_goals`` (the runs, of ERNIE's schedule or a variant, whose four figures all
meet the goals by their point estimates), ``runs_meeting_all_goals_by_interval`` (those whose
every interval lies on its goal's side) and ``runs`` (steps, tokens, FLOPs, seconds per run).

``--distill W`` (repeatable) adds a run of ERNIE's schedule whose reduced steps also learn the
full sub-network's distribution (``ernie.distill``: W x KL + (1 - W) x cross-entropy); its four
figures go to ``ernie_distilled``, its reduced losses to the table's rows. ``--lean-sandwich``
adds the sandwich rule without its random arm (the largest and the smallest sub-network each
step), reported as ``sandwich_lean``; ``--no-smallest`` the sandwich without its smallest arm
(the largest and one random sub-network), reported as ``sandwich_no_smallest``.

``--train-full W`` (repeatable) adds ERNIE's schedule with the full sub-network trained on every
step (``ernie.train_full``: the sandwich's largest arm on ERNIE's draws, the same draws as the
elastic run), its reduced arm learning W x KL to the full arm's distribution + (1 - W) x
cross-entropy (W 0: the data alone, ``ernie.distill`` off); reported in ``ernie_train_full``.

``--per-axis`` adds ERNIE's own ablation design: one run of ERNIE's schedule per axis, elastic in
that axis alone (the others at their full value on every step), so the full model trains on
75 % (depth) or 80 % (experts, top-k) of the steps instead of the 48 % of the run elastic in all
three. Reported in ``ernie_per_axis``: each run's full-size penalty, its reduced sub-models'
gaps to their twins, and its cost against the baseline plus that axis' twins; the rows of
``table`` gain ``elastic_axis_only``. Three runs are not one run: the summary's cost ratio
is the three runs' FLOPs against the whole family.

    .venv/bin/python bench/ernie_ablation.py --jobs 2   # the full ablation (see README, "Does one run give many models?")
    .venv/bin/python bench/ernie_ablation.py --jobs 2 --distill 1 --distill 0.5 --lean-sandwich   # and three variants
    .venv/bin/python bench/ernie_ablation.py --jobs 2 --per-axis   # and ERNIE's per-axis design (three more runs)
    .venv/bin/python bench/ernie_ablation.py --jobs 2 --train-full 1   # and the run that met the goals (README)
    .venv/bin/python bench/ernie_ablation.py --quick    # a smoke check on a tiny model (seconds; not evidence)
    .venv/bin/python bench/ernie_ablation.py --curve 3000 --curve-runs elastic,baseline --jobs 2   # both runs at once: the curve

``--curve STEPS`` asks how long the model must train before its sub-models differ: the
elastic run (and the baseline) trained for STEPS steps, a checkpoint kept every STEPS/10,
and at each the spread (top-1 vs full) and the full-size penalty (vs the baseline at the
same step), with their paired intervals. Training runs in ``--dtype`` (default fp32: at this
size bf16 trains about 2x slower on a CPU with avx512_bf16; auto: bf16 where the CPU computes
it natively), which is part of a finished run's key.

The full sizes (8 layers, d_model 64, 16 experts of width 64, top-4; 3,000 steps of 16 x 128
tokens, 6.1M tokens per run): d_model 128 trained for 600 steps left every sub-model within
1.3% of the full one (and 2.3% after 3,000 steps), no evidence; at d_model 64 the same 3,000
steps take about 11 minutes a run at one thread and the top-1 sub-model ends 3% behind the
full one. ``--jobs 2`` trains two runs at a time (see README for the measured wall time).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nas.model.config import SupernetConfig  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.precision import resolve_dtype  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402
from nas.model.tokenizer import eos_id, load_tokenizer  # noqa: E402
from nas.paths import work_dir  # noqa: E402
from nas.training import TrainConfig, parse_train_config, train, window_losses  # noqa: E402
from nas.training.checkpoints import list_checkpoints, load_checkpoint  # noqa: E402
from nas.training.data import eval_windows, load_tokens, split_tokens  # noqa: E402

#: ERNIE 5's ablation (arXiv 2602.04705 §6.4.2; 64 experts, top-8, 16 layers, 250B tokens): validation loss
ERNIE = {
    "depth": {"baseline": 1.945, "full": 1.941, "reduced": {"12 of 16 layers": 2.137}},
    "experts": {"baseline": 1.957, "full": 1.964, "reduced": {"32 of 64 experts": 2.218}},
    "top_k": {"baseline": 1.945, "full": 1.969, "reduced": {"k=4": 1.971, "k=2": 2.003, "k=1": 2.175}},
}

#: sizes: the full benchmark, and a tiny smoke check
SIZES = {
    "full": dict(d_model=64, n_layer=8, n_head=4, n_kv_head=2, d_ff=64, n_expert=16, top_k=4,
                 steps=3000, batch_size=16, seq_len=128, vocab_size=2048, max_chars=8_000_000, eval_tokens=32_768),
    "quick": dict(d_model=32, n_layer=4, n_head=2, n_kv_head=1, d_ff=16, n_expert=4, top_k=2,
                  steps=30, batch_size=4, seq_len=32, vocab_size=512, max_chars=400_000, eval_tokens=2_048),
}


def _rel(value: float, reference: float) -> float:
    return round((value - reference) / reference, 4)


def _config(size: dict[str, Any], out: Path, *, model: dict[str, int], space: dict[str, Any],
            schedule: str = "sandwich", sandwich: dict[str, Any] | None = None, ernie: dict[str, Any] | None = None,
            keep_every: int = 0) -> TrainConfig:
    """One run's training config; ``keep_every``: keep a checkpoint every that many steps (a curve)."""
    checkpoints = {"checkpoint_every": keep_every, "keep_checkpoints": size["steps"] // keep_every + 1} if keep_every else {
        "checkpoint_every": 100}
    return parse_train_config({
        "out": str(out), "seed": 0,
        "data": {"corpus": "corpus/gutenberg", "val_fraction": 0.02, "max_chars": size["max_chars"]},
        "tokenizer": {"vocab_size": size["vocab_size"], "train_chars": min(size["max_chars"], 3_000_000)},
        "model": {k: size[k] for k in ("d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "n_expert", "top_k")} | model,
        "space": {"tied": True, **space},
        "schedule": schedule, "ernie": ernie or {},
        "sandwich": {"n_random": 0, "aux_loss_weight": 0.01, "distill_weight": 0.0, "ce_weight": 1.0, **(sandwich or {})},
        "optim": {"lr": 3e-3, "warmup_fraction": 0.05},
        "steps": size["steps"], "batch_size": size["batch_size"], "seq_len": size["seq_len"],
        "dtype": size["dtype"], "eval_tokens": size["eval_tokens"], "log_every": 50, **checkpoints,
    }, source="bench/ernie_ablation.py")


def _train_once(name: str, cfg: TrainConfig, size: dict[str, Any], *, fresh: bool) -> dict[str, Any]:
    """Train one run, or reuse it: a finished run of the same sizes is read back, an interrupted one resumed."""
    done = Path(cfg.out) / "ablation_run.json"
    if not fresh and done.is_file():
        record = json.loads(done.read_text())
        if record.get("size") == size:
            print(f"{name}: finished earlier, reused ({done})", file=sys.stderr)
            return record["info"]
    resume = "latest" if not fresh and list_checkpoints(cfg.out) else None
    print(f"{name}: {'resuming' if resume else 'training'} ({cfg.total_steps()} steps)", file=sys.stderr)
    result = train(cfg, resume=resume, fresh=resume is None)
    info = {"steps": result.steps, "tokens": result.tokens, "train_flops": result.train_flops,
            "seconds": round(result.wall_time_s, 1)}
    done.write_text(json.dumps({"size": size, "info": info}))
    return info


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _train_all(runs: dict[str, TrainConfig], size: dict[str, Any], *, fresh: bool, jobs: int,
               threads: int) -> dict[str, dict[str, Any]]:
    """Train (or reuse) every run; ``jobs`` > 1 trains that many at once, each in its own process
    with ``threads`` threads, the costliest runs (most arms a step, then most FLOPs) first."""
    if jobs <= 1:
        return {name: _train_once(name, cfg, size, fresh=fresh) for name, cfg in runs.items()}
    order = sorted(runs, key=lambda n: (runs[n].sandwich.n_random, runs[n].model.n_layer * runs[n].model.top_k),
                   reverse=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {name: pool.submit(_train_once, name, runs[name], size, fresh=fresh) for name in order}
        return {name: futures[name].result() for name in runs}


def _fixed_space(model: dict[str, int]) -> dict[str, Any]:
    """A space of one sub-network: the architecture itself (no elasticity)."""
    return {"n_layer_choices": [model["n_layer"]], "n_head_choices": [model["n_head"]], "d_ff_choices": [model["d_ff"]],
            "n_expert_choices": [model["n_expert"]], "top_k_choices": [model["top_k"]]}


def _model(size: dict[str, Any]) -> dict[str, int]:
    return {k: size[k] for k in ("d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "n_expert", "top_k")}


def _elastic_space(size: dict[str, Any]) -> dict[str, Any]:
    """ERNIE's three axes: 3/4 depth, half the experts, top-k/2 and top-1."""
    L, E, K = size["n_layer"], size["n_expert"], size["top_k"]
    top_ks = sorted({max(1, K // 2), 1, K})
    return {"n_layer_choices": [(3 * L) // 4, L], "n_head_choices": [size["n_head"]], "d_ff_choices": [size["d_ff"]],
            "n_expert_choices": [E // 2, E], "top_k_choices": top_ks}


#: the ERNIE axes and the space key each varies
AXES = {"depth": "n_layer", "experts": "n_expert", "top_k": "top_k"}


def _axis_space(size: dict[str, Any], axis: str) -> dict[str, Any]:
    """The space of ERNIE's per-axis ablation: elastic in ``axis`` alone, every other axis fixed
    at its full value (so the schedule draws only that axis)."""
    key = AXES[axis]
    return _fixed_space(_model(size)) | {f"{key}_choices": _elastic_space(size)[f"{key}_choices"]}


def _held_out(cfg: TrainConfig, size: dict[str, Any]) -> torch.Tensor:
    """The held-out windows every run is scored on (same corpus, tokenizer and split for all)."""
    tokenizer = load_tokenizer(Path(cfg.out) / "tokenizer")
    stream, _ = load_tokens(cfg.data.spec(), tokenizer, cache_dir=work_dir() / "cache", eos=eos_id(tokenizer))
    _, val = split_tokens(stream, val_fraction=cfg.data.val_fraction, seq_len=cfg.seq_len)
    return eval_windows(val, cfg.seq_len, size["eval_tokens"])


def _paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, list[float]]:
    """(mean a - mean b) / mean b and its 95% interval, paired over the same windows."""
    diff, ref = a - b, float(b.mean())
    half = 1.96 * float(diff.std(unbiased=True)) / len(diff) ** 0.5
    return (round(float(diff.mean()) / ref, 4),
            [round((float(diff.mean()) - half) / ref, 4), round((float(diff.mean()) + half) / ref, 4)])


def curve(args: argparse.Namespace, size: dict[str, Any], root: Path) -> dict[str, Any]:
    """Train the elastic run (and the baseline) for ``--curve`` steps keeping checkpoints, then
    score each checkpoint's full model and its top-1 sub-model on the held-out windows:
    ``spread`` (top-1 vs full) and ``full_size_penalty`` (elastic vs baseline at the same
    step) against tokens. A checkpoint is mid-run (its learning rate not yet decayed), so a
    point is what training that long as part of the longer run gives, not a finished run
    of that length."""
    start = time.perf_counter()
    size = size | {"steps": args.curve}
    every = max(1, args.curve // max(1, args.curve_points))
    full = _model(size)
    names = [n.strip() for n in args.curve_runs.split(",") if n.strip()]
    if not names or set(names) - {"elastic", "baseline"}:
        raise SystemExit(f"--curve-runs {args.curve_runs!r}: give elastic, baseline or elastic,baseline")
    runs: dict[str, TrainConfig] = {}
    if "elastic" in names:
        runs["elastic"] = _config(size, root / "elastic", model={}, space=_elastic_space(size), schedule="ernie", keep_every=every)
    if "baseline" in names:
        runs["baseline"] = _config(size, root / "baseline", model={}, space=_fixed_space(full), keep_every=every)
    info = _train_all(runs, size, fresh=args.fresh, jobs=args.jobs, threads=args.threads)
    if "elastic" not in runs:  # training only (e.g. the baseline in a second process); a later run scores both
        print(json.dumps({"runs": info, "steps": args.curve, "dtype": size["dtype"]}, indent=1))
        return {"runs": info}
    windows = _held_out(runs["elastic"], size)
    L = full["n_layer"]
    dense = dict(layers=tuple(range(L)), n_head=(full["n_head"],) * L, d_ff=(full["d_ff"],) * L, d_model=full["d_model"],
                 n_expert=(full["n_expert"],) * L)
    widest, top1 = SubnetConfig(**dense, top_k=(full["top_k"],) * L), SubnetConfig(**dense, top_k=(1,) * L)

    def losses(path: Path, *subnets: SubnetConfig) -> tuple[int, int, list[torch.Tensor]]:
        """A checkpoint's step, tokens and per-window losses of each of ``subnets`` (loaded once)."""
        state = load_checkpoint(path)
        model = Supernet(SupernetConfig.from_dict(state["supernet_config"]), layer_rank=state["layer_rank"])
        model.load_state_dict(state["model"])
        return int(state["step"]), int(state["tokens"]), [
            window_losses(model, windows, subnet, batch_size=16, dtype=size["dtype"]) for subnet in subnets]

    base = {}
    if "baseline" in runs:
        for path in list_checkpoints(runs["baseline"].out):
            step, _, (value,) = losses(path, widest)
            base[step] = value
    points = []
    for path in list_checkpoints(runs["elastic"].out):
        step, tokens, (el_full, el_top1) = losses(path, widest, top1)
        spread, spread_ci = _paired(el_top1, el_full)
        point = {"step": step, "tokens": tokens, "elastic_full": round(float(el_full.mean()), 4),
                 "elastic_top1": round(float(el_top1.mean()), 4), "spread": spread, "spread_ci95": spread_ci}
        if step in base:
            penalty, penalty_ci = _paired(el_full, base[step])
            point |= {"baseline": round(float(base[step].mean()), 4), "full_size_penalty": penalty,
                      "full_size_penalty_ci95": penalty_ci}
        points.append(point)
        print(json.dumps(point), file=sys.stderr)
    first = next((p for p in points if p["spread"] >= 0.03), None)
    report = {"curve": points, "steps": args.curve, "model": full, "space": _elastic_space(size), "dtype": size["dtype"],
              "tokens_per_step": size["batch_size"] * size["seq_len"], "eval_windows": int(windows.shape[0]),
              "first_tokens_with_spread>=0.03": first["tokens"] if first else None, "runs": info, "threads": args.threads,
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report, indent=1))
    return report


def _goals(figures: dict[str, Any], *, by_interval: bool = False) -> dict[str, bool]:
    """The issue's four goals, by their point estimates; ``by_interval``: by the whole 95%
    interval (its far end on the goal's side of the bar; the cost ratio has no noise)."""
    penalty, gap, spread = (figures[k] for k in ("full_size_penalty", "max_gap_to_twin", "spread"))
    if by_interval:
        penalty, gap, spread = (figures["full_size_penalty_ci95"][1], figures["max_gap_to_twin_ci95"][1],
                                figures["spread_ci95"][0])
    return {"full_size_penalty<=0.015": penalty <= 0.015, "max_gap_to_twin<=0.03": gap <= 0.03,
            "family_cost_ratio<=0.5": figures["family_cost_ratio"] <= 0.5, "spread>=0.03": spread >= 0.03}


def _overrides(pairs: list[str], size: dict[str, Any]) -> dict[str, int]:
    """``--set KEY=N`` pairs as sizes; a bad one exits naming it and the keys there are."""
    keys = [k for k in size if k not in ("max_chars", "dtype")]
    changed: dict[str, int] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in keys or not value.strip().isdigit() or int(value) < 1:
            raise SystemExit(f"--set {pair!r}: give KEY=N with N a positive integer and KEY one of {', '.join(keys)}")
        changed[key] = int(value)
    model = {**size, **changed}
    if model["top_k"] > model["n_expert"] // 2:
        raise SystemExit(f"--set: top_k {model['top_k']} is above half the experts ({model['n_expert']} // 2), "
                         "the reduced expert choice it must fit in")
    return changed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke check (under 2 minutes), not evidence")
    parser.add_argument("--steps", type=int, default=None, help="override the steps of every run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, per job (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs (of the table, or of --curve) at once, one process each (default: %(default)s; "
                             "2 on a 2-core machine with --threads 1)")
    parser.add_argument("--fresh", action="store_true", help="retrain every run (default: reuse finished runs, resume interrupted ones)")
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (default: WORK/bench/ernie_ablation)")
    parser.add_argument("--dtype", default="fp32", choices=("auto", "bf16", "fp32"),
                        help="training and scoring dtype (default: %(default)s: at this model's size bf16 trains about 2x "
                             "slower on a CPU with avx512_bf16; auto: bf16 where the CPU computes it natively)")
    parser.add_argument("--lean-sandwich", action="store_true",
                        help="also train the sandwich rule without its random arm (the largest and the smallest sub-network "
                             "a step); reported as sandwich_lean")
    parser.add_argument("--no-smallest", action="store_true",
                        help="also train the sandwich rule without its smallest arm (the largest and one random sub-network "
                             "a step); reported as sandwich_no_smallest")
    parser.add_argument("--distill", type=float, action="append", default=[], metavar="W",
                        help="also train ERNIE's schedule with distilled reduced steps (ernie.distill): each reduced step "
                             "learns W x KL to the full model's distribution + (1 - W) x the data's cross-entropy; "
                             "reported in ernie_distilled (repeatable: one run per W)")
    parser.add_argument("--train-full", type=float, action="append", default=[], metavar="W",
                        help="also train ERNIE's schedule with the full sub-network trained on every step (ernie.train_full), "
                             "the reduced arm learning W x KL to it + (1 - W) x cross-entropy (0: the data alone); reported "
                             "in ernie_train_full (repeatable: one run per W)")
    parser.add_argument("--per-axis", action="store_true",
                        help="also train ERNIE's schedule once per axis, elastic in that axis alone (ERNIE's own ablation "
                             "design); reported as ernie_per_axis and in the table's rows as elastic_axis_only")
    parser.add_argument("--curve", type=int, default=0, metavar="STEPS",
                        help="instead of the table: train the elastic run for STEPS steps, keep a checkpoint every "
                             "STEPS/--curve-points, and print the spread (and, with --curve-runs elastic,baseline, the "
                             "full-size penalty) at each: how many tokens the model needs before sub-models differ")
    parser.add_argument("--curve-runs", default="elastic", help="runs of the curve: elastic, or elastic,baseline; baseline alone only trains it, so that "
                             "two processes can train the two runs side by side (default: %(default)s)")
    parser.add_argument("--curve-points", type=int, default=10, help="checkpoints along the curve (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=N", dest="overrides",
                        help="change one size of the model or the runs, e.g. --set d_ff=128 (repeatable; keys: "
                             + ", ".join(k for k in SIZES["full"] if k not in ("max_chars",)) + "); its runs get their own folder")
    args = parser.parse_args(argv)
    for option, weights in (("--distill", args.distill), ("--train-full", args.train_full)):
        for w in weights:
            if not 0.0 <= w <= 1.0:
                raise SystemExit(f"{option} {w}: give the weight of the KL term, within [0, 1]")
    args.distill = list(dict.fromkeys(args.distill))  # one run per weight
    args.train_full = list(dict.fromkeys(args.train_full))
    if args.curve and (args.distill or args.train_full or args.lean_sandwich or args.no_smallest or args.per_axis):
        raise SystemExit("--distill, --train-full, --lean-sandwich, --no-smallest and --per-axis add runs to the table; --curve "
                         "trains the elastic run and the baseline only: run them without --curve")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    size = dict(SIZES["quick" if args.quick else "full"])
    size["dtype"] = resolve_dtype(args.dtype, "cpu")  # part of the size: a finished run is reused only in its own dtype
    if args.steps:
        size["steps"] = args.steps
    changed = _overrides(args.overrides, size)
    size |= changed
    root = args.out or work_dir() / "bench" / ("ernie_ablation_quick" if args.quick else "ernie_ablation")
    if changed:  # a run of other sizes never resumes or reuses this one's checkpoints
        root = root / "_".join(f"{k}{v}" for k, v in sorted(changed.items()))
    if args.curve:
        return curve(args, size, root / f"curve_{args.curve}")

    full, elastic_space = _model(size), _elastic_space(size)
    E, K = full["n_expert"], full["top_k"]
    # the reduced values of each axis (the twins' architectures) are the space's other choices
    depth, experts = elastic_space["n_layer_choices"][0], elastic_space["n_expert_choices"][0]
    top_ks = sorted(set(elastic_space["top_k_choices"]) - {K}, reverse=True)
    twins = {"depth": {"n_layer": depth}, "experts": {"n_expert": experts}} | {f"top_k={k}": {"top_k": k} for k in top_ks}

    runs: dict[str, TrainConfig] = {
        "baseline": _config(size, root / "baseline", model={}, space=_fixed_space(full)),
        "elastic": _config(size, root / "elastic", model={}, space=elastic_space, schedule="ernie"),
        "sandwich": _config(size, root / "sandwich", model={}, space=elastic_space, sandwich={"n_random": 1}),
    }
    if args.lean_sandwich:  # the sandwich without its random arm: the largest and the smallest sub-network a step
        runs["sandwich lean"] = _config(size, root / "sandwich_lean", model={}, space=elastic_space, sandwich={"n_random": 0})
    if args.no_smallest:  # the sandwich without its smallest arm: the largest and one random sub-network a step
        runs["sandwich no smallest"] = _config(size, root / "sandwich_no_smallest", model={}, space=elastic_space,
                                               sandwich={"n_random": 1, "train_smallest": False})
    for w in args.distill:  # ERNIE's schedule whose reduced steps also learn the full model's distribution
        runs[f"elastic distilled {w:g}"] = _config(
            size, root / f"elastic_distilled_{w:g}", model={}, space=elastic_space, schedule="ernie",
            ernie={"distill": True}, sandwich={"distill_weight": w, "ce_weight": round(1.0 - w, 6)})
    for w in args.train_full:  # ERNIE's draws with the full sub-network trained on every step
        runs[f"elastic train_full {w:g}"] = _config(
            size, root / f"elastic_train_full_{w:g}", model={}, space=elastic_space, schedule="ernie",
            ernie={"train_full": True, "distill": w > 0}, sandwich={"distill_weight": w, "ce_weight": round(1.0 - w, 6)}
            if w > 0 else {})
    if args.per_axis:  # ERNIE's ablation design: one run per axis, elastic in that axis alone
        for axis in AXES:
            runs[f"elastic {axis} only"] = _config(size, root / f"elastic_{axis}_only", model={},
                                                   space=_axis_space(size, axis), schedule="ernie")
    for name, change in twins.items():
        runs[f"twin {name}"] = _config(size, root / f"twin_{name}", model=change, space=_fixed_space(full | change))

    info = _train_all(runs, size, fresh=args.fresh, jobs=args.jobs, threads=args.threads)

    # held-out windows of the shared split (every run has the same corpus, tokenizer and split)
    windows = _held_out(runs["baseline"], size)

    losses: dict[tuple[str, tuple], torch.Tensor] = {}

    def score(run: str, **change: int) -> float:
        """Held-out loss of a run's (sub-)network; its per-window losses are kept for the intervals."""
        key = (run, tuple(sorted(change.items())))
        if key not in losses:
            losses[key] = _window_losses(run, change)
        return round(float(losses[key].mean()), 4)

    def rel_ci(a: tuple[str, dict], b: tuple[str, dict]) -> list[float]:
        """95% interval of (loss a - loss b) / loss b, paired over the same held-out windows."""
        la, lb = (losses[(run, tuple(sorted(ch.items())))] for run, ch in (a, b))
        return _paired(la, lb)[1]

    def _window_losses(run: str, change: dict[str, int]) -> torch.Tensor:
        loaded = load_supernet(runs[run].out, dtype="fp32")
        sub = loaded.model.full_subnet()
        if change:
            n = change.get("n_layer", sub.n_layer)
            kept = loaded.space.kept_layers(n)
            e, k = change.get("n_expert", E), change.get("top_k", K)
            sub = SubnetConfig(layers=kept, n_head=(full["n_head"],) * n, d_ff=(full["d_ff"],) * n, d_model=full["d_model"],
                               n_expert=(e,) * n, top_k=(min(k, e),) * n)
        return window_losses(loaded.model, windows, sub, batch_size=16, dtype=size["dtype"])

    base = score("baseline")
    el_full, sw_full = score("elastic"), score("sandwich")
    distilled = [f"elastic distilled {w:g}" for w in args.distill]
    full_every_step = [f"elastic train_full {w:g}" for w in args.train_full]
    variants = ["sandwich", *(["sandwich lean"] if args.lean_sandwich else []),
                *(["sandwich no smallest"] if args.no_smallest else []), *distilled, *full_every_step]
    variant_gaps: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in variants}
    table, gaps, per_axis_gaps = [], [], []
    for axis, reductions in (("depth", {"n_layer": [depth]}), ("experts", {"n_expert": [experts]}), ("top_k", {"top_k": top_ks})):
        (dim, values), = reductions.items()
        reduced = {}
        for v in values:
            label = f"{dim}={v}"
            twin_name = "twin " + (axis if axis != "top_k" else f"top_k={v}")
            el, sw, tw = score("elastic", **{dim: v}), score("sandwich", **{dim: v}), score(twin_name)
            gaps.append((_rel(el, tw), rel_ci(("elastic", {dim: v}), (twin_name, {}))))
            for name in variants:  # each variant's gap to this twin, with its paired interval
                variant_gaps[name].append((_rel(score(name, **{dim: v}), tw), rel_ci((name, {dim: v}), (twin_name, {}))))
            reduced[label] = {"elastic": el, "elastic_rel": _rel(el, base), "twin": tw, "gap_to_twin": _rel(el, tw),
                              "gap_to_twin_ci95": rel_ci(("elastic", {dim: v}), (twin_name, {})),
                              "sandwich": sw, "sandwich_rel": _rel(sw, base)}
            for name in variants[1:]:  # the lean sandwich and the distilled runs: loss, gap, change against the elastic run
                ed = score(name, **{dim: v})
                reduced[label][name.replace(" ", "_")] = {
                    "loss": ed, "rel": _rel(ed, base), "gap_to_twin": _rel(ed, tw),
                    "gap_to_twin_ci95": rel_ci((name, {dim: v}), (twin_name, {})), "vs_elastic": _rel(ed, el), "vs_elastic_ci95": rel_ci((name, {dim: v}), ("elastic", {dim: v}))}
        if args.per_axis:  # the run elastic in this axis alone: its full size and its reduced sub-models
            own = f"elastic {axis} only"
            for v in values:
                label, tw = f"{dim}={v}", reduced[f"{dim}={v}"]["twin"]
                twin_name = "twin " + (axis if axis != "top_k" else f"top_k={v}")
                loss = score(own, **{dim: v})
                per_axis_gaps.append(_rel(loss, tw))
                reduced[label]["elastic_axis_only"] = {
                    "loss": loss, "rel": _rel(loss, base), "gap_to_twin": _rel(loss, tw),
                    "gap_to_twin_ci95": rel_ci((own, {dim: v}), (twin_name, {}))}
        ernie = ERNIE[axis]
        table.append({
            "axis": axis, "baseline": base, "elastic_full": el_full, "elastic_full_rel": _rel(el_full, base),
            "sandwich_full": sw_full, "sandwich_full_rel": _rel(sw_full, base), "reduced": reduced,
            **({"elastic_axis_only_full": score(f"elastic {axis} only"),
                "elastic_axis_only_full_rel": _rel(score(f"elastic {axis} only"), base)} if args.per_axis else {}),
            "ernie": {"full_rel": _rel(ernie["full"], ernie["baseline"]),
                      "reduced_rel": {k: _rel(v, ernie["baseline"]) for k, v in ernie["reduced"].items()}},
        })
    family = info["baseline"]["train_flops"] + sum(v["train_flops"] for k, v in info.items() if k.startswith("twin "))

    def _variant(name: str) -> dict[str, Any]:
        """A variant run's four figures (same space and tokens as the elastic run), with intervals."""
        full_loss = score(name)
        worst, worst_ci = max(variant_gaps[name], key=lambda g: g[0])
        figures = {"full_size_penalty": _rel(full_loss, base), "full_size_penalty_ci95": rel_ci((name, {}), ("baseline", {})),
                   "max_gap_to_twin": worst, "max_gap_to_twin_ci95": worst_ci,
                   "family_cost_ratio": round(info[name]["train_flops"] / family, 4),
                   "spread": _rel(score(name, top_k=1), full_loss), "spread_ci95": rel_ci((name, {"top_k": 1}), (name, {}))}
        return figures | {"goals_met": _goals(figures), "goals_met_by_interval": _goals(figures, by_interval=True)}
    def _per_axis() -> dict[str, Any]:
        """ERNIE's per-axis design: each run's penalty, gaps and cost against the baseline plus
        that axis' twins; the summary's cost is the three runs against the whole family."""
        out: dict[str, Any] = {}
        for row in table:
            axis, own = row["axis"], f"elastic {row['axis']} only"
            axis_twins = [k for k in info if k == f"twin {axis}" or (axis == "top_k" and k.startswith("twin top_k="))]
            axis_family = info["baseline"]["train_flops"] + sum(info[k]["train_flops"] for k in axis_twins)
            full_loss = score(own)
            out[axis] = {"full_size_penalty": _rel(full_loss, base),
                         "full_size_penalty_ci95": rel_ci((own, {}), ("baseline", {})),
                         "ernie_full_rel": row["ernie"]["full_rel"],
                         "gap_to_twin": {label: r["elastic_axis_only"]["gap_to_twin"] for label, r in row["reduced"].items()},
                         "cost_ratio_vs_axis_family": round(info[own]["train_flops"] / axis_family, 4)}
            if axis == "top_k":
                out[axis]["spread"] = _rel(score(own, top_k=1), full_loss)
        out["summary"] = {"max_full_size_penalty": max(v["full_size_penalty"] for v in out.values()),
                          "max_gap_to_twin": max(per_axis_gaps),
                          "three_runs_cost_ratio": round(sum(info[f"elastic {a} only"]["train_flops"] for a in AXES) / family, 4)}
        return out
    figures = {name: _variant(name) for name in variants}  # each variant's four figures, once
    report = {
        "table": table,
        "full_size_penalty": _rel(el_full, base),
        "full_size_penalty_ci95": rel_ci(("elastic", {}), ("baseline", {})),
        "max_gap_to_twin": max(gaps, key=lambda g: g[0])[0],
        "max_gap_to_twin_ci95": max(gaps, key=lambda g: g[0])[1],
        "family_cost_ratio": round(info["elastic"]["train_flops"] / family, 4),
        "spread": _rel(score("elastic", top_k=1), el_full),
        "spread_ci95": rel_ci(("elastic", {"top_k": 1}), ("elastic", {})),
        # the same four figures for the sandwich rule's run (same space, same tokens; more arms a step)
        # and, with --distill, for ERNIE's schedule with distilled reduced steps
        "sandwich_rule": figures["sandwich"],
        **({"sandwich_lean": figures["sandwich lean"]} if args.lean_sandwich else {}),
        **({"sandwich_no_smallest": figures["sandwich no smallest"]} if args.no_smallest else {}),
        **({"ernie_distilled": [{"distill_weight": w, **figures[f"elastic distilled {w:g}"],
                                 "full_vs_elastic": _rel(score(f"elastic distilled {w:g}"), el_full),
                                 "full_vs_elastic_ci95": rel_ci((f"elastic distilled {w:g}", {}), ("elastic", {}))}
                                for w in args.distill]} if args.distill else {}),
        **({"ernie_train_full": [{"distill_weight": w, **figures[f"elastic train_full {w:g}"],
                                  "full_vs_elastic": _rel(score(f"elastic train_full {w:g}"), el_full),
                                  "full_vs_elastic_ci95": rel_ci((f"elastic train_full {w:g}", {}), ("elastic", {}))}
                                 for w in args.train_full]} if args.train_full else {}),
        **({"ernie_per_axis": _per_axis()} if args.per_axis else {}),
        "quick": args.quick,
        "model": full,
        "space": elastic_space,
        "eval_tokens": int(windows[:, 1:].numel()),
        "eval_windows": int(windows.shape[0]),
        "runs": info,
        "threads": args.threads,
        "seconds": round(time.perf_counter() - start, 1),
    }
    report["goals"] = _goals(report)
    report["goals_by_interval"] = _goals(report, by_interval=True)
    # which runs of one elastic training meet all four goals: by their point estimates, and
    # with every interval on the goal's side
    met = {"elastic": (report["goals"], report["goals_by_interval"])} | {
        name: (v["goals_met"], v["goals_met_by_interval"]) for name, v in figures.items()}
    report["runs_meeting_all_goals"] = [name for name, (point, _) in met.items() if all(point.values())]
    report["runs_meeting_all_goals_by_interval"] = [name for name, (_, whole) in met.items() if all(whole.values())]
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
