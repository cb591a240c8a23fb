"""Once-for-all supernet training: the sandwich rule with in-place distillation.

Every step draws one batch and runs several *arms* (sub-networks) on it, accumulating
their gradients into the shared weights before one optimiser step:

- the **largest** sub-network of the search space learns from the data (cross-entropy);
- the **smallest** and ``n_random`` **random** sub-networks learn from the largest one's
  *detached* logits (KL divergence at a temperature, times ``T**2``), plus an optional
  cross-entropy share.

With ``teacher: frozen`` (the default when ``init_from`` names an imported supernet)
every arm instead distils from a frozen copy of the full starting model: "healing" an
importance-ordered model so that its sub-networks recover quality. Optional progressive
shrinking enables the elastic dimensions in stages (``sandwich.stages``), as OFA does.
MoE supernets also sample ``n_expert``/``top_k`` and add the load-balancing loss.

Training is exactly resumable: a checkpoint holds the model, the optimiser, the LR
scheduler, the sub-network sampler's RNG state and the data position (samples
consumed; batches are a pure function of it, see :class:`nas.data.TokenBatches`), so a
run killed and resumed ends with the same weights as an uninterrupted one. Data
parallelism works under ``torchrun`` (gloo on CPU, NCCL on GPUs): ``batch_size`` is the
*global* batch, every rank takes its slice, and the accumulated gradients are averaged
with one all-reduce per step — the same config gives the same model on 1 or N processes.

The library never prints: progress goes to ``on_step``/``on_eval`` callbacks (the CLI
draws a rich progress bar), logs to ``OUT/train/log.jsonl`` and the ``logging`` module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import Tensor

from evaluators.cost import cost_breakdown
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.model.tokenizer import eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from nas.paths import work_dir
from nas.training.data import (
    CorpusSpec,
    TokenBatches,
    corpus_fingerprint,
    eval_windows,
    iter_documents,
    load_tokens,
    split_tokens,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
ELASTIC_DIMS = ("n_layer", "d_model", "n_head", "d_ff", "n_expert", "top_k")


# =================================================================== config
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Training text (see :mod:`nas.data`). Relative paths are tried against the current
    directory, then against ``NAS_DATA_DIR`` (so ``corpus/gutenberg`` works anywhere)."""
    corpus: list[str]
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    val_fraction: float = Field(0.01, gt=0, lt=0.5)
    max_chars: int | None = Field(None, gt=0)

    @field_validator("corpus", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def spec(self) -> CorpusSpec:
        return CorpusSpec(
            sources=tuple(self.corpus), text_field=self.text_field, hf_config=self.hf_config,
            hf_split=self.hf_split, max_chars=self.max_chars,
        )


class TokenizerConfig(_Section):
    """``path``: an existing Hugging Face tokenizer directory; else a byte-level BPE of
    ``vocab_size`` is trained on the corpus (cached under the work dir). Runs with
    ``init_from`` always keep the imported model's tokenizer."""
    path: str | None = None
    vocab_size: int = Field(8192, ge=258, le=262_144)
    min_frequency: int = Field(2, ge=1)
    train_chars: int | None = Field(None, gt=0)


class ModelConfig(_Section):
    """Sizes of a supernet trained from scratch (``vocab_size`` comes from the tokenizer)."""
    d_model: int = Field(gt=0)
    n_layer: int = Field(gt=0)
    n_head: int = Field(gt=0)
    n_kv_head: int | None = Field(None, gt=0)
    d_ff: int = Field(gt=0)
    head_dim: int = Field(0, ge=0)
    n_expert: int = Field(0, ge=0)
    top_k: int = Field(0, ge=0)
    moe_layers: list[int] | None = None
    shared_expert: bool = False
    tie_embeddings: bool = True
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    max_seq_len: int | None = Field(None, gt=0)


class StageConfig(_Section):
    """One progressive-shrinking stage: until ``until`` (fraction of the run's steps) only
    the dims in ``elastic`` vary; the others stay at their largest choice."""
    until: float = Field(gt=0, le=1)
    elastic: list[Literal["n_layer", "d_model", "n_head", "d_ff", "n_expert", "top_k"]]


class SandwichConfig(_Section):
    """The arms of every step and how the students learn: ``distill_weight`` x KL(teacher ||
    student) at ``temperature`` + ``ce_weight`` x cross-entropy on the data. With
    ``distill_ramp`` > 0 the students start on the data alone and move linearly to that
    mix over that fraction of the steps (in-place distillation from a still-untrained
    largest can pin every arm near the unigram distribution; see the issue-7 report)."""
    n_random: int = Field(2, ge=0)
    temperature: float = Field(1.0, gt=0)
    distill_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(0.0, ge=0)
    distill_ramp: float = Field(0.0, ge=0, le=1)
    teacher: Literal["largest", "frozen"] | None = None
    train_largest: bool = True
    aux_loss_weight: float = Field(0.01, ge=0)
    stages: list[StageConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SandwichConfig:
        untils = [s.until for s in self.stages]
        if untils and (untils != sorted(untils) or len(set(untils)) != len(untils) or untils[-1] != 1.0):
            raise ValueError("stages must have strictly increasing 'until' fractions ending at 1.0")
        if self.distill_weight == 0 and self.ce_weight == 0:
            raise ValueError("distill_weight and ce_weight are both 0: the sub-networks would learn nothing")
        return self


class OptimConfig(_Section):
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)


class TrainConfig(_Section):
    """A training run (``nas train CONFIG.yaml``). Give ``model`` (from scratch) or
    ``init_from`` (a supernet directory, e.g. an imported SmolLM2), and ``steps`` or
    ``tokens`` (the budget; tokens = steps * batch_size * seq_len)."""
    out: str
    seed: int = 0
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig | None = None
    init_from: str | None = None
    space: dict[str, Any] | str | None = None
    sandwich: SandwichConfig = SandwichConfig()
    optim: OptimConfig = OptimConfig()
    steps: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    micro_batch_size: int | None = Field(None, gt=0)
    seq_len: int = Field(256, gt=1)
    dtype: Literal["bf16", "fp32"] = "bf16"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, gt=0)
    eval_every: int = Field(0, ge=0)
    eval_tokens: int = Field(32_768, gt=0)
    log_every: int = Field(10, gt=0)
    memory_limit_gb: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (self.model is None) == (self.init_from is None):
            raise ValueError("give exactly one of 'model' (train from scratch) or 'init_from' (a supernet directory)")
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one budget: 'steps' or 'tokens'")
        if self.teacher == "largest" and not self.sandwich.train_largest:
            raise ValueError("sandwich.train_largest=false needs teacher: frozen (the in-place teacher is the trained largest)")
        return self

    @property
    def teacher(self) -> str:
        return self.sandwich.teacher or ("frozen" if self.init_from else "largest")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        assert self.tokens is not None
        if self.tokens < self.tokens_per_step:
            raise NasError(
                f"token budget {self.tokens:,} is smaller than one batch (batch_size {self.batch_size} x seq_len "
                f"{self.seq_len} = {self.tokens_per_step:,} tokens); raise tokens or lower batch_size/seq_len"
            )
        return self.tokens // self.tokens_per_step

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields replaced (``steps`` clears ``tokens`` and vice versa)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "steps" in changes:
            changes.setdefault("tokens", None)
        if "tokens" in changes and changes["tokens"] is not None:
            changes.setdefault("steps", None)
        data = self.model_dump()
        data.update(changes)
        return parse_train_config(data, source="overrides")


