"""A study's front, its hypervolume and its aggregate accuracy, from its trial rows.

The one implementation behind ``nas status``, ``nas results``, the HTML report and the
web pages, so that they always show the same front and the same numbers. Everything
works on a trial frame in the shape of :func:`storage.study_results` (one row per trial:
``trial``, ``state``, ``feasible``, ``fidelity``, ``config_hash``, ``<task>/<metric>``
with ``<task>/<metric>_stderr``, cost columns) and the stored study spec (a mapping;
partial or foreign specs fall back to sensible defaults).

* :func:`study_axes` reads what a study is judged on from its spec: the objectives
  (mapped onto frame columns), the aggregate's weights and the top fidelity;
* :func:`annotate` adds the derived columns every view shows: composite costs
  (``memory``, ``latency_ms``), ``accuracy`` and ``accuracy_stderr``, ``full_fidelity``
  and ``on_front``;
* :func:`candidates_mask` — complete, feasible, top-fidelity trials with every
  objective known, one per sub-network (its first trial): only these make the front;
* :func:`front_mask`, :func:`pareto_ranks` — the front and non-dominated sorting;
* :func:`hypervolume_reference`, :func:`hypervolume_history`, :func:`study_hypervolume`
  — the hypervolume on normalised axes: a minimised objective is divided by its
  reference (so costs span [0, 1] when the reference is the largest sub-network's
  cost), maximised metrics keep their scale with reference 0.

Plain numpy and pandas, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nas.metrics import (
    ACCURACY,
    COLUMN_ALIASES,
    COST_METRICS,
    DEFAULT_TASK_METRIC,
    MAIN_METRIC_PREFERENCE,
    Objective,
    objective,
)
from nas.pareto import hypervolume, non_dominated_mask, non_dominated_ranks
from nas.stats import weighted_mean

ACCURACY_STDERR = f"{ACCURACY}_stderr"
#: Suffix of the columns scored on a study's confirmation documents (see :func:`confirmed_column`).
CONFIRMED = "@confirmed"
#: Costs that stand in for the front when a spec names no objectives, in this order.
FALLBACK_COSTS = ("params", "non_embedding_params", "flops_per_token")


@dataclass(frozen=True)
class StudyAxes:
    """What a study is judged on: its objectives (frame columns), the weights of its
    aggregate accuracy (metric column -> weight) and its top fidelity label."""

    objectives: tuple[Objective, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    top_fidelity: str | None = None


# --------------------------------------------------------------------- spec -> axes
def study_axes(
    spec: Mapping[str, Any],
    frame: pd.DataFrame,
    *,
    cost_reference: Mapping[str, float] | None = None,
    objectives: Sequence[Objective] | None = None,
    fallback: bool = True,
) -> StudyAxes:
    """The axes of a study from its stored ``spec`` and its trial ``frame``.

    ``objectives`` replaces the spec's (e.g. ``nas results --objective``).
    ``cost_reference`` gives the hypervolume reference of cost objectives (the largest
    sub-network's costs). Without objectives in the spec, ``fallback`` uses ``accuracy``
    against the first of :data:`FALLBACK_COSTS` the frame has; else there are none.
    """
    metric_columns = _metric_columns(frame)
    if objectives is None:
        objectives = spec_objectives(spec, frame, cost_reference, fallback=fallback)
    return StudyAxes(
        objectives=tuple(objectives),
        weights=aggregate_weights(metric_columns, spec),
        top_fidelity=top_fidelity(frame, spec),
    )


def spec_objectives(
    spec: Mapping[str, Any],
    frame: pd.DataFrame,
    cost_reference: Mapping[str, float] | None = None,
    *,
    fallback: bool = True,
) -> tuple[Objective, ...]:
    """The spec's objectives mapped onto frame columns (see :func:`study_axes`)."""
    out: list[Objective] = []
    for item in spec.get("objectives") or []:
        if isinstance(item, str):
            name, direction, reference = item, None, None
        elif isinstance(item, Mapping):
            name = str(item.get("metric") or item.get("name") or item.get("column") or "")
            direction = item.get("direction")
            reference = item.get("reference")
        else:
            continue
        column = resolve_column(name, frame)
        if column is not None:
            ref = float(reference) if isinstance(reference, (int, float)) else (cost_reference or {}).get(column)
            out.append(objective(column, direction if direction in ("maximize", "minimize") else None, ref))
    if len(out) >= 2 or not fallback:
        return tuple(out)
    chosen = [objective(ACCURACY)]
    cost = next((c for c in FALLBACK_COSTS if c in frame.columns), None)
    if cost is not None:
        chosen.append(objective(cost))
    return tuple(chosen)


def resolve_column(name: str, frame: pd.DataFrame) -> str | None:
    """The frame column a user-facing name means (``accuracy``, ``latency``, ``hellaswag``,
    ``hellaswag/acc_norm``, ``params``, ``memory`` ...), or None. Names of the derived
    columns of :func:`annotate` resolve even before they are added."""
    if not name:
        return None
    if name not in frame.columns:
        name = COLUMN_ALIASES.get(name, name)
    if name in frame.columns or name == ACCURACY or _derivable(name, frame):
        return name
    if "/" not in name:  # a bare task name: its main metric
        default = f"{name}/{DEFAULT_TASK_METRIC.get(name, '')}"
        if default in frame.columns:
            return default
        columns = [c for c in frame.columns if c.startswith(name + "/") and not c.endswith("_stderr")]
        if columns:
            return main_metric_columns(columns)[name]
    return None


def main_metric_columns(metric_columns: Iterable[str]) -> dict[str, str]:
    """Each task's main metric column (``acc_norm`` before ``acc`` ...; else the first)."""
    by_task: dict[str, list[str]] = {}
    for col in metric_columns:
        task, _, metric = col.rpartition("/")
        by_task.setdefault(task, []).append(metric)
    out: dict[str, str] = {}
    for task, metrics in by_task.items():
        chosen = next((m for m in MAIN_METRIC_PREFERENCE if m in metrics), metrics[0])
        out[task] = f"{task}/{chosen}"
    return out


def aggregate_weights(metric_columns: Sequence[str], spec: Mapping[str, Any]) -> dict[str, float]:
    """Column -> weight of the study's aggregate accuracy.

    The spec's ``tasks`` (names or ``{name, metric, weight}``) pick each task's main
    metric (the spec's, else :data:`~nas.metrics.DEFAULT_TASK_METRIC`, else the best
    available); ``aggregation: weighted`` uses the weights, ``mean`` weighs every task 1.
    Without tasks in the spec every task's main metric counts.
    """
    mains = main_metric_columns(metric_columns)
    available = set(metric_columns)
    weighted = spec.get("aggregation") == "weighted"
    weights: dict[str, float] = {}
    for task in spec.get("tasks") or []:
        item = {"name": task} if isinstance(task, str) else task
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("name", ""))
        metric = item.get("metric") or DEFAULT_TASK_METRIC.get(name)
        col = f"{name}/{metric}" if metric and f"{name}/{metric}" in available else mains.get(name)
        if col and col in available:
            weights[col] = float(item.get("weight", 1.0)) if weighted else 1.0
    return weights or {col: 1.0 for col in mains.values()}


