"""The optimiser and the learning-rate schedule of a training run (``optim:`` in the config).

AdamW with weight decay on the matrices only (biases, norms and other 1-D parameters get
none), and a linear warm-up followed by a cosine, linear or constant schedule down to
``min_lr_ratio`` of the peak rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nas.model.supernet import Supernet
from nas.training.config import OptimConfig


def lr_lambda(optim: OptimConfig, total: int) -> Callable[[int], float]:
    """The LR multiplier of each step (for ``torch.optim.lr_scheduler.LambdaLR``) over a
    run of ``total`` steps."""
    warmup = int(round(optim.warmup_fraction * total))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if optim.schedule == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape

    return factor


def build_optimizer(model: Supernet, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over ``model``'s parameters, decaying only those with two or more dims."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, foreach=False)



__all__ = ["build_optimizer", "lr_lambda"]
