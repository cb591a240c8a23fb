"""Ranking SmolLM2's embedding (``d_model``) channels: what it buys, and against what.

Imports SmolLM2-135M (no ordering), then scores the held-out loss of the full model narrowed
to 544, 512 and 448 of its 576 channels with the channels in three orders:

* ``original``: as the checkpoint stores them;
* ``ranked``: the importer's ranking (``nas.importing.importance``: mean |value| of each channel
  in every sublayer's input, each input divided by its RMS);
* ``weight_scaled``: the same activations, each sublayer's weighted by the column norms of the
  weights that read it (a Wanda-style alternative).

Prints one JSON object: ``loss[order][d_model]``, ``full_loss``, ``held_out_tokens``,
``calibration_tokens``, ``eval_s`` (median seconds of one held-out evaluation) and ``seconds``::

    NAS_DATA_DIR=../shared/data .venv/bin/python bench/channel_ranking.py [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.importing import importance  # noqa: E402
from nas.importing.hf import from_hf_model  # noqa: E402
from nas.importing.sources import load_hf  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402

WIDTHS = (544, 512, 448)


@torch.no_grad()
def weight_scaled(model: Supernet, tokens: torch.Tensor) -> torch.Tensor:
    """Per channel: sum over sublayers of mean |input|/RMS x the norm of the weight column reading it."""
    readers = []
    for block in model.layers:
        attn, ffn = block.attn, block.ffn
        readers.append((attn, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])))
        readers.append((ffn, torch.cat([ffn.gate_proj.weight, ffn.up_proj.weight])))
    sums = [torch.zeros(model.config.d_model) for _ in readers]

    def magnitude(h: torch.Tensor) -> torch.Tensor:
        h = h.float()
        return (h.abs() * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-12)).sum(dim=(0, 1))

    def hook(index: int):
        def add(module: torch.nn.Module, args: tuple) -> None:  # returns None: the input goes on unchanged
            sums[index].add_(magnitude(args[0]))

        return add

    hooks = [module.register_forward_pre_hook(hook(i)) for i, (module, _) in enumerate(readers)]
    head = torch.zeros(model.config.d_model)
    try:
        for batch in tokens.split(8):
            out = model.run(batch, return_hidden=True, logits_index=torch.zeros(batch.shape[0], 0, dtype=torch.long))
            head += magnitude(importance.rms_norm(out.hidden[-1], model.norm, model.config.norm_eps, model.config.norm_offset))
    finally:
        for h in hooks:
            h.remove()
    score = head * model.lm_head_weight.float().norm(dim=0)
    for total, (_, w) in zip(sums, readers):
        score += total * w.float().norm(dim=0)
    return score


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--held-out-tokens", type=int, default=8192)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    hf, tok, _ = load_hf("smollm2-135m")
    base = from_hf_model(hf)
    del hf
    calib = importance.tokenize_for_calibration(tok, importance.calibration_text(None))
    held = importance.tokenize_for_calibration(tok, importance.held_out_text(None), n_tokens=args.held_out_tokens)
    orders = {
        "original": None,
        "ranked": importance.measure(base, calib, dtype=torch.float32).channels,
        "weight_scaled": weight_scaled(base, calib),
    }
    full = base.full_subnet()
    times: list[float] = []
    loss: dict[str, dict[int, float]] = {}
    for name, channels in orders.items():
        model = copy.deepcopy(base)
        if channels is not None:
            with torch.no_grad():
                importance._permute_channels(model, torch.argsort(channels, descending=True, stable=True))
        loss[name] = {}
        for d in WIDTHS:
            t = time.perf_counter()
            loss[name][d] = round(importance.loss(model, held, dataclasses.replace(full, d_model=d)), 4)
            times.append(time.perf_counter() - t)
        print(name, loss[name], file=sys.stderr, flush=True)
    print(json.dumps({
        "loss": loss,
        "full_loss": round(importance.loss(base, held), 4),
        "held_out_tokens": int(held.numel()),
        "calibration_tokens": int(calib.numel()),
        "eval_s": round(statistics.median(times), 1),
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
