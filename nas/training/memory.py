"""How much memory a training process needs, and refusing a run that will not fit.

The trainer checks the estimate before tokenising or allocating anything big, so an
oversized config fails in a second with one message instead of an out-of-memory kill.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.supernet import Supernet


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training process needs, by part."""
    weights: int
    gradients: int
    optimizer: int
    teacher: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.teacher + self.activations

    def describe(self) -> str:
        gib = 1 << 30
        return (
            f"about {self.total / gib:.1f} GiB (weights {self.weights / gib:.1f}, gradients {self.gradients / gib:.1f}, "
            f"AdamW state {self.optimizer / gib:.1f}, frozen teacher {self.teacher / gib:.1f}, "
            f"activations {self.activations / gib:.1f})"
        )


def estimate_memory(
    config: SupernetConfig, *, micro_batch: int, seq_len: int, dtype: str, frozen_teacher: bool
) -> MemoryEstimate:
    """A deliberately rough upper-side estimate (fp32 master weights, AdamW, the largest
    arm's activations kept for backward, fp32 logits and the teacher's logits)."""
    with torch.device("meta"):
        params = Supernet(config).num_params()
    act = 2 if dtype == "bf16" else 4
    hd, D, V = config.head_dim, config.d_model, config.vocab_size
    per_token = 0
    for i in range(config.n_layer):
        d = config.layer(i)
        ffn = d.d_ff * (d.top_k if d.n_expert else 1) + (d.d_ff if d.n_expert and config.shared_expert else 0)
        per_token += act * (6 * d.n_head * hd + 3 * d.n_kv_head * hd + 4 * ffn + 2 * D) + 4 * 6 * D
    per_token += V * (act + 4 + 4 + 4 + 8)  # logits, fp32 copy, log-softmax, grad, teacher (+ its log-softmax)
    tokens = micro_batch * seq_len
    return MemoryEstimate(
        weights=4 * params,
        gradients=4 * params,
        optimizer=8 * params,
        teacher=(act * params) if frozen_teacher else 0,
        activations=int(1.25 * per_token * tokens),
    )


def available_memory(device: torch.device) -> int | None:
    """Free bytes for one process: GPU free memory, or the host's MemAvailable (bounded
    by a cgroup limit) shared among the local ranks."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = int(limit) - used
            avail = free if avail is None else min(avail, free)
    if avail is None:
        return None
    return avail // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_memory(estimate: MemoryEstimate, *, available: int | None, limit_gb: float | None) -> None:
    budget = int(limit_gb * (1 << 30)) if limit_gb is not None else (None if available is None else int(0.9 * available))
    if budget is not None and estimate.total > budget:
        raise NasError(
            f"this training config needs {estimate.describe()} per process but only {budget / (1 << 30):.1f} GiB "
            "is available; lower batch_size (or set micro_batch_size) or seq_len, shrink the model, "
            "or set memory_limit_gb if the estimate is wrong"
        )


__all__ = ["MemoryEstimate", "available_memory", "check_memory", "estimate_memory"]
