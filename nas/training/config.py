"""The training config: the YAML sections of ``nas train CONFIG.yaml``, validated by pydantic.

Every section forbids unknown keys and is frozen; :func:`load_train_config` and
:func:`parse_train_config` turn a validation failure into one :class:`nas.errors.NasError`
that names the file and the offending fields (never a pydantic dump).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.errors import NasError
from nas.model.precision import fast_dtype
from nas.training.data import CorpusSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Training text (see :mod:`nas.training.data`). Relative paths are tried against the current
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
    #: false: no smallest arm (the largest and ``n_random`` random sub-networks a step)
    train_smallest: bool = True
    #: how a random arm is drawn: ``uniform`` (every dim independently) or ``spread`` (one
    #: size level a draw shared by every dim, so sizes cover the range; nas.training.sampling)
    arm_draw: Literal["uniform", "spread"] = "uniform"
    aux_loss_weight: float = Field(0.01, ge=0)
    stages: list[StageConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SandwichConfig:
        untils = [s.until for s in self.stages]
        if untils and (untils != sorted(untils) or len(set(untils)) != len(untils) or untils[-1] != 1.0):
            raise ValueError("stages must have strictly increasing 'until' fractions ending at 1.0")
        if self.distill_weight == 0 and self.ce_weight == 0:
            raise ValueError("distill_weight and ce_weight are both 0: the sub-networks would learn nothing")
        if not self.train_smallest and self.n_random == 0:
            raise ValueError("train_smallest=false with n_random 0 trains the largest alone: give n_random >= 1")
        return self


ERNIE_AXES = ("n_layer", "n_expert", "top_k")
ERNIE_DEFAULTS = {"n_layer": 0.75, "n_expert": 0.8, "top_k": 0.8}


class ErnieConfig(_Section):
    """The ERNIE 5 elastic schedule (``schedule: ernie``; arXiv 2602.04705 §3.3): every step
    trains *one* sub-network on the data, each axis drawn independently — its full value
    with this probability, else one of its smaller choices uniformly. None (the default):
    ERNIE's value (0.75 depth, 0.8 experts, 0.8 top-k) where the search space is elastic in
    the axis, else the axis stays full. A number for an axis the space does not vary is
    an error (checked before the first step), as is a top-k choice above an expert choice."""
    n_layer: float | None = None
    n_expert: float | None = None
    top_k: float | None = None
    #: reduced steps also learn from the full sub-network's distribution on the same batch
    #: (its logits without gradient: one more forward a reduced step), weighted like the
    #: sandwich's students (``sandwich.distill_weight`` x KL + ``sandwich.ce_weight`` x CE);
    #: off (the default): every step learns the data alone, as in ERNIE 5
    distill: bool = False
    #: every step also trains the full sub-network on the data, first (the sandwich's largest
    #: arm on ERNIE's draws): a reduced draw is then a second arm on the same batch, which
    #: learns the data alone, or with ``distill`` the full arm's distribution of that step
    #: (in place: no extra forward). Off (the default): ERNIE 5's one sub-network a step
    train_full: bool = False

    @field_validator("n_layer", "n_expert", "top_k")
    @classmethod
    def _probability(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"the probability of the full value must be within [0, 1], got {value}")
        return value

    def given(self) -> dict[str, float]:
        """The axes given a probability in the YAML."""
        return {axis: p for axis in ERNIE_AXES if (p := getattr(self, axis)) is not None}


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
    schedule: Literal["sandwich", "ernie"] = "sandwich"
    ernie: ErnieConfig = ErnieConfig()
    optim: OptimConfig = OptimConfig()
    steps: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    micro_batch_size: int | None = Field(None, gt=0)
    seq_len: int = Field(256, gt=1)
    #: ``auto``: bf16 autocast where the device runs bf16 natively, else fp32 (resolved on parsing)
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, gt=0)
    eval_every: int = Field(0, ge=0)
    eval_tokens: int = Field(32_768, gt=0)
    log_every: int = Field(10, gt=0)
    memory_limit_gb: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _resolve_dtype(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dtype", "auto") == "auto":
            data = {**data, "dtype": fast_dtype(str(data.get("device", "auto")))[0]}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (self.model is None) == (self.init_from is None):
            raise ValueError("give exactly one of 'model' (train from scratch) or 'init_from' (a supernet directory)")
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one budget: 'steps' or 'tokens'")
        if self.teacher == "largest" and not self.sandwich.train_largest:
            raise ValueError("sandwich.train_largest=false needs teacher: frozen (the in-place teacher is the trained largest)")
        if self.schedule != "ernie" and self.ernie.distill:
            raise ValueError("ernie.distill belongs to the ernie schedule (the sandwich's students always distil); "
                             "remove it or use schedule: ernie")
        if self.schedule != "ernie" and self.ernie.train_full:
            raise ValueError("ernie.train_full belongs to the ernie schedule (the sandwich trains its largest arm every step "
                             "already); remove it or use schedule: ernie")
        if self.schedule == "ernie" and self.sandwich.stages:
            raise ValueError("sandwich.stages belong to the sandwich schedule; remove them or use schedule: sandwich")
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


__all__ = [
    "DataConfig",
    "ERNIE_AXES",
    "ERNIE_DEFAULTS",
    "ErnieConfig",
    "ModelConfig",
    "OptimConfig",
    "SandwichConfig",
    "StageConfig",
    "TokenizerConfig",
    "TrainConfig",
    "load_train_config",
    "parse_train_config",
]
