"""Latency lookup table vs measured prefill latency over random sub-networks.

Builds a :class:`evaluators.latency_table.LatencyTable` for the imported SmolLM2 supernet
(``work/smollm2``; ``--random`` or a missing directory uses a mid-size random supernet),
measures the prefill latency of ``--n`` seeded random sub-networks of its search space
on their extracted dense models (interleaved rounds, median of all runs), and prints one
JSON object: ``mape`` and ``kendall_tau`` of predicted vs measured (goals: MAPE <= 10%,
tau >= 0.9), the same without calibration, timings and the load average. On a CPU shared
with other jobs wall-clock timings mostly measure the other jobs; ``--clock auto`` then
times CPU work at one thread instead (``"clock": "process"`` in the output).

    .venv/bin/python bench/latency_predictor.py [--supernet work/smollm2] [--n 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.latency import LatencySetup, measure_latency, measure_prefill_ms  # noqa: E402
from evaluators.latency_table import LatencyTable, TableOptions, random_subnets  # noqa: E402
from nas.model.config import SupernetConfig  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else 0.0


def mape(predicted: list[float], measured: list[float]) -> float:
    return statistics.fmean(abs(p - m) / m for p, m in zip(predicted, measured))


def load_model(path: Path, force_random: bool) -> tuple[Supernet, SearchSpace, str]:
    if not force_random and (path / "supernet.json").is_file():
        from nas.model.directory import load_supernet

        loaded = load_supernet(path, dtype="bf16")
        return loaded.model, loaded.space, str(path)
    torch.manual_seed(0)
    cfg = SupernetConfig(vocab_size=32000, d_model=512, n_layer=16, n_head=8, n_kv_head=4, d_ff=1536, tie_embeddings=True)
    model = Supernet(cfg).to(torch.bfloat16).eval()
    return model, SearchSpace.default(cfg), "random"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", type=Path, default=Path(os.environ.get("NAS_WORK_DIR", "work")) / "smollm2")
    ap.add_argument("--random", action="store_true", help="use a mid-size random supernet")
    ap.add_argument("--n", type=int, default=30, help="random sub-networks to measure")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's; 1 with --clock process)")
    ap.add_argument(
        "--clock", choices=["auto", "wall", "process"], default="auto",
        help="wall: elapsed time; process: CPU time at 1 thread, immune to other jobs on a shared CPU; "
        "auto: process when the 1-minute load average exceeds half the cores, else wall",
    )
    ap.add_argument("--repeats", type=int, default=5, help="table: timed runs per layer variant")
    ap.add_argument("--rounds", type=int, default=3, help="measurement: interleaved passes over the sub-networks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table-out", type=Path, default=None, help="also save the table (JSON keyed by device)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    clock = args.clock
    if clock == "auto":
        clock = "process" if load_start > 0.5 * (os.cpu_count() or 1) else "wall"
    threads = args.threads if args.threads is not None else (1 if clock == "process" else None)
    model, space, source = load_model(args.supernet, args.random)
    subnets = random_subnets(space, args.n, seed=args.seed)
    setup = LatencySetup(prompt_len=args.prompt_len, batch=args.batch, threads=threads, clock=clock)

    options = TableOptions(repeats=args.repeats, warmup=2, seed=args.seed)
    table = LatencyTable.build(model, space, setup=setup, options=options)
    t_measure = time.perf_counter()
    measured = measure_prefill_ms(model, subnets, setup=setup, rounds=args.rounds, repeats=3, warmup=1, seed=args.seed)
    measure_s = time.perf_counter() - t_measure
    predicted = [table.predict(s) for s in subnets]
    raw = [table.raw_ms(s) for s in subnets]
    full = measure_latency(model, space.largest(), setup=setup, decode_tokens=32, repeats=3, warmup=1, seed=args.seed)
    if args.table_out:
        table.save(args.table_out)

    result = {
        "supernet": source,
        "device": table.fingerprint,
        "clock": clock,
        "n_subnets": len(subnets),
        "prompt_len": args.prompt_len,
        "batch": args.batch,
        "mape": round(mape(predicted, measured), 4),
        "kendall_tau": round(kendall_tau(predicted, measured), 4),
        "mape_uncalibrated": round(mape(raw, measured), 4),
        "kendall_tau_uncalibrated": round(kendall_tau(raw, measured), 4),
        "max_abs_pct_error": round(max(abs(p - m) / m for p, m in zip(predicted, measured)), 4),
        "measured_ms_range": [round(min(measured), 2), round(max(measured), 2)],
        "table_variants": len(table.layer_ms),
        "table_scale": round(table.scale, 4),
        "table_offset_ms": round(table.offset_ms, 3),
        "table_build_s": round(table.build_s, 1),
        "measure_s": round(measure_s, 1),
        "largest_prefill_ms": round(full["prefill_latency_ms"], 2),
        "largest_decode_tokens_per_s": round(full["decode_tokens_per_s"], 1),
        "loadavg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "pairs": [
            {"subnet": s.summary(), "predicted_ms": round(p, 2), "measured_ms": round(m, 2)}
            for s, p, m in zip(subnets, predicted, measured)
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
