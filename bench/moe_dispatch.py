"""MoE expert dispatch: grouped by expert (this tree) vs one masked pass per expert (before).

:class:`nas.model.layers.MixtureOfExperts` sorts a batch's (token, slot) assignments by
expert once, gathers them in one ``index_select``, runs each expert on a contiguous block
and adds the results back with one ``index_add_``; its weights are sliced once for all
experts. Before, each expert found its tokens with ``nonzero``, gathered and scattered them
on its own, and sliced its own weights, whose backward each wrote a zero gradient of the
whole parameter. This script times both on the same model and batch, alternating them in
one run (absolute times drift on a shared machine; the ratio is what it reports):

- ``train``: forward + backward of a training step of ``bench/ernie_ablation.py``'s first model
  (8 layers, d_model 128 where the ablation now uses 64, 16 experts of width 64, top-4; 16 x 128 tokens, fp32), and of its
  top-1 sub-network;
- ``score``: a no-grad forward of the same model over 16 x 512 tokens.

Prints one JSON object: seconds per call (median of ``--repeats``) and ``speedup`` per case,
and ``max_abs_diff`` of the outputs (and gradients) between the two (0: the same numbers).

    .venv/bin/python bench/moe_dispatch.py [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from nas.model.config import SupernetConfig  # noqa: E402
from nas.model.layers import MixtureOfExperts  # noqa: E402
from nas.model.subnet import SubnetConfig  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402

GROUPED = MixtureOfExperts.forward


def per_expert_forward(self: MixtureOfExperts, x: Tensor, n_expert: int, top_k: int, d_ff: int,
                       aux: list[Tensor] | None = None) -> Tensor:
    """The dispatch before this tree: one nonzero, gather and scatter per expert."""
    B, T, D = x.shape
    flat = x.reshape(B * T, D)
    probs, weights, index = self.route(flat, n_expert, top_k)
    out = torch.zeros_like(flat)
    for e in range(n_expert):
        rows, slot = (index == e).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        y = self.expert(flat[rows], e, d_ff)
        out.index_add_(0, rows, (y * weights[rows, slot].unsqueeze(-1).to(y.dtype)).to(out.dtype))
    if self.shared is not None:
        out = out + self.shared_output(flat, d_ff)
    if aux is not None:
        counts = torch.zeros(n_expert, device=x.device).index_add_(0, index.reshape(-1), torch.ones(index.numel(), device=x.device))
        aux.append(n_expert * (counts / index.numel() * probs.mean(dim=0)).sum())
    return out.view(B, T, D)


def _train_step(model: Supernet, tokens: Tensor, subnet: SubnetConfig) -> tuple[Tensor, list[Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model.run(tokens[:, :-1], subnet, return_aux=True)
    loss = F.cross_entropy(out.logits.flatten(0, 1), tokens[:, 1:].reshape(-1)) + 0.01 * out.aux_loss
    loss.backward()
    return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _score(model: Supernet, tokens: Tensor, subnet: SubnetConfig) -> tuple[Tensor, list[Tensor]]:
    with torch.inference_mode():
        return model(tokens, subnet), []


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s, as the ablation trains)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per side and case (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SupernetConfig(vocab_size=2048, d_model=128, n_layer=8, n_head=4, n_kv_head=2, d_ff=64, n_expert=16, top_k=4)
    model = Supernet(config)
    full = model.full_subnet()
    top1 = SubnetConfig(layers=full.layers, n_head=full.n_head, d_ff=full.d_ff, d_model=full.d_model,
                        n_expert=full.n_expert, top_k=(1,) * full.n_layer)
    cases = {
        "train": (_train_step, torch.randint(0, config.vocab_size, (16, 129)), full),
        "train_top1": (_train_step, torch.randint(0, config.vocab_size, (16, 129)), top1),
        "score": (_score, torch.randint(0, config.vocab_size, (16, 512)), full),
    }
    report: dict[str, Any] = {"threads": args.threads, "repeats": args.repeats, "model": {
        "n_layer": config.n_layer, "d_model": config.d_model, "n_expert": config.n_expert, "d_ff": config.d_ff, "top_k": config.top_k}}
    for name, (fn, tokens, subnet) in cases.items():
        times: dict[str, list[float]] = {"per_expert": [], "grouped": []}
        outputs: dict[str, tuple[Tensor, list[Tensor]]] = {}
        for i in range(args.repeats + 1):  # the first round warms up both
            for side, forward in (("per_expert", per_expert_forward), ("grouped", GROUPED)):
                MixtureOfExperts.forward = forward  # type: ignore[method-assign]
                try:
                    start = time.perf_counter()
                    outputs[side] = fn(model, tokens, subnet)
                    if i:
                        times[side].append(time.perf_counter() - start)
                finally:
                    MixtureOfExperts.forward = GROUPED  # type: ignore[method-assign]
        (a, ga), (b, gb) = outputs["per_expert"], outputs["grouped"]
        diff = max([float((a - b).abs().max())] + [float((x - y).abs().max()) for x, y in zip(ga, gb)])
        before, after = statistics.median(times["per_expert"]), statistics.median(times["grouped"])
        report[name] = {"per_expert_s": round(before, 4), "grouped_s": round(after, 4), "speedup": round(before / after, 2),
                        "max_abs_diff": diff}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