def _describe_validation(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"training config {source} is invalid: " + "; ".join(parts) + more


def parse_train_config(data: Any, *, source: str = "<dict>") -> TrainConfig:
    if not isinstance(data, dict):
        raise NasError(f"training config {source} must be a mapping of settings (see examples/train_tiny.yaml)")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise NasError(_describe_validation(exc, source)) from None


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config (clear errors, never a pydantic dump)."""
    file = Path(path)
    if not file.is_file():
        raise NasError(f"training config {file} does not exist; see examples/train_tiny.yaml")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise NasError(f"training config {file} is not valid YAML: {exc}") from None
    return parse_train_config(data, source=str(file))


# ============================================================ loss and step
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


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
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
) -> dict[str, ArmStats]:
    """Forward and backward every arm on one (micro-)batch, accumulating gradients into
    ``model`` (no zeroing, no optimiser step). Losses are multiplied by ``scale`` (the
    micro-batch's share of the step). Returns each arm's (unscaled) statistics.

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
        with torch.no_grad(), _autocast(device, dtype):
            target = DistillTarget.from_logits(teacher(inputs), T)
    stats: dict[str, ArmStats] = {}
    for index, arm in enumerate(arms):
        with _autocast(device, dtype):
            out = model.run(inputs, arm.subnet, return_aux=moe)
        logits = out.logits.flatten(0, 1)  # (N, V), bf16 under autocast
        learns_data = index == 0 and not loss.frozen_teacher
        kd: Tensor | None = None
        if learns_data:
            logp = F.log_softmax(logits, dim=-1, dtype=torch.float32)  # (N, V)
            ce = F.nll_loss(logp, flat_targets)
            objective = ce
        else:
            assert target is not None, "the first arm must be the largest (the in-place teacher)"
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


# ============================================================ arm sampling
def restrict(space: SearchSpace, pick: Callable[[tuple[int, ...]], int], elastic: Sequence[str]) -> SubnetConfig:
    """The sub-network whose elastic dims take ``pick(choices)`` and whose other dims take
    their largest choice (a progressive-shrinking stage)."""
    params = {}
    for name, choices in space.param_choices().items():
        params[name] = pick(choices) if name.rpartition(".")[2] in elastic else max(choices)
    return space.from_params(params)


class ArmSampler:
    """The sandwich: largest, smallest (if different) and ``n_random`` random sub-networks
    per step, drawn from ``rng`` (a ``random.Random`` whose state is checkpointed)."""
    def __init__(
        self,
        space: SearchSpace,
        *,
        n_random: int,
        rng: random.Random,
        stages: Sequence[StageConfig] = (),
        total_steps: int = 1,
        train_largest: bool = True,
    ) -> None:
        self.space = space
        self.n_random = n_random if space.size() > 1 else 0
        self.rng = rng
        self.stages = list(stages)
        self.total_steps = total_steps
        self.train_largest = train_largest
        self.largest = space.largest()

    def elastic(self, step: int) -> tuple[str, ...]:
        for stage in self.stages:
            if step < stage.until * self.total_steps:
                return tuple(stage.elastic)
        return ELASTIC_DIMS

    def arms(self, step: int) -> list[Arm]:
        elastic = self.elastic(step)
        full = elastic == ELASTIC_DIMS
        smallest = self.space.smallest() if full else restrict(self.space, min, elastic)
        out = [Arm("largest", self.largest)] if self.train_largest else []
        if smallest != self.largest:
            out.append(Arm("smallest", smallest))
        for i in range(self.n_random):
            sub = self.space.sample(self.rng) if full else restrict(self.space, self.rng.choice, elastic)
            if sub != self.largest:  # a copy of the teacher would learn nothing (KL to itself is 0)
                out.append(Arm(f"random{i}", sub))
        return out


# ================================================================== memory
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


# ============================================================ distributed
@dataclass(frozen=True)
class _Dist:
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


def _setup_dist(preference: str) -> _Dist:
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
    return _Dist(rank=rank, world=world, device=device, created=created)


def _allreduce_gradients(params: Sequence[torch.nn.Parameter], world: int, bucket_bytes: int = 32 << 20) -> None:
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


# ================================================================ reports
@dataclass(frozen=True)
class StepReport:
    step: int
    total_steps: int
    tokens: int
    lr: float
    arms: dict[str, ArmStats]
    tokens_per_s: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class EvalReport:
    step: int
    val_loss: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    out: Path
    content_hash: str
    steps: int
    tokens: int
    wall_time_s: float
    train_flops: float
    val_loss: dict[str, float]
    resumed_from: str | None = None
    stopped_early: bool = False


# ============================================================ evaluation
@torch.no_grad()
def evaluate_loss(
    model: Supernet, windows: Tensor, subnet: SubnetConfig | None = None, *, batch_size: int = 8, dtype: str = "bf16"
) -> float:
    """Mean next-token cross-entropy of ``subnet`` over ``windows`` (N, T + 1)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)
        with _autocast(device, dtype):
            logits = model(batch[:, :-1], subnet)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def train_flops_per_token(config: SupernetConfig, subnet: SubnetConfig, seq_len: int) -> float:
    """Training FLOPs per token of one arm: 3 x the forward FLOPs (forward + backward),
    attention at the mean causal context ``seq_len / 2`` (see :mod:`evaluators.cost`)."""
    return 3.0 * cost_breakdown(config, subnet, context_len=max(1, seq_len // 2)).flops_per_token


# ============================================================ the trainer
def _lr_lambda(optim: OptimConfig, total: int) -> Callable[[int], float]:
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


def _optimizer(model: Supernet, optim: OptimConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, foreach=False)


def _tokenizer_cache_key(config: TrainConfig) -> str:

    tok = config.tokenizer
    raw = f"{corpus_fingerprint(config.data.spec())}|bpe|{tok.vocab_size}|{tok.min_frequency}|{tok.train_chars}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _obtain_tokenizer(config: TrainConfig, run_dir: Path, resuming: bool) -> tuple[Any, str]:
    """The run's tokenizer (rank 0 only) and a description of where it came from."""
    saved = run_dir / "tokenizer"
    if resuming and saved.is_dir():
        return load_tokenizer(saved), f"resumed from {saved}"
    if config.init_from:
        tok = load_tokenizer(Path(config.init_from) / "tokenizer")
        source = f"imported with {config.init_from}"
    elif config.tokenizer.path:
        tok = load_tokenizer(config.tokenizer.path)
        source = config.tokenizer.path
    else:
        cache = work_dir() / "cache" / "tokenizers" / _tokenizer_cache_key(config)
        if cache.is_dir():
            tok = load_tokenizer(cache)
        else:
            docs: Iterator[str] = iter_documents(config.data.spec())
            if config.tokenizer.train_chars:
                docs = _capped(docs, config.tokenizer.train_chars)
            tok = train_tokenizer(docs, vocab_size=config.tokenizer.vocab_size, min_frequency=config.tokenizer.min_frequency)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            save_tokenizer(tok, tmp)
            try:
                tmp.rename(cache)  # atomic: concurrent runs never see a half-written cache entry
            except OSError:  # another run cached the same tokenizer first
                shutil.rmtree(tmp, ignore_errors=True)
        source = f"byte-level BPE ({len(tok)} tokens) trained on the corpus"
    save_tokenizer(tok, saved)
    return tok, source


def _capped(docs: Iterator[str], limit: int) -> Iterator[str]:
    for doc in docs:
        if limit <= 0:
            return
        yield doc[:limit]
        limit -= len(doc)


def _supernet_config(config: TrainConfig, vocab_size: int, tokenizer: Any) -> SupernetConfig:
    if config.init_from:
        path = Path(config.init_from) / "config.json"
        if not path.is_file():
            raise NasError(f"init_from {config.init_from} is not a supernet directory (no config.json); run `nas supernet import` first")
        return SupernetConfig.from_dict(json.loads(path.read_text()))
    m = config.model
    assert m is not None
    return SupernetConfig(
        vocab_size=vocab_size,
        d_model=m.d_model,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_kv_head=m.n_kv_head or m.n_head,
        d_ff=m.d_ff,
        head_dim=m.head_dim,
        max_seq_len=m.max_seq_len or max(config.seq_len, 256),
        rope_theta=m.rope_theta,
        norm_eps=m.norm_eps,
        tie_embeddings=m.tie_embeddings,
        n_expert=m.n_expert,
        top_k=m.top_k,
        moe_layers=tuple(m.moe_layers) if m.moe_layers is not None else None,
        shared_expert=m.shared_expert,
        bos_token_id=getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None,
        eos_token_id=getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None,
    )


def _search_space(config: TrainConfig, supernet: SupernetConfig, layer_rank: Sequence[int], loaded: SearchSpace | None) -> SearchSpace:
    if isinstance(config.space, str):
        return SearchSpace.from_yaml(config.space, supernet, layer_rank)
    if isinstance(config.space, dict):
        # keys given in the config override the imported supernet's space (else the default space)
        base = loaded.to_dict() if loaded is not None else {}
        return SearchSpace.from_dict({**base, **config.space}, supernet, layer_rank)
    return loaded or SearchSpace.default(supernet, layer_rank)


def list_checkpoints(out: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(out) / "train" / "checkpoints"
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise NasError(f"checkpoint {path} cannot be read ({exc}); resume from an earlier one") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NasError(f"{path} is not a training checkpoint of this tool (format {CHECKPOINT_FORMAT})")
    return state


def _config_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")


class _JsonLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, ArmStats):
        return {k: v for k, v in value.__dict__.items() if v is not None}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class _Window:
    """Running means of the arm statistics between two log lines."""
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, arms: dict[str, ArmStats]) -> None:
        for name, s in arms.items():
            group = "random" if name.startswith("random") else name
            acc = self.sums.setdefault(group, {})
            for key, value in s.__dict__.items():
                if value is not None:
                    acc[key] = acc.get(key, 0.0) + value
            self.counts[group] = self.counts.get(group, 0) + 1

    def means(self) -> dict[str, dict[str, float]]:
        out = {g: {k: round(v / self.counts[g], 5) for k, v in acc.items()} for g, acc in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return out


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    fresh: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or heal) a supernet and save it to ``config.out`` with its tokenizer and provenance.

    ``resume``: ``"latest"`` or a checkpoint path. Without it, an ``out`` that already has
    checkpoints is refused unless ``fresh`` (which deletes them). ``stop_after``: stop
    after that many steps without saving the supernet (as if the run were killed; the
    checkpoints written so far stay).
    """
    dist_info = _setup_dist(config.device)
    try:
        return _Trainer(config, dist_info).run(resume=resume, fresh=fresh, on_step=on_step, on_eval=on_eval, stop_after=stop_after)
    finally:
        if dist_info.created:
            dist.destroy_process_group()


class _Trainer:
    def __init__(self, config: TrainConfig, d: _Dist) -> None:
        self.config = config
        self.d = d
        self.out = Path(config.out)
        self.run_dir = self.out / "train"

    # ------------------------------------------------------------- set-up
    def _checkpoint_to_resume(self, resume: str | Path | None, fresh: bool) -> Path | None:
        existing = list_checkpoints(self.out)
        if resume is None:
            if existing and not fresh:
                raise NasError(
                    f"{self.out} already has training checkpoints (latest {existing[-1].name}); "
                    "resume it (--resume) or start over (--fresh), or choose another --out"
                )
            if fresh and self.d.main and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            self.d.barrier()
            return None
        if str(resume) == "latest":
            if not existing:
                raise NasError(f"nothing to resume: {self.out} has no checkpoints in train/checkpoints")
            return existing[-1]
        path = Path(resume)
        if not path.is_file():
            raise NasError(f"checkpoint {path} does not exist")
        return path

    def run(
        self,
        *,
        resume: str | Path | None,
        fresh: bool,
        on_step: Callable[[StepReport], None] | None,
        on_eval: Callable[[EvalReport], None] | None,
        stop_after: int | None,
    ) -> TrainResult:
        cfg, d = self.config, self.d
        total_steps = cfg.total_steps()
        local_batch, remainder = divmod(cfg.batch_size, d.world)
        if remainder:
            raise NasError(f"batch_size {cfg.batch_size} is not divisible by the {d.world} processes; make it a multiple")
        micro = min(cfg.micro_batch_size or local_batch, local_batch)
        if local_batch % micro:
            raise NasError(f"micro_batch_size {micro} does not divide the per-process batch {local_batch}")
        ckpt_path = self._checkpoint_to_resume(resume, fresh)
        state = _load_checkpoint(ckpt_path) if ckpt_path else None
        frozen = cfg.teacher == "frozen"

        # memory first: refuse before tokenising or allocating anything big
        pre_vocab = cfg.tokenizer.vocab_size
        if cfg.tokenizer.path and not cfg.init_from:

            pre_vocab = len(load_tokenizer(cfg.tokenizer.path))
        estimate = estimate_memory(
            _supernet_config(cfg, pre_vocab, None), micro_batch=micro, seq_len=cfg.seq_len, dtype=cfg.dtype, frozen_teacher=frozen
        )
        check_memory(estimate, available=available_memory(d.device), limit_gb=cfg.memory_limit_gb)
        log.info("memory estimate: %s", estimate.describe())

        # tokenizer and tokens: rank 0 builds the caches, the others read them
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tokenizer, tok_source = _obtain_tokenizer(cfg, self.run_dir, resuming=state is not None)
        d.barrier()
        if not d.main:

            tokenizer, tok_source = load_tokenizer(self.run_dir / "tokenizer"), "rank 0"

        cache_dir = work_dir() / "cache"
        if d.main:
            stream, corpus_key = load_tokens(cfg.data.spec(), tokenizer, cache_dir=cache_dir, eos=eos_id(tokenizer))
        d.barrier()
        if not d.main:
            stream, corpus_key = load_tokens(cfg.data.spec(), tokenizer, cache_dir=cache_dir, eos=eos_id(tokenizer))
        train_tokens, val_tokens = split_tokens(stream, val_fraction=cfg.data.val_fraction, seq_len=cfg.seq_len)
        batches = TokenBatches(train_tokens, cfg.seq_len, cfg.seed)
        val = eval_windows(val_tokens, cfg.seq_len, cfg.eval_tokens)

        # model, teacher, space
        net_config = _supernet_config(cfg, len(tokenizer), tokenizer)
        if len(tokenizer) > net_config.vocab_size:
            raise NasError(f"the tokenizer has {len(tokenizer)} tokens but the supernet's vocab_size is {net_config.vocab_size}")
        teacher: Supernet | None = None
        loaded_space: SearchSpace | None = None
        init_hash: str | None = None
        if cfg.init_from:

            loaded = load_supernet(cfg.init_from, dtype="fp32", device=d.device)
            model, loaded_space, init_hash = loaded.model, loaded.space, loaded.content_hash
            if frozen:
                teacher = model.extract(model.full_subnet())
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = Supernet(net_config)
            model = model.to(d.device)
            if frozen:
                teacher = model.extract(model.full_subnet())
        if teacher is not None:
            teacher.requires_grad_(False).eval()
            if cfg.dtype == "bf16":
                teacher = teacher.to(torch.bfloat16)
        model.train()
        space = _search_space(cfg, model.config, model.layer_rank, loaded_space)

        optimizer = _optimizer(model, cfg.optim)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim, total_steps))
        rng = random.Random(cfg.seed)
        step, samples, tokens_seen, flops, elapsed = 0, 0, 0, 0.0, 0.0
        if state is not None:
            self._check_compatible(state, ckpt_path, model, space, fingerprint(tokenizer), corpus_key)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            version, internal, gauss = state["sample_rng"]
            rng.setstate((version, tuple(internal), gauss))
            step, samples, tokens_seen = state["step"], state["samples"], state["tokens"]
            flops, elapsed = state["train_flops"], state["elapsed_s"]
            if step > total_steps:
                raise NasError(f"checkpoint {ckpt_path} is at step {step}, beyond this run's {total_steps} steps; raise steps/tokens")
        sampler = ArmSampler(
            space, n_random=cfg.sandwich.n_random, rng=rng, stages=cfg.sandwich.stages,
            total_steps=total_steps, train_largest=cfg.sandwich.train_largest,
        )
        loss_cfg = SandwichLoss(
            temperature=cfg.sandwich.temperature, distill_weight=cfg.sandwich.distill_weight,
            ce_weight=cfg.sandwich.ce_weight, aux_loss_weight=cfg.sandwich.aux_loss_weight, frozen_teacher=frozen,
        )
        ramp_steps = cfg.sandwich.distill_ramp * total_steps

        def step_loss(step: int) -> SandwichLoss:
            r = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
            if r >= 1.0:
                return loss_cfg
            return dataclasses.replace(
                loss_cfg, distill_weight=r * loss_cfg.distill_weight, ce_weight=(1.0 - r) + r * loss_cfg.ce_weight
            )

        flops_cache: dict[SubnetConfig, float] = {}

        def arm_flops(sub: SubnetConfig) -> float:
            if sub not in flops_cache:
                flops_cache[sub] = train_flops_per_token(model.config, sub, cfg.seq_len)
            return flops_cache[sub]

        teacher_flops = arm_flops(model.full_subnet()) / 3.0 if frozen else 0.0
        jlog = _JsonLog(self.run_dir / "log.jsonl" if d.main else None)
        jlog.write(
            "start", step=step, total_steps=total_steps, world_size=d.world, resumed_from=ckpt_path,
            tokenizer=tok_source, train_tokens_available=int(train_tokens.size), val_tokens=int(val.numel()),
            params=model.num_params(), memory_estimate=estimate.describe(), space=space.to_dict(),
            config=cfg.model_dump(mode="json"),
        )
        if d.main and state is None:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

        params = [p for p in model.parameters()]
        window = _Window()
        recent: list[float] = []
        stopped = False
        val_loss: dict[str, float] = {}
        start_step = step
        while step < total_steps:
            if stop_after is not None and step - start_step >= stop_after:
                stopped = True
                break
            t0 = time.perf_counter()
            arms = sampler.arms(step)
            batch = batches.get(samples + d.rank * local_batch, local_batch).to(d.device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            optimizer.zero_grad(set_to_none=True)
            stats: dict[str, ArmStats] = {}
            for m0 in range(0, local_batch, micro):
                part = sandwich_step(
                    model, inputs[m0:m0 + micro], targets[m0:m0 + micro], arms, step_loss(step),
                    teacher=teacher, dtype=cfg.dtype, scale=micro / local_batch,
                )
                stats = part if not stats else {
                    k: ArmStats(
                        loss=stats[k].loss + part[k].loss, ce=stats[k].ce + part[k].ce,
                        kd=None if part[k].kd is None else (stats[k].kd or 0.0) + part[k].kd,
                        aux=None if part[k].aux is None else (stats[k].aux or 0.0) + part[k].aux,
                    ) for k in part
                }
            n_micro = local_batch // micro
            if n_micro > 1:
                stats = {k: ArmStats(s.loss / n_micro, s.ce / n_micro, None if s.kd is None else s.kd / n_micro,
                                     None if s.aux is None else s.aux / n_micro) for k, s in stats.items()}
            if d.world > 1:
                _allreduce_gradients(params, d.world)
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            samples += cfg.batch_size
            tokens_seen += cfg.tokens_per_step
            flops += cfg.tokens_per_step * (sum(arm_flops(a.subnet) for a in arms) + teacher_flops)
            dt = time.perf_counter() - t0
            elapsed += dt
            recent = (recent + [dt])[-20:]
            window.add(stats)
            if d.main and on_step is not None:
                per_step = sum(recent) / len(recent)
                on_step(StepReport(
                    step=step, total_steps=total_steps, tokens=tokens_seen, lr=lr, arms=stats,
                    tokens_per_s=cfg.tokens_per_step / per_step, elapsed_s=elapsed, eta_s=per_step * (total_steps - step),
                ))
            if step % cfg.log_every == 0 or step == total_steps:
                jlog.write("step", step=step, tokens=tokens_seen, lr=lr, arms=window.means(),
                           tokens_per_s=round(cfg.tokens_per_step * len(recent) / sum(recent), 1), elapsed_s=round(elapsed, 2))
            if d.main and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                val_loss = self._evaluate(model, val, space)
                jlog.write("eval", step=step, tokens=tokens_seen, val_loss=val_loss)
                if on_eval is not None:
                    on_eval(EvalReport(step=step, val_loss=val_loss))
            if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total_steps):
                path = self._save_checkpoint(model, optimizer, scheduler, rng, space, step, samples, tokens_seen, flops,
                                             elapsed, fingerprint(tokenizer), corpus_key)
                jlog.write("checkpoint", step=step, path=path)

        if stopped:
            jlog.write("stopped", step=step)
            return TrainResult(out=self.out, content_hash="", steps=step, tokens=tokens_seen, wall_time_s=elapsed,
                               train_flops=flops, val_loss={}, resumed_from=None if ckpt_path is None else str(ckpt_path),
                               stopped_early=True)

        digest = ""
        if d.main:
            val_loss = self._evaluate(model, val, space)
            jlog.write("eval", step=step, tokens=tokens_seen, val_loss=val_loss)
            if on_eval is not None:
                on_eval(EvalReport(step=step, val_loss=val_loss))

            provenance = {
                "source": "nas train",
                "init_from": None if cfg.init_from is None else {"path": cfg.init_from, "content_hash": init_hash},
                "teacher": cfg.teacher,
                "train_tokens": tokens_seen,
                "train_steps": step,
                "train_flops": flops,
                "wall_time_s": round(elapsed, 2),
                "world_size": d.world,
                "tokenizer": tok_source,
                "corpus": {"sources": cfg.data.corpus, "cache_key": corpus_key, "train_tokens_available": int(train_tokens.size)},
                "val_loss": val_loss,
                "config": cfg.model_dump(mode="json"),
            }
            digest = save_supernet(model, self.out, space=space, tokenizer=tokenizer, provenance=provenance)
            jlog.write("end", step=step, tokens=tokens_seen, wall_time_s=round(elapsed, 2), train_flops=flops, content_hash=digest)
        d.barrier()
        return TrainResult(
            out=self.out, content_hash=digest, steps=step, tokens=tokens_seen, wall_time_s=elapsed, train_flops=flops,
            val_loss=val_loss, resumed_from=None if ckpt_path is None else str(ckpt_path),
        )

    # ------------------------------------------------------------ helpers
    def _evaluate(self, model: Supernet, val: Tensor, space: SearchSpace) -> dict[str, float]:
        largest, smallest = space.largest(), space.smallest()
        out = {"largest": round(evaluate_loss(model, val, largest, dtype=self.config.dtype), 5)}
        if smallest != largest:
            out["smallest"] = round(evaluate_loss(model, val, smallest, dtype=self.config.dtype), 5)
        return out

    def _check_compatible(
        self, state: dict[str, Any], path: Path | None, model: Supernet, space: SearchSpace, tok_fp: str, corpus_key: str
    ) -> None:
        mine = model.config.to_dict()
        if state["supernet_config"] != mine:
            raise NasError(
                f"checkpoint {path} was written for another supernet config ({_config_difference(state['supernet_config'], mine)}); "
                "resume with the config that wrote it, or start a fresh run with another --out"
            )
        if list(state["layer_rank"]) != list(model.layer_rank) or state["space"] != space.to_dict():
            raise NasError(f"checkpoint {path} was written for another search space or layer rank; resume with the same space")
        if state["tokenizer"] != tok_fp:
            raise NasError(f"checkpoint {path} was written with another tokenizer; resume with the same tokenizer")
        if state["corpus"] != corpus_key:
            raise NasError(f"checkpoint {path} was written on another corpus (or tokenisation); resume with the same data")
        if state["seed"] != self.config.seed or state["batch_size"] != self.config.batch_size or state["seq_len"] != self.config.seq_len:
            raise NasError(f"checkpoint {path} used another seed, batch_size or seq_len; an exact resume needs the same values")

    def _save_checkpoint(
        self, model: Supernet, optimizer: torch.optim.Optimizer, scheduler: Any, rng: random.Random, space: SearchSpace,
        step: int, samples: int, tokens: int, flops: float, elapsed: float, tok_fp: str, corpus_key: str,
    ) -> Path | None:
        if not self.d.main:
            return None
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        version, internal, gauss = rng.getstate()
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "samples": samples,
            "tokens": tokens,
            "train_flops": flops,
            "elapsed_s": elapsed,
            "seed": self.config.seed,
            "batch_size": self.config.batch_size,
            "seq_len": self.config.seq_len,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sample_rng": [version, list(internal), gauss],
            "supernet_config": model.config.to_dict(),
            "layer_rank": list(model.layer_rank),
            "space": space.to_dict(),
            "tokenizer": tok_fp,
            "corpus": corpus_key,
        }
        path = folder / f"step_{step:08d}.pt"
        tmp = folder / f".{path.name}.tmp"
        torch.save(state, tmp)
        tmp.replace(path)
        for old in list_checkpoints(self.out)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path


__all__ = [
    "Arm",
    "ArmSampler",
    "ArmStats",
    "DataConfig",
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
    "estimate_memory",
    "evaluate_loss",
    "list_checkpoints",
    "load_train_config",
    "parse_train_config",
    "restrict",
    "sandwich_step",
    "train",
    "train_flops_per_token",
]
