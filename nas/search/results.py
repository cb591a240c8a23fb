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
from dataclasses import dataclass
from typing import Any

import pandas as pd

from evaluators.cost import analytic_cost_values
from evaluators.errors import EvaluatorError
from nas.errors import NasError
from nas.front import StudyAxes, annotate, study_axes, study_hypervolume
from nas.metrics import Objective
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from storage import Database, StorageError, get_study, get_supernet, study_results


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
    frame = study_results(db, name, device=device, all_fidelities=all_fidelities, flatten_config=flatten_config)
    row = get_study(db, name)
    if row is None:
        raise StorageError(f"no study named {name!r}")
    spec = row.spec or {}
    frame, axes = annotate_results(frame, spec, largest_subnet_costs(db, row.supernet_hash, spec),
                                   objectives=objectives, fallback=fallback)
    return StudyResults(name=row.name, status=row.status, supernet_hash=row.supernet_hash, spec=spec, frame=frame,
                        axes=axes, created_at=row.created_at, finished_at=row.finished_at)


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


__all__ = ["StudyResults", "annotate_results", "largest_subnet_costs", "load_results"]
