"""Plain result types shared by the evaluators, the search and storage.

These are the contract between `evaluators` and their callers: frozen dataclasses,
no torch tensors, so that they can be stored, compared and sent over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluators.errors import EvaluatorError


@dataclass(frozen=True)
class Fidelity:
    """How much of each task to evaluate: ``limit`` seeded examples per task, or all (None).

    The subset is a deterministic function of (task, limit, seed) — a seeded shuffle,
    never simply the first documents — so every candidate of a study sees the same one.
    """

    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise EvaluatorError(f"fidelity limit must be >= 1 (or None for the full task), got {self.limit}")

    @property
    def label(self) -> str:
        """Stable string form used in storage: ``"full"`` or ``"n100-s0"``."""
        return "full" if self.limit is None else f"n{self.limit}-s{self.seed}"

    @classmethod
    def parse(cls, label: str) -> Fidelity:
        if label == "full":
            return cls()
        try:
            n, s = label.split("-")
            return cls(limit=int(n.removeprefix("n")), seed=int(s.removeprefix("s")))
        except ValueError:
            raise EvaluatorError(f"fidelity {label!r} is not 'full' or 'n<limit>-s<seed>' (e.g. n100-s0)") from None


@dataclass(frozen=True)
class TaskScore:
    """One metric of one task: value, standard error, and the per-example scores behind it."""

    task: str
    metric: str
    value: float
    stderr: float
    n_examples: int
    example_ids: tuple[int, ...] = ()
    example_scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class Metrics:
    """Everything one evaluation of one sub-network produced."""

    scores: tuple[TaskScore, ...]
    fidelity: str
    harness_version: str
    task_hashes: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    n_model_calls: int = 0

    def get(self, task: str, metric: str) -> TaskScore:
        for s in self.scores:
            if s.task == task and s.metric == metric:
                return s
        known = sorted({f"{s.task}/{s.metric}" for s in self.scores})
        raise EvaluatorError(f"no score {task}/{metric}; this evaluation has {known}")

    def as_dict(self) -> dict[str, float]:
        """``{"task/metric": value}``."""
        return {f"{s.task}/{s.metric}": s.value for s in self.scores}


@dataclass(frozen=True)
class CostValue:
    """One cost figure and how it was obtained (``analytic``, ``measured`` or ``predicted``)."""

    value: float
    method: str
    unit: str = ""
    note: str = ""


@dataclass(frozen=True)
class Costs:
    """Costs of one sub-network on one device.

    ``values`` maps a metric name (``params``, ``non_embedding_params``,
    ``active_params``, ``flops_per_token``, ``weight_memory_bytes``,
    ``kv_cache_bytes``, ``prefill_latency_ms``, ``decode_tokens_per_s``, ...) to its value.
    """

    values: dict[str, CostValue]
    device: str
    context: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[name].value
        except KeyError:
            raise EvaluatorError(f"no cost {name!r}; known costs: {sorted(self.values)}") from None


__all__ = ["CostValue", "Costs", "Fidelity", "Metrics", "TaskScore"]