def top_fidelity(frame: pd.DataFrame, spec: Mapping[str, Any]) -> str | None:
    """The study's final fidelity: the spec's last ladder rung (within its search documents
    when it holds some out for confirmation), else ``full`` when any trial reached it, else
    the fidelity with the most examples seen in the frame."""
    ladder = spec.get("fidelities") or spec.get("fidelity_ladder") or spec.get("fidelity")
    confirmation = spec.get("confirmation")
    holdout = int(confirmation.get("examples", 0)) if isinstance(confirmation, Mapping) else 0
    labels = [_fidelity_label(rung, holdout) for rung in (ladder if isinstance(ladder, list) else [ladder] if ladder else [])]
    labels = [label for label in labels if label]
    if labels:
        return labels[-1]
    seen = frame["fidelity"].dropna().unique().tolist() if "fidelity" in frame.columns else []
    if not seen:
        return None
    return "full" if "full" in seen else max(seen, key=_fidelity_size)


# ------------------------------------------------------------------ derived columns
def annotate(frame: pd.DataFrame, axes: StudyAxes) -> pd.DataFrame:
    """A copy of ``frame`` with composite costs, ``accuracy`` (+ stderr), ``full_fidelity``
    and ``on_front`` added (see the module docstring)."""
    frame = frame.copy()
    derive_cost_columns(frame)
    frame[ACCURACY], frame[ACCURACY_STDERR] = aggregate_accuracy(frame, axes.weights)
    confirmed = {confirmed_column(c): w for c, w in axes.weights.items() if confirmed_column(c) in frame.columns}
    if confirmed:
        frame[confirmed_column(ACCURACY)], frame[confirmed_column(ACCURACY_STDERR)] = aggregate_accuracy(frame, confirmed)
    frame["full_fidelity"] = full_fidelity_mask(frame, axes.top_fidelity)
    frame["on_front"] = front_mask(frame, axes.objectives)
    return frame


