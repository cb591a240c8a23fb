"""Plain frozen rows returned by the query functions (never ORM objects).

Timestamps are timezone-aware UTC ``datetime`` objects on every backend.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NewEvaluation:
    """One metric of one task for a sub-network, to record (see :func:`storage.record_evaluation`).

    ``example_ids`` (JSON-serialisable ids, e.g. str or int) and ``example_scores`` (one
    float per id, same order) are optional and go together.
    """

    subnet_id: int
    task: str
    metric: str
    value: float
    stderr: float | None
    n_examples: int
    fidelity: str
    harness_version: str
    task_hash: str
    settings: str  # evaluators.types.scoring_settings(...): dtype, context window, log-softmax dtype
    wall_s: float
    example_ids: tuple[Any, ...] | None = None
    example_scores: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SupernetRow:
    """A stored supernet. ``config``/``space``/``provenance`` are the dicts given to upsert."""

    id: int
    content_hash: str
    name: str
    path: str
    config: dict[str, Any]
    space: dict[str, Any]
    provenance: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class SubnetRow:
    """A stored sub-network: canonical config JSON (exactly as given), hash, derived sizes."""

    id: int
    supernet_id: int
    config_json: str
    config_hash: str
    n_layer: int
    params: int
    created_at: dt.datetime


@dataclass(frozen=True)
class EvaluationRow:
    """One stored metric of one task for one sub-network at one fidelity.

    ``stderr`` is ``None`` when the metric has none; ``has_example_scores`` says whether
    :func:`storage.get_example_scores` will find per-example scores for ``id``;
    ``example_ids``/``example_scores`` carry them when the query asked for them.
    """

    id: int
    subnet_id: int
    config_hash: str
    task: str
    metric: str
    value: float
    stderr: float | None
    n_examples: int
    fidelity: str
    harness_version: str
    task_hash: str
    settings: str
    wall_s: float
    created_at: dt.datetime
    has_example_scores: bool
    example_ids: tuple[Any, ...] | None = None
    example_scores: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ExampleScores:
    """Per-example scores of one evaluation, in the order they were recorded.

    ``scores`` went through float32 storage, so they equal the recorded values to ~7
    significant digits (exactly for 0/1 accuracies).
    """

    evaluation_id: int
    example_ids: tuple[Any, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class CostRow:
    """One stored cost metric of a sub-network on a device and how it was obtained."""

    id: int
    subnet_id: int
    config_hash: str
    device: str
    metric: str
    value: float
    method: str
    created_at: dt.datetime


@dataclass(frozen=True)
class StudyRow:
    """A stored study with its supernet's content hash and how many trials it has recorded."""

    id: int
    name: str
    optuna_study_name: str
    spec: dict[str, Any]
    supernet_id: int
    supernet_hash: str
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    n_trials: int


@dataclass(frozen=True)
class TrialRow:
    """A study's Optuna trial number linked to its sub-network and the fidelity it reached."""

    id: int
    study_id: int
    trial_number: int
    subnet_id: int
    config_hash: str
    fidelity: str | None
    feasible: bool
    state: str
    created_at: dt.datetime
    updated_at: dt.datetime


__all__ = [
    "CostRow",
    "EvaluationRow",
    "ExampleScores",
    "StudyRow",
    "SubnetRow",
    "SupernetRow",
    "TrialRow",
]
