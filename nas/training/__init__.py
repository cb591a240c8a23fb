"""Training supernets: from scratch with the sandwich rule, or healing an imported one.

Modules, in the order a step uses them:

- :mod:`~nas.training.config` — the YAML training config (``TrainConfig`` and its
  sections), parsed and validated with clear errors;
- :mod:`~nas.training.data` — the training text: load, clean, tokenise (cached), split
  and batch deterministically;
- :mod:`~nas.training.sampling` — which sub-networks (arms) each step trains
  (``ArmSampler``, progressive-shrinking stages; ``ErnieSampler``, ERNIE 5's schedule);
- :mod:`~nas.training.sandwich` — the per-step losses: cross-entropy, in-place or
  frozen-teacher distillation, MoE load balancing (``sandwich_step``);
- :mod:`~nas.training.memory` — the memory estimate and the check that refuses a run
  that will not fit;
- :mod:`~nas.training.optim` — AdamW and the learning-rate schedule;
- :mod:`~nas.training.distributed` — the ``torchrun`` process group and torch DDP
  (``no_sync`` on all but a step's last backward, ``find_unused_parameters``);
- :mod:`~nas.training.checkpoints` — saving, listing and loading exactly-resumable
  checkpoints;
- :mod:`~nas.training.runlog` — ``OUT/train/log.jsonl``;
- :mod:`~nas.training.trainer` — the loop itself (``train``), its progress reports and
  the held-out loss;
- :mod:`~nas.training.heal` — ``nas heal``: healing a supernet from its frozen full model, a
  thin layer over ``train`` (budget in tokens or time, defaults per device, resume checks).
"""

from __future__ import annotations

from nas.training.checkpoints import list_checkpoints
from nas.training.config import (
    DataConfig,
    ErnieConfig,
    ModelConfig,
    OptimConfig,
    SandwichConfig,
    StageConfig,
    TokenizerConfig,
    TrainConfig,
    load_train_config,
    parse_train_config,
)
from nas.training.memory import MemoryEstimate, available_memory, check_memory, estimate_memory
from nas.training.sampling import ARM_DRAWS, ArmSampler, ErnieSampler, ernie_sampler, level_pick, restrict
from nas.training.sandwich import Arm, ArmStats, DistillTarget, SandwichLoss, distill_loss, sandwich_step, student_objective
from nas.training.trainer import EvalReport, StepReport, TrainResult, evaluate_loss, train, train_flops_per_token, window_losses

__all__ = [
    "ARM_DRAWS",
    "Arm",
    "ArmSampler",
    "ArmStats",
    "DataConfig",
    "ErnieConfig",
    "ErnieSampler",
    "EvalReport",
    "MemoryEstimate",
    "ModelConfig",
    "OptimConfig",
    "SandwichConfig",
    "SandwichLoss",
    "StageConfig",
    "StepReport",
    "TokenizerConfig",
    "TrainConfig",
    "TrainResult",
    "available_memory",
    "check_memory",
    "DistillTarget",
    "distill_loss",
    "ernie_sampler",
    "estimate_memory",
    "evaluate_loss",
    "level_pick",
    "list_checkpoints",
    "load_train_config",
    "parse_train_config",
    "restrict",
    "sandwich_step",
    "student_objective",
    "train",
    "train_flops_per_token",
    "window_losses",
]
