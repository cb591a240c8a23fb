"""Which dtype should this machine score in? bf16 against fp32, side by side in one run.

Prints one JSON object: the CPU's bf16 flags and what ``dtype: auto`` resolves to
(``nas.model.precision.fast_dtype``); GFLOP/s of the matmuls a SmolLM2-sized model runs
(QKV/FFN-up, FFN-down, the LM head over 8 positions) in fp32 and bf16, interleaved and
median of ``--repeats``; and, with ``--supernet``, the wall time of one evaluation of the
largest sub-network on ``--limit`` seeded documents per task of hellaswag, arc_easy and piqa
in each dtype (``eval_s``) with their ratio. Goal: ``auto`` picks the faster of the two
(``auto_is_faster`` true).

``--train`` also times training steps in each dtype, the two alternated ``--rounds`` times
(``train_tiny_step_s``: seconds a step, steps only, the first of each run left out): the MoE of
``bench/ernie_ablation.py`` trained from scratch (8 layers, d_model 64, 16 experts of width 64,
top-4; 16 x 128 tokens a step) and, with ``--supernet``, a heal of it over
``--heal-space`` with ``nas heal``'s CPU settings (4 x 256 tokens, the frozen full model as
teacher), timed by the heal's own timing run (``heal_timing``: ``step_s``, ``eval_s`` a held-out
evaluation). ``train_faster`` and ``auto_is_faster_train`` say which dtype won each.

    python bench/dtype_speed.py [--repeats 5] [--supernet work/smollm2 --limit 50] [--train]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.model.precision import BF16_CPU_FLAGS, cpu_flags, fast_dtype  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: (name, tokens, in, out): SmolLM2-135M's shapes at a batch of 16 x 128 tokens
SHAPES = [("ffn_up", 2048, 576, 1536), ("ffn_down", 2048, 1536, 576), ("lm_head", 128, 576, 49152)]


def matmul_gflops(repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    times: dict[str, dict[str, list[float]]] = {n: {d: [] for d in DTYPES} for n, *_ in SHAPES}
    operands = {(n, d): (torch.randn(t, i, dtype=dt), torch.randn(o, i, dtype=dt))
                for n, t, i, o in SHAPES for d, dt in DTYPES.items()}
    for _ in range(repeats + 1):  # the first round warms up
        for n, *_ in SHAPES:
            for d in DTYPES:  # interleaved: both dtypes see the same machine load
                x, w = operands[n, d]
                start = time.perf_counter()
                F.linear(x, w)
                times[n][d].append(time.perf_counter() - start)
    return {n: {d: round(2 * t * i * o / statistics.median(times[n][d][1:]) / 1e9, 1) for d in DTYPES}
            for n, t, i, o in SHAPES}


def eval_seconds(supernet: str, limit: int) -> dict[str, float]:
    from evaluators.evaluate import Evaluator
    from evaluators.harness import ScoringOptions
    from evaluators.types import Fidelity
    from nas.model.directory import load_supernet

    out = {}
    for d in DTYPES:
        loaded = load_supernet(supernet, dtype=d)
        evaluator = Evaluator.from_loaded(loaded, ["hellaswag", "arc_easy", "piqa"],
                                          options=ScoringOptions(dtype=d, batch_size=16, prefix_cache_bytes=0))
        start = time.perf_counter()
        evaluator.evaluate(loaded.space.largest(), Fidelity(limit=limit, seed=0))
        out[d] = round(time.perf_counter() - start, 1)
    return out


def _tiny_config(out: Path, dtype: str, steps: int):
    """The ablation's own training config (``bench/ernie_ablation.py``: its model, space and
    ERNIE schedule), on the first 2M characters of its corpus."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ernie_ablation

    size = ernie_ablation.SIZES["full"] | {"steps": steps, "dtype": dtype, "max_chars": 2_000_000}
    return ernie_ablation._config(size, out, model={}, space=ernie_ablation._elastic_space(size), schedule="ernie")


def train_seconds(supernet: str | None, heal_space: str, rounds: int, steps: int) -> dict[str, object]:
    """Seconds a training step in each dtype, alternated ``rounds`` times: the tiny MoE from
    scratch, and (``supernet``) a heal's timing run."""
    import tempfile

    from nas.training import heal as H
    from nas.training import train

    tiny: dict[str, list[float]] = {d: [] for d in DTYPES}
    heal: dict[str, list[dict[str, float]]] = {d: [] for d in DTYPES}
    space = None
    if supernet:
        from nas.model.directory import load_supernet

        space = H._resolve_space(load_supernet(supernet), heal_space)
    with tempfile.TemporaryDirectory(prefix="dtype-speed-") as tmp:
        for r in range(rounds):
            for d in DTYPES:
                times: list[float] = []
                train(_tiny_config(Path(tmp) / f"tiny-{d}-{r}", d, steps),
                      on_step=lambda rep: times.append(rep.elapsed_s))
                tiny[d].append((times[-1] - times[0]) / (len(times) - 1))
                if supernet:
                    settings = H.heal_settings("cpu", dtype=d)
                    cfg = H._train_config(Path(supernet), Path(tmp) / f"heal-{d}-{r}", space, settings, 50, keep=1)
                    heal[d].append(H.measure_heal_timing(cfg).to_dict())
    out: dict[str, object] = {"train_tiny_step_s": {d: [round(t, 4) for t in v] for d, v in tiny.items()},
                              "train_tiny_steps": steps}
    faster = {"tiny": min(DTYPES, key=lambda d: statistics.median(tiny[d]))}
    if supernet:
        out["heal_timing"] = heal
        faster["heal"] = min(DTYPES, key=lambda d: statistics.median(t["step_s"] for t in heal[d]))
    out["train_faster"] = faster
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--supernet", default=None, help="also time one evaluation in each dtype (e.g. work/smollm2)")
    parser.add_argument("--limit", type=int, default=50, help="documents per task for --supernet")
    parser.add_argument("--train", action="store_true", help="also time training steps in each dtype (see above)")
    parser.add_argument("--rounds", type=int, default=2, help="--train: runs of each dtype, alternated (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=40, help="--train: steps of the tiny MoE a run (default: %(default)s)")
    parser.add_argument("--heal-space", default="examples/heal_space_smollm2.yaml", help="--train with --supernet: the heal's space")
    args = parser.parse_args()
    auto, why = fast_dtype("cpu")
    gflops = matmul_gflops(args.repeats)
    bf16_over_fp32 = statistics.median(g["bf16"] / g["fp32"] for g in gflops.values())
    result: dict[str, object] = {
        "cpu_bf16_flags": sorted(cpu_flags() & BF16_CPU_FLAGS),
        "auto": auto,
        "auto_reason": why,
        "threads": torch.get_num_threads(),
        "matmul_gflop_per_s": gflops,
        "bf16_over_fp32_matmul": round(bf16_over_fp32, 3),
    }
    faster = "bf16" if bf16_over_fp32 > 1 else "fp32"
    if args.supernet:
        secs = eval_seconds(args.supernet, args.limit)
        result.update(eval_s=secs, eval_limit=args.limit, eval_bf16_over_fp32_time=round(secs["bf16"] / secs["fp32"], 2))
        faster = min(secs, key=secs.__getitem__)
    result.update(faster=faster, auto_is_faster=auto == faster)
    if args.train:
        result.update(train_seconds(args.supernet, args.heal_space, args.rounds, args.train_steps))
        result["auto_is_faster_train"] = {k: auto == v for k, v in result["train_faster"].items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
