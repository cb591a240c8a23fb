"""The sandwich rule's per-step losses, with in-place distillation.

Every step draws one batch and runs several *arms* (sub-networks) on it, accumulating
their gradients into the shared weights before one optimiser step:

- the **largest** sub-network of the search space learns from the data (cross-entropy);
- the **smallest** and ``n_random`` **random** sub-networks learn from the largest one's
  *detached* logits (KL divergence at a temperature, times ``T**2``), plus an optional
  cross-entropy share.

With a frozen teacher (``SandwichLoss.frozen_teacher``) every arm instead distils from a
separate, frozen copy of the full starting model. MoE arms add the load-balancing loss.
Which arms a step trains is :mod:`nas.training.sampling`'s business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import NasError
from nas.model.precision import resolve_dtype
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.training.distributed import DataParallel


@dataclass(frozen=True)
class Arm:
    """One sub-network trained in a step. ``name``: largest, smallest, random<i>."""
    name: str
    subnet: SubnetConfig


@dataclass(frozen=True)
class SandwichLoss:
    """How the arms learn. ``frozen_teacher``: every arm distils from a separate teacher
    model; otherwise the first arm (the largest) learns CE and is the teacher."""
    temperature: float = 1.0
    distill_weight: float = 1.0
    ce_weight: float = 0.0
    aux_loss_weight: float = 0.01
    frozen_teacher: bool = False


@dataclass(frozen=True)
class ArmStats:
    loss: float  # the arm's objective
    ce: float  # cross-entropy on the data (logged even when not trained on)
    kd: float | None = None  # KL to the teacher
    aux: float | None = None  # MoE load-balancing loss


@dataclass(frozen=True)
class DistillTarget:
    """The teacher's token distributions at a temperature, computed once per step and
    shared by every student: probabilities (N, V) and sum_v p log p (a scalar over all
    N tokens). Built under ``no_grad`` from detached logits: it carries no graph."""
    probs: Tensor  # (N, V) fp32
    plogp: Tensor  # () fp32
    temperature: float

    @classmethod
    def from_logits(cls, teacher_logits: Tensor, temperature: float = 1.0) -> DistillTarget:
        with torch.no_grad():
            logits = teacher_logits.detach().flatten(0, -2)  # (N, V)
            logp = F.log_softmax(_scaled(logits, temperature), dim=-1, dtype=torch.float32)
            return cls.from_log_probs(logp, temperature)

    @classmethod
    def from_log_probs(cls, logp: Tensor, temperature: float = 1.0) -> DistillTarget:
        with torch.no_grad():
            logp = logp.detach()
            probs = logp.exp()
            return cls(probs=probs, plogp=torch.dot(probs.view(-1), logp.view(-1)), temperature=temperature)

    def loss(self, student_logp: Tensor) -> Tensor:
        """Mean per-token KL(teacher || student) times T**2, from the student's log-probs (N, V)
        at the same temperature."""
        n = student_logp.shape[0]
        kl = (self.plogp - torch.dot(self.probs.view(-1), student_logp.reshape(-1))) / n
        return kl * (self.temperature * self.temperature)


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    return logits if temperature == 1.0 else logits.float() / temperature


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean per-token KL(teacher || student) at ``temperature``, times ``temperature**2``.

    The teacher is detached here, whatever the caller passes: no gradient ever flows
    into the teacher through this loss.
    """
    target = DistillTarget.from_logits(teacher_logits, temperature)
    s = F.log_softmax(_scaled(student_logits.flatten(0, -2), temperature), dim=-1, dtype=torch.float32)
    return target.loss(s)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``dtype="bf16"``; no context for ``"fp32"``; ``"auto"``:
    the device's fast one (:func:`nas.model.precision.fast_dtype`)."""
    if resolve_dtype(dtype, device.type) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sandwich_step(
    model: Supernet,
    inputs: Tensor,
    targets: Tensor,
    arms: Sequence[Arm],
    loss: SandwichLoss,
    *,
    teacher: Supernet | None = None,
    dtype: str = "fp32",
    scale: float = 1.0,
    replicas: DataParallel | None = None,
    sync: bool = True,
    teacher_subnet: SubnetConfig | None = None,
) -> dict[str, ArmStats]:
    """Forward and backward every arm on one (micro-)batch, accumulating gradients into
    ``model`` (no zeroing, no optimiser step). Losses are multiplied by ``scale`` (the
    micro-batch's share of the step). Returns each arm's (unscaled) statistics.

    ``replicas``: ``model`` under DDP (several processes). Every arm's pass then runs under
    ``no_sync`` except the last one's when ``sync`` (the step's last micro-batch), whose
    backward averages the accumulated gradients over ranks (see
    :mod:`nas.training.distributed`).

    ``teacher_subnet``: a sub-network of ``model`` whose distribution the arms learn from
    when the first arm is another one (ERNIE's distilled reduced steps): its logits come
    from one forward without gradient, before the arms.

    The teacher's distribution (:class:`DistillTarget`) is computed once, from detached
    logits, and shared by the students; each student costs one log-softmax.
    """
    device = inputs.device
    moe = model.config.n_expert > 0
    T = loss.temperature
    flat_targets = targets.reshape(-1)  # (N,)
    target: DistillTarget | None = None
    if loss.frozen_teacher:
        if teacher is None:
            raise NasError("sandwich step: frozen_teacher needs a teacher model")
        with torch.no_grad(), autocast(device, dtype):
            target = DistillTarget.from_logits(teacher(inputs), T)
    elif teacher_subnet is not None and arms and arms[0].subnet != teacher_subnet:
        with torch.no_grad(), autocast(device, dtype):
            target = DistillTarget.from_logits(model(inputs, teacher_subnet), T)
    stats: dict[str, ArmStats] = {}
    for index, arm in enumerate(arms):
        local = replicas is not None and not (sync and index == len(arms) - 1)
        # forward and backward inside no_sync: only the step's last pass all-reduces
        with replicas.accumulate() if local and replicas is not None else contextlib.nullcontext():
            with autocast(device, dtype):
                run = model.run if replicas is None else replicas.run
                out = run(inputs, arm.subnet, return_aux=moe)
            logits = out.logits.flatten(0, 1)  # (N, V), bf16 under autocast
            learns_data = target is None  # the first arm, with no teacher's distribution to learn from
            kd: Tensor | None = None
            if learns_data:
                logp = F.log_softmax(logits, dim=-1, dtype=torch.float32)  # (N, V)
                ce = F.nll_loss(logp, flat_targets)
                objective = ce
            else:
                assert target is not None
                logp_t = F.log_softmax(_scaled(logits, T), dim=-1, dtype=torch.float32)  # (N, V) at T
                kd = target.loss(logp_t)
                if T == 1.0:
                    ce = F.nll_loss(logp_t, flat_targets)
                elif loss.ce_weight > 0:
                    ce = F.cross_entropy(logits.float(), flat_targets)
                else:
                    with torch.no_grad():
                        ce = F.cross_entropy(logits.float(), flat_targets)
                objective = loss.distill_weight * kd + loss.ce_weight * ce
            aux = out.aux_loss
            if aux is not None and loss.aux_loss_weight > 0:
                objective = objective + loss.aux_loss_weight * aux
            (objective * scale).backward()
        if learns_data:  # in-place distillation target: built from detached values, no grad flows back
            target = DistillTarget.from_log_probs(logp, T) if T == 1.0 else DistillTarget.from_logits(logits, T)
        stats[arm.name] = ArmStats(
            loss=float(objective.detach()),
            ce=float(ce.detach()),
            kd=None if kd is None else float(kd.detach()),
            aux=None if aux is None else float(aux.detach()),
        )
    return stats


__all__ = ["Arm", "ArmStats", "DistillTarget", "SandwichLoss", "autocast", "distill_loss", "sandwich_step"]
