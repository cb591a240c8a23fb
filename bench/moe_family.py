"""A mixture-of-experts family from one training run: experts kept x top_k x depth.

Trains the small elastic MoE supernet of ``examples/train_moe_small.yaml`` from scratch
on the Gutenberg novels with ``nas.training`` (sandwich rule: the largest sub-network learns
from the data, the smallest and a random one distil from it, plus the Switch-style
load-balancing loss), then scores every homogeneous sub-network of a grid — every
number of experts kept and every ``top_k`` (at most the experts kept), at full and 3/4
depth — by its held-out next-token loss on the run's own validation split (text the
training never saw), and its active non-embedding parameters per token
(``evaluators.cost``: attention + norms + router + ``top_k`` experts).

Prints one JSON object:

* ``grid`` — one ``{n_expert, top_k, n_layer, active_params, loss}`` per sub-network;
* ``front`` — the Pareto front of (active_params, loss), both minimised, by active_params;
* ``goals`` — ``span`` (largest / smallest active params on the front, goal >= 2.5),
  ``monotone`` (loss falls strictly along the front), ``smallest_vs_full`` (the smallest
  front member's loss / the full model's, goal <= 1.10) and whether each is met;
* ``train`` — steps, tokens, wall time, the run's own largest/smallest validation loss;
* ``eval`` — held-out windows and tokens; ``seconds`` — total wall time.

Sized for 2 CPU cores shared with other jobs (~15 min training + ~3 min scoring with one
torch thread; one thread is much faster than two on a loaded 2-core machine)::

    .venv/bin/python bench/moe_family.py [--steps 300] [--threads 1] [--out work/bench/moe_family]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evaluators.cost import cost_breakdown  # noqa: E402
from nas.model.directory import load_supernet  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.model.tokenizer import eos_id, load_tokenizer  # noqa: E402
from nas.pareto import non_dominated_mask  # noqa: E402
from nas.paths import REPO_ROOT, work_dir  # noqa: E402
from nas.training import TrainConfig, evaluate_loss, load_train_config, train  # noqa: E402
from nas.training.data import eval_windows, load_tokens, split_tokens  # noqa: E402

CONFIG = REPO_ROOT / "examples" / "train_moe_small.yaml"


def grid_subnets(space: SearchSpace, depths: list[int]) -> list[SubnetConfig]:
    """Every homogeneous sub-network: experts kept x top_k (<= experts kept) x depth, all
    other dims at their largest choice."""
    choices = space.layers[space.layer_rank[0]]
    out = []
    for n_layer in depths:
        kept = space.kept_layers(n_layer)
        for e in choices.n_expert:
            for k in choices.top_k:
                if k > e:
                    continue
                n = len(kept)
                sub = SubnetConfig(
                    layers=kept, n_head=(max(choices.n_head),) * n, d_ff=(max(choices.d_ff),) * n,
                    d_model=max(space.d_model_choices), n_expert=(e,) * n, top_k=(k,) * n,
                )
                space.check(sub)
                out.append(sub)
    return out


def pareto_front(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values = np.array([[g["active_params"], g["loss"]] for g in grid], dtype=float)
    mask = non_dominated_mask(values, ["minimize", "minimize"])
    return sorted((g for g, m in zip(grid, mask) if m), key=lambda g: (g["active_params"], g["loss"]))


def goals(front: list[dict[str, Any]], full_loss: float) -> dict[str, Any]:
    span = front[-1]["active_params"] / front[0]["active_params"]
    losses = [g["loss"] for g in front]
    monotone = all(b < a for a, b in zip(losses, losses[1:]))
    ratio = front[0]["loss"] / full_loss
    return {
        "span": round(span, 3), "span_met": span >= 2.5,
        "monotone": monotone,
        "smallest_vs_full": round(ratio, 4), "smallest_within_10pct": ratio <= 1.10,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="override the config's optimiser steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="supernet directory (default: WORK/bench/moe_family)")
    parser.add_argument("--eval-tokens", type=int, default=24_576, help="held-out tokens per sub-network")
    parser.add_argument("--reuse", action="store_true", help="score an already trained --out without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    out = args.out or work_dir() / "bench" / "moe_family"
    cfg: TrainConfig = load_train_config(args.config).with_overrides(out=str(out), steps=args.steps)
    train_info: dict[str, Any] = {}
    if not args.reuse:
        result = train(cfg, fresh=True)
        train_info = {
            "steps": result.steps, "tokens": result.tokens, "wall_time_s": round(result.wall_time_s, 1),
            "val_loss": result.val_loss,
        }
    loaded = load_supernet(out, dtype="fp32")
    model, space, config = loaded.model, loaded.space, loaded.config

    # the run's own validation split: the same corpus, tokenizer and split as training
    tokenizer = load_tokenizer(out / "tokenizer")
    stream, _ = load_tokens(cfg.data.spec(), tokenizer, cache_dir=work_dir() / "cache", eos=eos_id(tokenizer))
    _, val = split_tokens(stream, val_fraction=cfg.data.val_fraction, seq_len=cfg.seq_len)
    windows = eval_windows(val, cfg.seq_len, args.eval_tokens)

    depths = sorted({config.n_layer, (3 * config.n_layer) // 4}, reverse=True)
    grid = []
    t_eval = time.perf_counter()
    for sub in grid_subnets(space, depths):
        loss = evaluate_loss(model, windows, sub, batch_size=16, dtype=cfg.dtype)
        grid.append({
            "n_expert": sub.n_expert[0], "top_k": sub.top_k[0], "n_layer": sub.n_layer,
            "active_params": cost_breakdown(config, sub).active_params, "loss": round(loss, 4),
        })
    full = next(g for g in grid if (g["n_expert"], g["top_k"], g["n_layer"]) == (config.n_expert, config.top_k, config.n_layer))
    front = pareto_front(grid)
    report = {
        "supernet": {k: getattr(config, k) for k in ("vocab_size", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "n_expert", "top_k")},
        "space": {"n_expert_choices": list(space.layers[0].n_expert), "top_k_choices": list(space.layers[0].top_k),
                  "n_layer": depths},
        "train": train_info,
        "eval": {"windows": int(windows.shape[0]), "tokens": int(windows[:, 1:].numel()), "dtype": cfg.dtype,
                 "seconds": round(time.perf_counter() - t_eval, 1)},
        "full": full,
        "grid": grid,
        "front": front,
        "goals": goals(front, full["loss"]),
        "threads": args.threads,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