def derive_cost_columns(frame: pd.DataFrame) -> list[str]:
    """Add (in place) the spec's composite cost names that storage does not hold as such:
    ``memory`` (weights + KV cache) and ``latency_ms`` (the measured prefill latency).
    Returns the columns added."""
    added = [name for name in COST_METRICS if name not in frame.columns and _derivable(name, frame)]
    for name in added:
        frame[name] = sum(frame[k] for k in COST_METRICS[name][0])
    return added


def confirmed_column(column: str) -> str:
    """The column of ``column`` (a metric, its ``_stderr``, ``accuracy``) on the confirmation
    documents: ``piqa/acc`` -> ``piqa/acc@confirmed``."""
    return column + CONFIRMED


def stderr_column(column: str) -> str:
    """The standard-error column of a metric column: ``piqa/acc`` -> ``piqa/acc_stderr``,
    ``piqa/acc@confirmed`` -> ``piqa/acc_stderr@confirmed``."""
    base, at, suffix = column.partition("@")
    return f"{base}_stderr{at}{suffix}"


def aggregate_accuracy(frame: pd.DataFrame, weights: Mapping[str, float]) -> tuple[pd.Series, pd.Series]:
    """The aggregate accuracy per trial and its standard error (tasks taken as independent,
    :func:`nas.stats.weighted_mean`). NaN where a metric is missing."""
    columns = [c for c in weights if c in frame.columns]
    if not columns:
        nan = pd.Series(np.nan, index=frame.index, dtype="float64")
        return nan, nan.copy()
    values = [frame[c].astype("float64") for c in columns]
    stderrs = [frame[stderr_column(c)] if stderr_column(c) in frame.columns else 0.0 for c in columns]
    mean, stderr = weighted_mean(values, stderrs, [weights[c] for c in columns])
    stderr = pd.Series(np.broadcast_to(stderr, len(frame.index)), index=frame.index, dtype="float64")
    return mean.astype("float64"), stderr.where(mean.notna())


def full_fidelity_mask(frame: pd.DataFrame, top: str | None) -> pd.Series:
    """Trials that reached the study's top fidelity."""
    if top is None or "fidelity" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["fidelity"].eq(top)


# ------------------------------------------------------------------------- the front
def first_of_each_subnet(frame: pd.DataFrame, mask: pd.Series) -> pd.Series:
    """Within ``mask``, only the first trial of each sub-network (``config_hash``): a
    sub-network the sampler proposed twice (the second answered from the cache) is one
    point of the front and one pick, not two."""
    if "config_hash" not in frame.columns or not mask.any():
        return mask
    rows = frame.loc[mask]
    if "trial" in rows.columns:
        rows = rows.sort_values("trial", kind="stable")
    return pd.Series(frame.index.isin(rows.drop_duplicates("config_hash").index), index=frame.index)


def candidates_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Rows that may be on the front: complete, feasible, full fidelity (the
    ``full_fidelity`` column of :func:`annotate`), every objective known and finite, the
    first trial of their sub-network."""
    mask = frame["feasible"].astype(bool) & frame["full_fidelity"].astype(bool)
    if "state" in frame.columns:
        mask &= frame["state"].fillna("COMPLETE").eq("COMPLETE")
    for o in objectives:
        if o.column not in frame.columns:
            return pd.Series(False, index=frame.index)
        mask &= np.isfinite(frame[o.column].to_numpy(dtype=float))
    return first_of_each_subnet(frame, mask)


def oriented(frame: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """(n, k) objective values turned into minimisation."""
    return np.column_stack([frame[o.column].to_numpy(dtype=float) * o.sign for o in objectives])


def front_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Non-dominated rows among :func:`candidates_mask` (False elsewhere, and everywhere
    without objectives)."""
    mask = candidates_mask(frame, objectives)
    out = pd.Series(False, index=frame.index)
    if objectives and mask.any():
        out.loc[mask] = non_dominated_mask(oriented(frame.loc[mask], objectives))
    return out


