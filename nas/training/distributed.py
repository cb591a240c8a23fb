"""Data parallelism under ``torchrun``: the process group and the gradient all-reduce.

Gloo on CPU, NCCL on GPUs. ``batch_size`` is the *global* batch, every rank takes its
slice, and the accumulated gradients are averaged with one all-reduce per step (in flat
buckets) — the same config gives the same model on 1 or N processes. Without
``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from nas.errors import NasError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: its rank, the world size, its device, and whether
    :func:`setup_dist` created the process group (and so must destroy it)."""
    rank: int
    world: int
    device: torch.device
    created: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if :func:`setup_dist` created it."""
        if self.created:
            dist.destroy_process_group()


def setup_dist(preference: str) -> DistContext:
    """Join (or create, under ``torchrun``) the process group and pick this rank's device
    for ``device: auto | cpu | cuda``."""
    cuda = torch.cuda.is_available() and preference != "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise NasError("device: cuda was requested but no CUDA GPU is visible; use device: cpu or auto")
    created = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistContext(rank=rank, world=world, device=device, created=created)


def allreduce_gradients(params: Sequence[torch.nn.Parameter], world: int, bucket_bytes: int = 32 << 20) -> None:
    """Average gradients over ranks in flat buckets (params without a gradient are skipped;
    every rank runs the same arms, so the set is the same everywhere)."""
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[Tensor] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        bucket.clear()
        size = 0

    for g in grads:
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= bucket_bytes:
            flush()
    flush()


__all__ = ["DistContext", "allreduce_gradients", "setup_dist"]
