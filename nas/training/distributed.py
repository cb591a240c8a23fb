"""Data parallelism under ``torchrun``: the process group and torch's own DDP.

Gloo on CPU, NCCL on GPUs. ``batch_size`` is the *global* batch: every rank takes its
slice, and :class:`DataParallel` (a :class:`torch.nn.parallel.DistributedDataParallel`
around the supernet) averages the accumulated gradients over ranks once per step — the
same config gives the same model on 1 or N processes. Without ``torchrun``
(``WORLD_SIZE`` unset or 1) there is no wrapper and everything runs on one process.

How a step's several backward passes meet DDP
---------------------------------------------
A training step runs several sub-networks (the sandwich's arms, or the ERNIE schedule's
one) on each of several micro-batches, one forward and backward each, accumulating
gradients before one optimiser step. We run every backward but the step's last inside
``no_sync()`` and let the last one all-reduce, with ``find_unused_parameters=True``:

- ``no_sync`` on all but the last backward: one all-reduce per step (not one per arm
  and micro-batch), and the arms' activations never have to live at the same time.
  *One summed loss* per micro-batch would also give one synchronised backward, but it
  holds every arm's activations at once (the memory check assumes one arm at a time)
  and still needs the next point.
- ``find_unused_parameters=True``: with prefix-sliced weights a smaller sub-network
  still gives every parameter it touches a gradient (on a slice), but layers dropped by
  depth, experts beyond the kept prefix, and kept experts that no token of a rank's
  micro-batch was routed to get none. Without it the reducer would wait for their
  gradients forever (or fail at the next step). The set changes from step to step (a
  random arm, an ERNIE step at reduced depth) and from rank to rank (routing depends on
  the data), so ``static_graph`` is wrong here. DDP records which parameters were used
  in the ``no_sync`` passes as well: a parameter used by an earlier arm but not by the
  last one is still averaged; one that no rank used keeps ``grad = None``; one that only
  some ranks used is averaged with zeros from the others (what one process on the whole
  batch computes). The cost is one graph traversal per synchronised forward.

One caveat on "the same model": the MoE load-balancing loss (routed share x mean router
probability) is a statistic of the tokens one pass sees, not a sum over tokens, so with
``aux_loss_weight`` > 0 N processes equal one process with ``micro_batch_size`` = the
per-process batch (the same slices), as ``tests/test_train_ddp.py`` checks.

The buffers keep DDP's default sync (the RoPE frequencies, one small broadcast per
step; they are constants anyway). The wrapped module is a thin :class:`_Runner` whose ``forward`` is
:meth:`Supernet.run`, so DDP sees the logits *and* the MoE load-balancing loss.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from nas.errors import NasError
from nas.model.subnet import SubnetConfig
from nas.model.supernet import ForwardOutput, Supernet


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


class _Runner(nn.Module):
    """:meth:`Supernet.run` as a module's ``forward``: what DDP wraps."""

    def __init__(self, model: Supernet) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, subnet: SubnetConfig, return_aux: bool) -> ForwardOutput:
        return self.model.run(tokens, subnet, return_aux=return_aux)


class DataParallel:
    """The supernet under torch DDP: :meth:`run` a sub-network, and :meth:`accumulate` (a
    context around forward *and* backward) for every pass but a step's last."""

    def __init__(self, model: Supernet, *, bucket_cap_mb: float = 25.0) -> None:
        self.model = model
        self.ddp = DistributedDataParallel(
            _Runner(model), device_ids=None, find_unused_parameters=True, bucket_cap_mb=bucket_cap_mb,
        )

    def run(self, tokens: Tensor, subnet: SubnetConfig, *, return_aux: bool) -> ForwardOutput:
        return self.ddp(tokens, subnet, return_aux)

    def accumulate(self) -> contextlib.AbstractContextManager:
        """Gradients of the passes inside stay local until the next synchronised backward."""
        return self.ddp.no_sync()


def data_parallel(model: Supernet, d: DistContext) -> DataParallel | None:
    """The DDP wrapper for a run on ``d.world`` > 1 processes (after the weights are loaded:
    DDP broadcasts rank 0's), else None."""
    return DataParallel(model) if d.world > 1 else None


__all__ = ["DataParallel", "DistContext", "data_parallel", "setup_dist"]
