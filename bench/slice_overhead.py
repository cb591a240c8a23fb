"""How much does running a sub-network as a *view* of the supernet cost, compared with
its extracted dense copy?

Prints one JSON object: tokens/s of both for three sizes of the imported SmolLM2
(bf16, batch 8 x 256 by default), ``ratios`` (view / extracted, per size) and
``ratio_min``. Goal: ratio_min >= 0.9.

    python bench/slice_overhead.py [--supernet work/smollm2] [--batch 8] [--seq 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.model.directory import load_supernet  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402


def tokens_per_s(fn, tokens: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        fn(tokens)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(tokens)
            times.append(time.perf_counter() - start)
    return tokens.numel() / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="work/smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    loaded = load_supernet(args.supernet, dtype="bf16")
    model, space = loaded.model, loaded.space
    cfg = model.config
    largest, smallest = space.largest(), space.smallest()
    mid_layers = space.kept_layers(space.n_layer_choices[len(space.n_layer_choices) // 2])
    middle = SubnetConfig(
        layers=mid_layers,
        n_head=tuple(space.layers[i].n_head[len(space.layers[i].n_head) // 2] for i in mid_layers),
        d_ff=tuple(space.layers[i].d_ff[len(space.layers[i].d_ff) // 2] for i in mid_layers),
        d_model=cfg.d_model,
    )
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=gen)
    ratios, rows = {}, {}
    for name, sub in (("largest", largest), ("middle", middle), ("smallest", smallest)):
        dense = model.extract(sub).eval()
        # interleave the two measurements so that machine noise hits both alike
        view_tps, dense_tps = [], []
        for _ in range(2):
            view_tps.append(tokens_per_s(lambda t: model(t, sub), tokens, args.repeats))
            dense_tps.append(tokens_per_s(lambda t, m=dense: m(t), tokens, args.repeats))
        v, d = max(view_tps), max(dense_tps)
        ratios[name] = round(v / d, 3)
        rows[name] = {"subnet": sub.summary(), "params": model.num_params(sub), "view_tokens_per_s": round(v, 1),
                      "extracted_tokens_per_s": round(d, 1)}
        del dense
    print(json.dumps({
        "supernet": str(args.supernet),
        "dtype": "bfloat16",
        "batch": args.batch,
        "seq": args.seq,
        "threads": torch.get_num_threads(),
        "sizes": rows,
        "ratios": ratios,
        "ratio_min": min(ratios.values()),
    }))


if __name__ == "__main__":
    main()
