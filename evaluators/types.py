"""Plain result types shared by the evaluators, the search and storage.

These are the contract between `evaluators` and their callers: frozen dataclasses,
no torch tensors, so that they can be stored, compared and sent over the wire.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from evaluators.errors import EvaluatorError

_LABEL = re.compile(r"^(?:n(?P<limit>\d+)|(?P<full>full)|c(?P<climit>\d+|all))(?:-h(?P<holdout>\d+))?(?:-s(?P<seed>\d+))?$")


def doc_order(task: str, n_docs: int, seed: int) -> list[int]:
    """The seeded order of a task's documents (a shuffle seeded by ``seed`` and the task
    name): every fidelity of a study takes its documents from it."""
    order = list(range(n_docs))
    random.Random(f"{seed}:{task}").shuffle(order)
    return order


@dataclass(frozen=True)
class Fidelity:
    """Which documents of each task to score: the first ``limit`` of the task's seeded
    order (:func:`doc_order`), or all of them (``limit=None``).

    ``holdout`` documents at the end of the order are a study's *confirmation* set: the
    search (``confirm=False``) never scores them, and ``confirm=True`` scores the first
    ``limit`` of them (all with ``limit=None``). Search fidelities of one seed and holdout
    are nested — the first 100 documents are inside the first 200 — so a candidate
    promoted to a higher fidelity keeps its earlier documents (:meth:`contains`).

    Labels (the storage key): ``n100-s0``; ``full`` (every document, no holdout);
    ``full-h200-s0`` (every search document when 200 are held out); ``c100-h200-s0``
    (the first 100 confirmation documents); ``call-h200-s0`` (all of them).
    """

    limit: int | None = None
    seed: int = 0
    holdout: int = 0
    confirm: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise EvaluatorError(f"fidelity limit must be >= 1 (or None for the full task), got {self.limit}")
        if self.holdout < 0:
            raise EvaluatorError(f"fidelity holdout must be >= 0, got {self.holdout}")
        if self.confirm and not self.holdout:
            raise EvaluatorError("a confirmation fidelity needs the study's held-out documents (holdout > 0)")

    @property
    def label(self) -> str:
        """Stable string form used in storage (see the class docstring)."""
        if self.confirm:
            return f"c{'all' if self.limit is None else self.limit}-h{self.holdout}-s{self.seed}"
        if self.limit is not None:
            return f"n{self.limit}-s{self.seed}"
        return "full" if not self.holdout else f"full-h{self.holdout}-s{self.seed}"

    @classmethod
    def parse(cls, label: str) -> Fidelity:
        m = _LABEL.match(label)
        if m is None:
            raise EvaluatorError(
                f"fidelity {label!r} is not 'full', 'n<limit>-s<seed>', 'full-h<holdout>-s<seed>' or "
                "'c<limit>-h<holdout>-s<seed>' (e.g. n100-s0)"
            )
        seed, holdout = int(m["seed"] or 0), int(m["holdout"] or 0)
        if m["full"]:
            return cls(None, seed, holdout)
        if m["limit"]:
            return cls(int(m["limit"]), seed, holdout)
        return cls(None if m["climit"] == "all" else int(m["climit"]), seed, holdout, confirm=True)

    def doc_ids(self, task: str, n_docs: int) -> list[int]:
        """The documents of ``task`` (of ``n_docs``) this fidelity scores, ascending."""
        if not self.holdout:
            if self.limit is None or self.limit >= n_docs:
                return list(range(n_docs))
            return sorted(doc_order(task, n_docs, self.seed)[: self.limit])
        if self.holdout >= n_docs:
            raise EvaluatorError(
                f"task {task} has {n_docs} documents: holding out {self.holdout} for confirmation leaves none to "
                "search; lower confirmation.examples"
            )
        order = doc_order(task, n_docs, self.seed)
        pool = order[n_docs - self.holdout:] if self.confirm else order[: n_docs - self.holdout]
        if self.limit is not None and self.limit > len(pool):
            part = "confirmation" if self.confirm else "search"
            raise EvaluatorError(
                f"fidelity {self.label} asks for {self.limit} {part} documents of {task}, but only {len(pool)} remain "
                f"({n_docs} documents, {self.holdout} held out for confirmation); ask for at most {len(pool)}"
            )
        return sorted(pool if self.limit is None else pool[: self.limit])

    def contains(self, other: Fidelity) -> bool:
        """True when every document ``other`` scores is one this fidelity scores, on every
        task: the same part (search or confirmation), seed and holdout, and a prefix of it."""
        if (other.confirm, other.seed) != (self.confirm, self.seed):
            return False
        if self.confirm:  # a confirmation set is the order's tail: its holdout fixes where it starts
            return other.holdout == self.holdout and (self.limit is None or (other.limit is not None and other.limit <= self.limit))
        # search documents are the order's head, whatever the holdout: ``n50-s0`` is the first 50
        # of them with or without one (its label carries none), inside ``full-h100-s0`` and ``n100-s0``
        if other.limit is None:
            return self.limit is None and self.holdout <= other.holdout
        return self.limit is None or other.limit <= self.limit


def scoring_settings(**settings: Any) -> str:
    """The settings that change a score (dtype, context window, log-softmax dtype, few-shot
    count ...) in canonical form: sorted JSON, ``None`` values dropped. Part of the
    evaluation cache key, so runs that could differ never share a stored result."""
    return json.dumps({k: v for k, v in settings.items() if v is not None}, sort_keys=True, separators=(",", ":"))


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


__all__ = ["CostValue", "Costs", "Fidelity", "Metrics", "TaskScore", "doc_order", "scoring_settings"]