def pareto_ranks(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Front number of every candidate (0 = the front, 1 = the next ...), NA elsewhere."""
    mask = candidates_mask(frame, objectives)
    ranks = pd.Series(pd.array([pd.NA] * len(frame), dtype="Int64"), index=frame.index)
    if objectives and mask.any():
        ranks.loc[mask] = non_dominated_ranks(oriented(frame.loc[mask], objectives))
    return ranks


# ----------------------------------------------------------------------- hypervolume
@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume of the front after each trial, and the reference point (raw units)."""

    trials: tuple[int, ...]
    values: tuple[float, ...]
    reference: tuple[float, ...]


def hypervolume_reference(frame: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The reference point: the objective's ``reference`` (the spec's, or for analytic
    costs the largest sub-network's cost); 0 for maximised objectives; 1.1 x the worst
    candidate's value for other minimised ones."""
    cand = candidates_mask(frame, objectives)
    ref = []
    for o in objectives:
        if o.reference is not None:
            ref.append(float(o.reference))
        elif o.direction == "maximize":
            ref.append(0.0)
        else:
            seen = frame.loc[cand, o.column].dropna()
            worst = float(seen.max()) if len(seen) else 1.0
            ref.append(worst * 1.1 if worst > 0 else worst + 1.0)
    return tuple(ref)


def hypervolume_history(frame: pd.DataFrame, objectives: Sequence[Objective]) -> HypervolumeHistory:
    """Hypervolume of the front as trials arrive (by trial number), on normalised axes."""
    frame = frame.sort_values("trial")
    trials = tuple(int(t) for t in frame["trial"])
    mask = candidates_mask(frame, objectives).to_numpy()
    reference = hypervolume_reference(frame, objectives)
    if not mask.any():
        return HypervolumeHistory(trials, tuple(0.0 for _ in trials), reference)
    scale = np.array([abs(r) if (o.direction == "minimize" and r) else 1.0 for r, o in zip(reference, objectives)])
    values = oriented(frame, objectives) / scale
    ref_min = np.array(reference) * np.array([o.sign for o in objectives]) / scale
    out: list[float] = []
    front = np.zeros((0, len(objectives)))
    current = 0.0
    for i in range(len(frame)):
        if mask[i]:
            front = np.vstack([front, values[i]])
            front = front[non_dominated_mask(front)]
            current = float(hypervolume(front, ref_min))
        out.append(current)
    return HypervolumeHistory(trials=trials, values=tuple(out), reference=reference)


def study_hypervolume(frame: pd.DataFrame, objectives: Sequence[Objective]) -> float:
    """The study's final normalised hypervolume (see :func:`hypervolume_history`)."""
    hist = hypervolume_history(frame, objectives)
    return hist.values[-1] if hist.values else 0.0


# ------------------------------------------------------------------------- internals
def _derivable(name: str, frame: pd.DataFrame) -> bool:
    """A composite cost :func:`derive_cost_columns` can add to ``frame``."""
    keys = COST_METRICS.get(name, ((name,), ""))[0]
    return keys != (name,) and all(k in frame.columns for k in keys)


def _metric_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c for c in frame.columns if "/" in c and not c.endswith("_stderr") and "@" not in c)


def _fidelity_label(rung: Any, holdout: int = 0) -> str | None:
    """The storage label of a spec's ladder rung (see :class:`evaluators.types.Fidelity`)."""
    if rung is None:
        return None
    if isinstance(rung, str):
        return rung
    if isinstance(rung, int):
        return f"n{rung}-s0"
    if isinstance(rung, Mapping):
        limit = rung.get("limit")
        seed = int(rung.get("seed", 0))
        if limit is None:
            return "full" if not holdout else f"full-h{holdout}-s{seed}"
        return f"n{int(limit)}-s{seed}"
    return None


def _fidelity_size(label: str) -> int:
    if label == "full":
        return 1 << 62
    try:
        return int(label.split("-")[0].removeprefix("n"))
    except ValueError:
        return 0


__all__ = [
    "ACCURACY_STDERR",
    "CONFIRMED",
    "HypervolumeHistory",
    "StudyAxes",
    "aggregate_accuracy",
    "aggregate_weights",
    "annotate",
    "candidates_mask",
    "confirmed_column",
    "derive_cost_columns",
    "first_of_each_subnet",
    "front_mask",
    "full_fidelity_mask",
    "hypervolume_history",
    "hypervolume_reference",
    "main_metric_columns",
    "oriented",
    "pareto_ranks",
    "resolve_column",
    "spec_objectives",
    "study_axes",
    "stderr_column",
    "study_hypervolume",
    "top_fidelity",
]
