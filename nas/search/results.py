"""A study's results as every view shows them: ``nas status``, ``nas results``, the report, the web.

:func:`load_results` reads a study's trial rows from storage (:func:`storage.study_results`),
works out what the study is judged on from its stored spec (:func:`nas.front.study_axes`,
with the largest sub-network's analytic costs as the hypervolume reference of cost
objectives) and adds the derived columns (:func:`nas.front.annotate`). Each view builds on
the same :class:`StudyResults`, so they cannot disagree on the front, the aggregate
accuracy or the hypervolume. No torch: the web app imports this.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from evaluators.cost import analytic_cost_values
from evaluators.errors import EvaluatorError
from nas.errors import NasError
from nas.front import StudyAxes, annotate, study_axes, study_hypervolume
from nas.metrics import ACCURACY, Objective
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.pick import PickResult
from nas.stats import paired_weighted_difference
from storage import (
    Database,
    StorageError,
    get_study,
    get_supernet,
    study_fidelities,
    study_results,
    subnet_example_scores,
)


@dataclass(frozen=True)
class StudyResults:
    """One study's annotated trial frame and what its columns mean."""

    name: str
    status: str
    supernet_hash: str
    spec: Mapping[str, Any]
    frame: pd.DataFrame
    axes: StudyAxes
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    confirmed_fidelity: str | None = None  # the confirmation fidelity the ``@confirmed`` columns come from

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return self.axes.objectives

    @property
    def front(self) -> pd.DataFrame:
        return self.frame[self.frame["on_front"]]

    @property
    def hypervolume(self) -> float:
        """The final normalised hypervolume of the front (:func:`nas.front.study_hypervolume`)."""
        return study_hypervolume(self.frame, self.objectives)


def load_results(
    db: Database,
    name: str,
    *,
    objectives: Sequence[Objective] | None = None,
    fallback: bool = True,
    device: str | None = None,
    all_fidelities: bool = False,
    flatten_config: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
) -> StudyResults:
    """Study ``name`` from ``db``, annotated (raises :class:`StorageError` for an unknown study).

    ``objectives`` replaces the spec's; without objectives in the spec, ``fallback`` uses
    accuracy against params (see :func:`nas.front.study_axes`). ``device``,
    ``all_fidelities`` and ``flatten_config`` go to :func:`storage.study_results`.
    """
    row = get_study(db, name)
    if row is None:
        study_results(db, name)  # raises storage's "no study named ... known studies" error
        raise StorageError(f"no study named {name!r}")
    spec = row.spec or {}
    confirmed = confirmation_fidelity(db, name, spec)
    frame = study_results(db, name, device=device, all_fidelities=all_fidelities, flatten_config=flatten_config,
                          confirmed=confirmed)
    frame, axes = annotate_results(frame, spec, largest_subnet_costs(db, row.supernet_hash, spec),
                                   objectives=objectives, fallback=fallback)
    return StudyResults(name=row.name, status=row.status, supernet_hash=row.supernet_hash, spec=spec, frame=frame,
                        axes=axes, created_at=row.created_at, finished_at=row.finished_at, confirmed_fidelity=confirmed)


