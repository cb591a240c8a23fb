""""One run, many models": a once-for-all supernet vs standalone twins at equal token budget.

Default mode (from scratch; the first 10 M characters of the Gutenberg corpus; byte-level
BPE of 4096 tokens; supernet d_model 128, 6 layers, 4 heads / 2 KV heads, d_ff 512; tied
space n_layer {3..6} x n_head {2, 4} x d_ff {128..512}, 32 sub-networks):

1. train one supernet per ``--variants`` entry (default ``ps,ce``) for T tokens with the
   sandwich rule: the largest learns the data (CE), the smallest and ``n_random`` random
   sub-networks learn by in-place distillation from its detached logits (``kd``), or from
   the data like the largest (``ce``), or move from data to distillation over half the run
   (``ramp``); ``ps`` and ``ps_ramp`` are ``ce`` and ``ramp`` after a first quarter in
   which the largest trains alone (progressive shrinking);
2. train standalone dense models with the architectures of 3 of its sub-networks
   (smallest, middle — every elastic dim at its middle choice — and largest), each for
   the same T tokens with the same optimiser, schedule, batch order and seed, through the
   same training code (a one-member space);
3. report the held-out loss (the corpus's validation split, never trained on) of each
   extracted sub-network next to its standalone twin, and the training FLOPs and wall
   time of the one supernet run against the standalone runs.

The top-level figures are those of the first variant; ``variants`` holds all of them.
``cost_ratio_k3`` = supernet training FLOPs / the 3 standalone runs' FLOPs;
``cost_ratio_k10`` = supernet training FLOPs / the analytic FLOPs of training, for T
tokens each, 10 sub-networks whose parameter counts are spread evenly over the space's
range (training FLOPs per token = 3 x forward, see ``nas.training.train_flops_per_token``).

``--heal``: held-out loss of 3 tied sub-networks (smallest, every dim at its middle
choice, every dim 3/4 of the way up) of an imported SmolLM2 supernet before and after
``--heal-steps`` steps of elastic distillation from the frozen full model
(``heal_gain`` = loss before - loss after, per size).

Prints one JSON object (progress on stderr). Reproduce:

    .venv/bin/python bench/ofa_family.py --threads 1 > ofa_family.json   # ~13 min on one core (16 min with --variants ps,ce,ps_ramp)
    .venv/bin/python bench/ofa_family.py --heal --threads 1               # needs work/smollm2 (nas supernet import)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.model.directory import load_supernet  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.model.tokenizer import eos_id  # noqa: E402
from nas.paths import work_dir  # noqa: E402
from nas.training import TrainConfig, evaluate_loss, parse_train_config, train, train_flops_per_token  # noqa: E402
from nas.training.data import eval_windows, load_tokens, split_tokens  # noqa: E402

log = logging.getLogger("ofa_family")

SUPERNET = {"d_model": 128, "n_layer": 6, "n_head": 4, "n_kv_head": 2, "d_ff": 512}
SPACE = {"n_layer_choices": [3, 4, 5, 6], "n_head_choices": [2, 4], "d_ff_choices": [128, 256, 384, 512], "tied": True}


def _base(args: argparse.Namespace, out: Path, **changes: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "out": str(out),
        "seed": 0,
        "data": {"corpus": [args.corpus], "val_fraction": 0.01, "max_chars": args.max_chars},
        "tokenizer": {"vocab_size": args.vocab, "train_chars": args.max_chars},
        "optim": {"lr": args.lr, "warmup_fraction": 0.05, "schedule": "cosine", "min_lr_ratio": 0.1, "weight_decay": 0.1},
        "tokens": args.tokens,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "log_every": 25,
    }
    data.update(changes)
    return parse_train_config(data, source="bench")


def _val_windows(cfg: TrainConfig, tokenizer: Any, n_tokens: int) -> torch.Tensor:
    """The same validation split the trainer holds out (never trained on)."""
    stream, _ = load_tokens(cfg.data.spec(), tokenizer, cache_dir=work_dir() / "cache", eos=eos_id(tokenizer))
    _, val = split_tokens(stream, val_fraction=cfg.data.val_fraction, seq_len=cfg.seq_len)
    return eval_windows(val, cfg.seq_len, n_tokens)


def _pick(space: SearchSpace, fraction: float) -> SubnetConfig:
    """Every dim at the choice ``fraction`` of the way from its smallest to its largest (rounded half up)."""
    params = {}
    for name, choices in space.param_choices().items():
        params[name] = choices[min(len(choices) - 1, math.floor(fraction * (len(choices) - 1) + 0.5))]
    return space.from_params(params)


def _spread(space: SearchSpace, params: Any, k: int) -> list[SubnetConfig]:
    """``k`` sub-networks whose parameter counts are nearest ``k`` evenly spaced targets."""
    rng = random.Random(0)
    members = list(space.enumerate()) if space.size() <= 20_000 else [space.sample(rng) for _ in range(20_000)]
    lo, hi = params(space.smallest()), params(space.largest())
    picks = []
    for i in range(k):
        target = lo + (hi - lo) * i / (k - 1)
        picks.append(min(members, key=lambda s: (abs(params(s) - target), s.to_json())))
    return picks


def _standalone_config(sub: SubnetConfig, q_per_kv: int) -> tuple[dict[str, int], dict[str, Any]]:
    h, f = sub.n_head[0], sub.d_ff[0]
    model = {"d_model": sub.d_model, "n_layer": sub.n_layer, "n_head": h, "n_kv_head": h // q_per_kv, "d_ff": f,
             "head_dim": SUPERNET["d_model"] // SUPERNET["n_head"]}
    space = {"n_layer_choices": [sub.n_layer], "n_head_choices": [h], "d_ff_choices": [f], "tied": True}
    return model, space


# How the students (smallest + random arms) learn, per variant: "kd" is in-place distillation
# from the largest's detached logits (the OFA/BigNAS default); "ce" lets them learn the data
# like the largest (MatFormer-style joint training); "ramp" moves from ce to kd over half the run.
# "ps" and "ps_ramp" first train the largest alone for a quarter of the steps (OFA's
# progressive shrinking: the family grows out of a trained full model), then as "ce" / "ramp".
GROW_FIRST = {"stages": [{"until": 0.25, "elastic": []}, {"until": 1.0, "elastic": ["n_layer", "d_model", "n_head", "d_ff", "n_expert", "top_k"]}]}
STUDENT_LOSS = {
    "kd": {"distill_weight": 1.0, "ce_weight": 0.0},
    "ce": {"distill_weight": 0.0, "ce_weight": 1.0},
    "ramp": {"distill_weight": 1.0, "ce_weight": 0.0, "distill_ramp": 0.5},
    "ps": {"distill_weight": 0.0, "ce_weight": 1.0, **GROW_FIRST},
    "ps_ramp": {"distill_weight": 1.0, "ce_weight": 0.0, "distill_ramp": 0.5, **GROW_FIRST},
}


def run_scratch(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.work)
    t0 = time.perf_counter()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(STUDENT_LOSS))
    if unknown or not variants:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {sorted(STUDENT_LOSS)}")
    runs: dict[str, dict[str, Any]] = {}
    for variant in variants:
        cfg = _base(args, root / f"supernet_{variant}", model=SUPERNET, space=SPACE,
                    sandwich={"n_random": args.n_random, "temperature": 1.0, **STUDENT_LOSS[variant]})
        res = train(cfg, fresh=True)
        log.info("supernet %s: %.0f s, %.3g FLOP", variant, res.wall_time_s, res.train_flops)
        runs[variant] = {"config": cfg, "result": res}

    first = runs[variants[0]]["config"]
    tokenizer = load_supernet(first.out).load_tokenizer()
    val = _val_windows(first, tokenizer, args.eval_tokens)
    ref = load_supernet(first.out, dtype="fp32")
    space, q_per_kv = ref.space, ref.config.q_per_kv
    params = ref.model.num_params
    sizes = {"smallest": space.smallest(), "middle": _pick(space, 0.5), "largest": space.largest()}

    standalone_loss, standalone_flops, standalone_wall, info = {}, {}, {}, {}
    for name, sub in sizes.items():
        m_cfg, s_cfg = _standalone_config(sub, q_per_kv)
        cfg = _base(args, root / f"standalone_{name}", model=m_cfg, space=s_cfg, sandwich={"n_random": 0},
                    tokenizer={"path": str(Path(first.out) / "tokenizer")})
        res = train(cfg, fresh=True)
        twin = load_supernet(cfg.out, dtype="fp32").model
        standalone_loss[name] = evaluate_loss(twin, val, None, dtype=args.dtype)
        standalone_flops[name], standalone_wall[name] = res.train_flops, res.wall_time_s
        info[name] = {"subnet": sub.summary(), "params": params(sub), "standalone_params": twin.num_params()}
        log.info("%s standalone: %.4f", name, standalone_loss[name])

    k10 = _spread(space, params, 10)
    figures: dict[str, dict[str, Any]] = {}
    for variant, run in runs.items():
        res = run["result"]
        model = load_supernet(run["config"].out, dtype="fp32").model
        loss = {k: evaluate_loss(model, val, sub, dtype=args.dtype) for k, sub in sizes.items()}
        gap = {k: (loss[k] - standalone_loss[k]) / standalone_loss[k] for k in sizes}
        k10_flops = sum(train_flops_per_token(model.config, s, first.seq_len) for s in k10) * res.tokens
        figures[variant] = {
            "student_loss": STUDENT_LOSS[variant],
            "subnet_loss": {k: round(v, 4) for k, v in loss.items()},
            "rel_gap": {k: round(v, 4) for k, v in gap.items()},
            "max_rel_gap": round(max(gap.values()), 4),
            "supernet_flops": res.train_flops,
            "cost_ratio_k3": round(res.train_flops / sum(standalone_flops.values()), 4),
            "cost_ratio_k10": round(res.train_flops / k10_flops, 4),
            "supernet_wall_s": round(res.wall_time_s, 1),
            "wall_ratio_k3": round(res.wall_time_s / sum(standalone_wall.values()), 4),
        }
        log.info("variant %s: %s", variant, figures[variant])

    main = figures[variants[0]]
    return {
        "mode": "scratch",
        "variant": variants[0],
        "tokens_per_run": runs[variants[0]]["result"].tokens,
        "supernet": {"config": SUPERNET, "space": SPACE, "space_size": space.size(), "n_random": args.n_random,
                     "params": params(), "vocab_size": ref.config.vocab_size, "batch_size": args.batch_size,
                     "seq_len": args.seq_len, "lr": args.lr},
        "sizes": info,
        "subnet_loss": main["subnet_loss"],
        "standalone_loss": {k: round(v, 4) for k, v in standalone_loss.items()},
        "rel_gap": main["rel_gap"],
        "max_rel_gap": main["max_rel_gap"],
        "supernet_flops": main["supernet_flops"],
        "standalone_flops": standalone_flops,
        "cost_ratio_k3": main["cost_ratio_k3"],
        "cost_ratio_k10": main["cost_ratio_k10"],
        "k10_params": [params(s) for s in k10],
        "wall_time_s": {"supernet": main["supernet_wall_s"], "standalone": {k: round(v, 1) for k, v in standalone_wall.items()},
                        "bench_total": round(time.perf_counter() - t0, 1)},
        "wall_ratio_k3": main["wall_ratio_k3"],
        "variants": figures,
        "eval_tokens": int(val[:, 1:].numel()),
        "goals": {"max_rel_gap<=0.03": main["max_rel_gap"] <= 0.03, "cost_ratio_k10<=0.5": main["cost_ratio_k10"] <= 0.5},
        "threads": torch.get_num_threads(),
    }


def run_heal(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.work)
    source = Path(args.supernet)
    if not (source / "config.json").is_file():
        raise SystemExit(f"{source} is not a supernet directory; run `nas supernet import smollm2-135m --out {source}` first")
    cfg = parse_train_config({
        "out": str(root / "healed"),
        "seed": 0,
        "init_from": str(source),
        "data": {"corpus": [args.corpus], "val_fraction": 0.02, "max_chars": args.heal_chars},
        "space": {"tied": True},
        "sandwich": {"teacher": "frozen", "n_random": args.heal_n_random, "temperature": 1.0},
        "optim": {"lr": args.heal_lr, "warmup_fraction": 0.05, "weight_decay": 0.0, "min_lr_ratio": 0.1},
        "steps": args.heal_steps,
        "batch_size": args.heal_batch,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "log_every": 5,
    }, source="bench --heal")
    before = load_supernet(source, dtype="fp32")
    tokenizer = before.load_tokenizer()
    space = SearchSpace.from_dict({"tied": True}, before.config, before.model.layer_rank)
    sizes = {"small": space.smallest(), "medium": _pick(space, 0.5), "large": _pick(space, 0.75)}
    val = _val_windows(cfg, tokenizer, args.heal_eval_tokens)
    full_loss = evaluate_loss(before.model, val, None, dtype=args.dtype)
    loss_before = {k: evaluate_loss(before.model, val, s, dtype=args.dtype) for k, s in sizes.items()}
    del before
    result = train(cfg, fresh=True)
    healed = load_supernet(cfg.out, dtype="fp32").model
    loss_after = {k: evaluate_loss(healed, val, s, dtype=args.dtype) for k, s in sizes.items()}
    full_after = evaluate_loss(healed, val, None, dtype=args.dtype)
    gain = {k: round(loss_before[k] - loss_after[k], 4) for k in sizes}
    return {
        "mode": "heal",
        "supernet": str(source),
        "sizes": {k: {"subnet": s.summary(), "params": healed.num_params(s)} for k, s in sizes.items()},
        "full_model_loss": {"before": round(full_loss, 4), "after": round(full_after, 4)},
        "loss_before": {k: round(v, 4) for k, v in loss_before.items()},
        "loss_after": {k: round(v, 4) for k, v in loss_after.items()},
        "heal_gain": gain,
        "goal_all_gains_positive": all(v > 0 for v in gain.values()),
        "steps": result.steps,
        "train_tokens": result.tokens,
        "wall_time_s": round(result.wall_time_s, 1),
        "eval_tokens": int(val[:, 1:].numel()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=600_000, help="token budget T of every run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-chars", type=int, default=10_000_000, help="corpus characters read (tokenizer and data)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--variants", default="ps,ce", help="student losses to train a supernet with (first = headline): " + ", ".join(STUDENT_LOSS))
    p.add_argument("--n-random", type=int, default=2)
    p.add_argument("--eval-tokens", type=int, default=32_768)
    p.add_argument("--corpus", default="corpus/gutenberg")
    p.add_argument("--work", default=str(work_dir() / "bench" / "ofa_family"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                   help="training and scoring dtype (default: %(default)s: bf16 where the CPU computes it natively, else fp32)")
    p.add_argument("--heal", action="store_true", help="heal 3 sub-networks of an imported SmolLM2 instead")
    p.add_argument("--supernet", default=str(work_dir() / "smollm2"))
    p.add_argument("--heal-steps", type=int, default=40)
    p.add_argument("--heal-n-random", type=int, default=1)
    p.add_argument("--heal-batch", type=int, default=4)
    p.add_argument("--heal-lr", type=float, default=1e-4)
    p.add_argument("--heal-chars", type=int, default=3_000_000)
    p.add_argument("--heal-eval-tokens", type=int, default=8_192)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.heal:
        args.work = str(Path(args.work).parent / "ofa_heal") if args.work.endswith("ofa_family") else args.work
        out = run_heal(args)
    else:
        out = run_scratch(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
