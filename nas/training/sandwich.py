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

A student's loss is one fused pass over its (N, V) logits (:func:`student_objective`): the
row's log-sum-exp, the KL term, the cross-entropy and the gradient with respect to the
logits come out of one loop per row (compiled by TorchInductor on a CPU where it builds;
elsewhere eager operations over chunks of rows), instead of a log-softmax, a product with the teacher's probabilities and their
backward passes, each a pass over N x V floats. On a small model those vocabulary-sized
passes are a large part of a step (SmolLM2's 49,152-token vocabulary against 576 channels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import NasError
from nas.model.fused import probe
from nas.model.layers import compiled
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
    model; otherwise the first arm (the largest) learns CE and is the teacher. ``fused``:
    students' losses in one pass over their logits (:func:`student_objective`; False: the
    unfused reference, a log-softmax and the losses from it)."""
    temperature: float = 1.0
    distill_weight: float = 1.0
    ce_weight: float = 0.0
    aux_loss_weight: float = 0.01
    frozen_teacher: bool = False
    fused: bool = True


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
            return cls(probs=probs, plogp=_total(probs, logp), temperature=temperature)

    def loss(self, student_logp: Tensor) -> Tensor:
        """Mean per-token KL(teacher || student) times T**2, from the student's log-probs (N, V)
        at the same temperature."""
        n = student_logp.shape[0]
        kl = (self.plogp - _total(self.probs, student_logp.reshape(self.probs.shape))) / n
        return kl * (self.temperature * self.temperature)


def _total(p: Tensor, logq: Tensor) -> Tensor:
    """sum p * log q over (N, V): per row in fp32, over rows in fp64. One fp32 dot over all
    N x V terms (millions for a vocabulary of 50k) drifts by a visible part of the KL, more
    the larger the batch; ``bench/heal_step.py`` compares the fused and unfused KL values."""
    return (p * logq).sum(dim=-1).double().sum().float()


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


# ------------------------------------------------------------ fused student loss
#: rows of logits per chunk of the eager fused loss: (64, 49,152) fp32 is 12 MB of intermediates
CHUNK_ROWS = 64


def _student_rows(z: Tensor, p: Tensor, t: Tensor, inv_t: Tensor, kd_coef: Tensor, ce_coef: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk of :func:`student_objective`: for logits ``z`` (n, V), teacher probabilities
    ``p`` (n, V) fp32 and targets ``t`` (n,), the gradient of ``kd_coef * KL + ce_coef * CE``
    with respect to ``z`` (n, V) in ``z``'s dtype, the rows' log-sum-exp of ``z / T`` (n,) and
    their cross-entropies against the teacher, -sum_v p log q (n,), accumulated in fp32 row by
    row (one sum over all N x V terms would lose the KL, a small difference of large sums)."""
    s = z.float() * inv_t  # (n, V)
    m = s.amax(dim=-1, keepdim=True)
    e = (s - m).exp()
    total = e.sum(dim=-1, keepdim=True)
    q = e / total  # the student's softmax at T
    psum = p.sum(dim=-1, keepdim=True)
    onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == t[:, None]  # (n, V)
    grad = kd_coef * (q * psum - p) + ce_coef * (q - onehot.float())
    lse = m + total.log()  # (n, 1)
    return grad.to(z.dtype), lse.squeeze(-1), (lse * psum).squeeze(-1) - (p * s).sum(dim=-1)


def _use_compiled(device: torch.device) -> bool:
    return device.type == "cpu" and probe()[0]


class _StudentObjective(torch.autograd.Function):
    """``kd_weight * KL(teacher || student) * T**2 + ce_weight * CE`` of logits (N, V), with KL
    and CE as non-differentiable side outputs; the gradient with respect to the logits is
    computed in the forward pass and only scaled in the backward one."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, probs: Tensor, plogp: Tensor, targets: Tensor,  # type: ignore[override]
                temperature: float, kd_weight: float, ce_weight: float) -> tuple[Tensor, Tensor, Tensor]:
        n, T = logits.shape[0], temperature
        dev = logits.device
        scalar = lambda v: torch.tensor(v, dtype=torch.float32, device=dev)  # noqa: E731 - tensors: no recompile per value
        inv_t, kd_coef, ce_coef = scalar(1.0 / T), scalar(kd_weight * T / n), scalar(ce_weight / n)
        if _use_compiled(dev):  # one loop per row, nothing of (N, V) materialised but the gradient
            grad, lse, cross = compiled(_student_rows)(logits, probs, targets, inv_t, kd_coef, ce_coef)
        else:  # eager: each operation a pass, over chunks of rows that stay in cache
            parts = [_student_rows(logits[a:a + CHUNK_ROWS], probs[a:a + CHUNK_ROWS], targets[a:a + CHUNK_ROWS],
                                   inv_t, kd_coef, ce_coef) for a in range(0, n, CHUNK_ROWS)]
            grad, lse, cross = (torch.cat([part[i] for part in parts]) for i in range(3))
        # KL = (sum p log p - sum p log q) / N, times T**2
        kd = ((plogp.double() + cross.double().sum()) / n * (T * T)).float()
        if T == 1.0:
            ce = (lse - logits.gather(1, targets[:, None]).squeeze(1).float()).mean()
        else:
            ce = F.cross_entropy(logits.float(), targets)
        ctx.grad = grad
        ctx.mark_non_differentiable(kd, ce)
        return kd_weight * kd + ce_weight * ce, kd, ce

    @staticmethod
    def backward(ctx: Any, g: Tensor, *_: Any) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad, ctx.grad = ctx.grad, None
        if not bool(g == 1):
            grad = grad.mul_(g.to(grad.dtype))
        return grad, None, None, None, None, None, None


def student_objective(logits: Tensor, target: DistillTarget, targets: Tensor, *, distill_weight: float = 1.0,
                      ce_weight: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """(objective, KL, CE) of a student's logits (N, V) against ``target`` (the teacher's
    distribution at its temperature) and the data ``targets`` (N,): objective =
    ``distill_weight`` x KL(teacher || student) x T**2 + ``ce_weight`` x cross-entropy, in one
    fused pass (see the module's docstring). The cross-entropy is differentiable at T == 1
    only: at another temperature ``ce_weight`` must be 0 (use the unfused losses)."""
    T = target.temperature
    if ce_weight and T != 1.0:
        raise NasError("student_objective: a cross-entropy share needs temperature 1")
    return _StudentObjective.apply(logits, target.probs, target.plogp, targets, T, distill_weight, ce_weight)


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
    logits, and shared by the students; each student costs one fused pass over its logits
    (:func:`student_objective`).
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
            elif loss.fused and (T == 1.0 or loss.ce_weight == 0):  # one fused pass over the logits
                assert target is not None
                objective, kd, ce = student_objective(logits, target, flat_targets, distill_weight=loss.distill_weight,
                                                      ce_weight=loss.ce_weight)
            else:  # a log-softmax, the KL and the cross-entropy from it, each with its backward
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


__all__ = ["Arm", "ArmStats", "DistillTarget", "SandwichLoss", "autocast", "distill_loss", "sandwich_step", "student_objective"]