def tied_with_best(
    db: Database, frame: pd.DataFrame, spec: Mapping[str, Any], result: PickResult, *,
    weights: Mapping[str, float], fidelity: str | None,
) -> PickResult:
    """``result`` with ``tied_with = 1`` on every candidate whose paired interval of the
    difference to the best candidate (``z`` standard errors, on the documents both were
    scored on at ``fidelity``) covers 0: a tie the data cannot break."""
    if fidelity is None or len(result.candidates) < 2:
        return result
    metric = result.metric
    columns = dict(weights) if metric == ACCURACY else {metric: 1.0}
    parts = {tuple(c.rsplit("/", 1)): w for c, w in columns.items()}
    subnet_of = dict(zip(frame["trial"].astype(int), frame["subnet_id"].astype(int)))
    ids = [subnet_of[c.trial] for c in result.candidates if c.trial in subnet_of]
    scoring = spec.get("scoring") if isinstance(spec.get("scoring"), Mapping) else None
    examples: dict[int, dict[tuple[str, str], dict[int, float]]] = {}
    for row in subnet_example_scores(db, ids, fidelity=fidelity, settings=scoring):
        per_doc = dict(zip((int(i) for i in row.example_ids or ()), row.example_scores or ()))
        examples.setdefault(row.subnet_id, {})[(row.task, row.metric)] = per_doc
    best = examples.get(subnet_of.get(result.candidates[0].trial, -1), {})
    out = [result.candidates[0]]
    for c in result.candidates[1:]:
        diff = paired_weighted_difference(best, examples.get(subnet_of.get(c.trial, -1), {}), parts)
        tied = diff is not None and abs(diff[0]) <= result.z * diff[1]
        out.append(replace(c, tied_with=1 if tied else None))
    return replace(result, candidates=tuple(out))


def confirmation_fidelity(db: Database, name: str, spec: Mapping[str, Any]) -> str | None:
    """The label of the study's confirmation scores: of the confirmation fidelities of its
    held-out documents that were scored, the one with the most examples (None if none)."""
    confirmation = spec.get("confirmation")
    rungs = spec.get("fidelities") or []
    if not isinstance(confirmation, Mapping) or not rungs:
        return None
    seed = int(rungs[-1].get("seed", 0)) if isinstance(rungs[-1], Mapping) else 0
    tail = f"-h{int(confirmation.get('examples', 0))}-s{seed}"
    scored = {label: n for label, n in study_fidelities(db, name).items() if label.startswith("c") and label.endswith(tail)}
    return max(scored, key=lambda label: (scored[label], label)) if scored else None


def annotate_results(
    frame: pd.DataFrame,
    spec: Mapping[str, Any],
    cost_reference: Mapping[str, float] | None = None,
    *,
    objectives: Sequence[Objective] | None = None,
    fallback: bool = True,
) -> tuple[pd.DataFrame, StudyAxes]:
    """A trial frame of ``storage.study_results``'s shape, annotated (plus ``summary``, the
    sub-network at a glance: ``L24 h6..9 ff768..1536 d576``), and its axes."""
    axes = study_axes(spec, frame, cost_reference=cost_reference, objectives=objectives, fallback=fallback)
    frame = annotate(frame, axes)
    frame["summary"] = [_summary(text) for text in frame["config_json"]]
    return frame, axes


def largest_subnet_costs(db: Database, supernet_hash: str, spec: Mapping[str, Any]) -> dict[str, float]:
    """Analytic costs of the study space's largest sub-network under the spec's cost names
    (the hypervolume reference of cost objectives). Empty when the supernet row or its
    space is unusable (then the largest observed cost stands in)."""
    row = get_supernet(db, supernet_hash)
    if row is None or not row.config:
        return {}
    try:
        config = SupernetConfig.from_dict(row.config)
        rank = (row.space or {}).get("layer_rank") or list(range(config.n_layer))
        stored = SearchSpace.from_dict(row.space or {}, config, rank)
        space = SearchSpace.resolve(spec.get("space"), config, rank, stored)
        return analytic_cost_values(config, space.largest(), context_len=int(spec.get("context_len", 512)),
                                    dtype=str(spec.get("dtype", "bf16")))
    except (NasError, EvaluatorError, OSError, TypeError, ValueError):
        return {}  # a missing space file or an unusual supernet: fall back to observed costs


def _summary(config_json: str) -> str:
    try:
        return SubnetConfig.from_json(config_json).summary()
    except (NasError, TypeError, ValueError):  # a foreign config is shown raw rather than failing the page
        return config_json[:60]


__all__ = ["StudyResults", "annotate_results", "confirmation_fidelity", "largest_subnet_costs", "load_results",
           "tied_with_best"]
