"""Which dtype should this machine score in? bf16 against fp32, side by side in one run.

Prints one JSON object: the CPU's bf16 flags and what ``dtype: auto`` resolves to
(``nas.model.precision.fast_dtype``); GFLOP/s of the matmuls a SmolLM2-sized model runs
(QKV/FFN-up, FFN-down, the LM head over 8 positions) in fp32 and bf16, interleaved and
median of ``--repeats``; and, with ``--supernet``, the wall time of one evaluation of the
largest sub-network on ``--limit`` seeded documents per task of hellaswag, arc_easy and piqa
in each dtype (``eval_s``) with their ratio. Goal: ``auto`` picks the faster of the two
(``auto_is_faster`` true).

    python bench/dtype_speed.py [--repeats 5] [--supernet work/smollm2 --limit 50]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--supernet", default=None, help="also time one evaluation in each dtype (e.g. work/smollm2)")
    parser.add_argument("--limit", type=int, default=50, help="documents per task for --supernet")
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
