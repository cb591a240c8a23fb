"""A study's results shaped for figures, reports, pick and the web app.

:func:`load_study` reads one study through :func:`nas.search.results.load_results` — the
annotated trial frame ``nas status`` and ``nas results`` use too: composite costs,
``accuracy`` (+ stderr), ``full_fidelity``, ``on_front``, ``summary`` — and adds what the
views need on top:

* ``layers_glance`` — the config per layer (``layers 0 1 2<br>heads 9 9 6<br>d_ff ...``);
* numeric elastic dims ``config.n_layer``, ``config.d_model``, ``config.n_head_mean``,
  ``config.d_ff_mean`` and per supernet layer ``config.layer_<i>.n_head`` /
  ``config.layer_<i>.d_ff`` (0 where the layer is dropped);
* which columns are task metrics, costs and elastic dims.

The objectives come from the study spec and fall back to ``accuracy`` (max) against
``params`` (min) (:func:`nas.front.study_axes`). Column names are storage's:
``<task>/<metric>``, ``<task>/<metric>_stderr``, cost metrics by name.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.front import StudyAxes, resolve_column, study_hypervolume
from nas.metrics import ACCURACY, Direction, Objective, objective
from nas.pick import Bound, PickResult, pick
from nas.search.results import StudyResults, annotate_results, load_results, tied_with_best
from storage import Database, StorageError

_CONFIG_PREFIX = "config."
#: Columns every view frame has that are neither metrics, costs nor dims.
_BASE = {"trial", "state", "feasible", "fidelity", "subnet_id", "config_hash", "config_json"}
_DERIVED = {ACCURACY, f"{ACCURACY}_stderr", "summary", "layers_glance", "full_fidelity", "on_front", "tied"}


class TrialNotFound(StorageError, LookupError):
    """A trial number the study does not have."""


@dataclass(frozen=True)
class StudyView:
    """One study, ready to draw: the trial frame plus what its columns mean."""

    name: str
    status: str
    supernet_hash: str
    spec: dict[str, Any]
    frame: pd.DataFrame
    objectives: tuple[Objective, ...]
    metric_columns: tuple[str, ...]  # "<task>/<metric>" (no stderr columns)
    cost_columns: tuple[str, ...]
    dim_columns: tuple[str, ...]  # numeric elastic dims that vary in this study
    top_fidelity: str | None
    n_trials_target: int | None = None
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    axes: StudyAxes | None = None  # objectives, aggregate weights and top fidelity (nas.front)
    confirmed_fidelity: str | None = None  # where the ``@confirmed`` columns were scored

    @property
    def front(self) -> pd.DataFrame:
        return self.frame[self.frame["on_front"]]

    @property
    def hypervolume(self) -> float:
        """The final normalised hypervolume of the front (the number ``nas status`` prints)."""
        return study_hypervolume(self.frame, self.objectives)

    @property
    def cost_objectives(self) -> tuple[tuple[str, Direction], ...]:
        """(column, direction) of the study's cost objectives (not accuracy or task metrics)."""
        return tuple((o.column, o.direction) for o in self.objectives if o.column != ACCURACY and "/" not in o.column)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Every column an objective, constraint or axis may name."""
        return (ACCURACY, *self.metric_columns, *self.cost_columns)

    def objective_for(self, column: str) -> Objective:
        """The study's objective on ``column`` if it has one, else the default direction."""
        for o in self.objectives:
            if o.column == column:
                return o
        column = resolve_column(column, self.frame) or column
        for o in self.objectives:
            if o.column == column:
                return o
        if column not in self.frame.columns:
            raise StorageError(
                f"study {self.name!r} has no column {column!r}; known: {', '.join(self.value_columns)}"
            )
        return objective(column)

    def trial(self, number: int) -> pd.Series:
        rows = self.frame[self.frame["trial"] == number]
        if rows.empty:
            raise TrialNotFound(
                f"study {self.name!r} has no trial {number}; it has trials "
                f"{_ranges(self.frame['trial'].tolist())}"
            )
        return rows.iloc[0]


# -------------------------------------------------------------------------- pick
def pick_in_view(
    view: StudyView, metric: str, bounds: Sequence[Bound] = (), top: int | None = 5, *, db: Database | None = None,
    efficient_only: bool = True,
) -> PickResult:
    """:func:`nas.pick.pick` on a study with user-facing names (``accuracy``, ``latency``,
    a bare task ...) resolved against it; :class:`NasError` names an unknown one. Ranked by
    the confirmed score when the study has one; with ``db``, candidates statistically tied
    with the best are marked (paired test on their per-example scores)."""
    column = resolve_column(metric, view.frame)
    if column is None:
        raise NasError(f"study {view.name!r} has no metric {metric!r}; use one of {', '.join(view.value_columns)}")
    resolved = []
    for b in bounds:
        col = resolve_column(b.column, view.frame)
        if col is None:
            raise NasError(f"study {view.name!r} has no column {b.column!r} to bound; use one of {', '.join(view.value_columns)}")
        resolved.append(Bound(col, max=b.max, min=b.min))
    confirmation = view.spec.get("confirmation")
    z = float(confirmation.get("z", 1.96)) if isinstance(confirmation, Mapping) else 1.96
    result = pick(view.frame, metric=column, bounds=resolved, direction=view.objective_for(column).direction, top=top,
                  show=[ACCURACY, *view.cost_columns], tradeoffs=view.cost_objectives, z=z, efficient_only=efficient_only)
    if db is None or view.axes is None:
        return result
    fidelity = view.confirmed_fidelity if result.confirmed else view.top_fidelity
    return tied_with_best(db, view.frame, view.spec, result, weights=view.axes.weights, fidelity=fidelity)


# ----------------------------------------------------------------------- loading
def load_study(db: Database, name: str) -> StudyView:
    """Read study ``name`` and derive the view (raises :class:`StorageError` if unknown).

    ``tied`` marks the trials whose accuracy (confirmed when the study has it) the paired
    test cannot tell from the best trial's: the ties a decision has to know about."""
    view = view_of(load_results(db, name, flatten_config=flatten_config))
    view.frame["tied"] = False
    if view.frame[ACCURACY].notna().any():
        ranked = pick_in_view(view, ACCURACY, top=None, db=db)
        tied = {c.trial for c in ranked.candidates if c.tied_with is not None}
        view.frame["tied"] = view.frame["trial"].isin(tied)
    return view


def build_view(
    frame: pd.DataFrame,
    *,
    name: str,
    status: str = "finished",
    supernet_hash: str = "",
    spec: Mapping[str, Any] | None = None,
    created_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
    cost_reference: Mapping[str, float] | None = None,
) -> StudyView:
    """A :class:`StudyView` of a frame in :func:`storage.study_results`'s shape (tests,
    synthetic studies). ``cost_reference``: hypervolume reference of cost objectives (the
    largest sub-network's costs, see :func:`nas.search.results.largest_subnet_costs`)."""
    spec = dict(spec or {})
    annotated, axes = annotate_results(frame, spec, cost_reference)
    return view_of(StudyResults(name=name, status=status, supernet_hash=supernet_hash, spec=spec, frame=annotated,
                                axes=axes, created_at=created_at, finished_at=finished_at))


def view_of(results: StudyResults) -> StudyView:
    """The view of a study's annotated results: column roles, elastic dims, per-layer glance."""
    frame = results.frame.copy()
    layer_cols = [c for c in frame.columns if c.startswith(_CONFIG_PREFIX + "layer_")]
    if layer_cols:  # per-layer dims are missing where a layer is dropped: 0 there
        frame[layer_cols] = frame[layer_cols].fillna(0)
    dims = sorted(
        (c for c in frame.columns
         if c.startswith(_CONFIG_PREFIX) and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique(dropna=True) > 1),
        key=_dim_order,
    )
    frame["layers_glance"] = [_glance(text) for text in frame["config_json"]]
    metric_cols = tuple(c for c in frame.columns if "/" in c and not c.endswith("_stderr") and "@" not in c)
    cost_cols = tuple(
        c for c in frame.columns
        if c not in _BASE and c not in _DERIVED and not c.startswith(_CONFIG_PREFIX) and "/" not in c and "@" not in c
    )
    spec = dict(results.spec)
    return StudyView(
        name=results.name,
        status=results.status,
        supernet_hash=results.supernet_hash,
        spec=spec,
        frame=frame,
        objectives=results.objectives,
        metric_columns=metric_cols,
        cost_columns=cost_cols,
        dim_columns=tuple(dims),
        top_fidelity=results.axes.top_fidelity,
        n_trials_target=_n_trials_target(spec),
        created_at=results.created_at,
        finished_at=results.finished_at,
        axes=results.axes,
        confirmed_fidelity=results.confirmed_fidelity,
    )


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric elastic dims of a sub-network config dict (see the module docstring)."""
    layers = [int(v) for v in config.get("layers", [])]
    n_head = [int(v) for v in config.get("n_head", [])]
    d_ff = [int(v) for v in config.get("d_ff", [])]
    n_expert = [int(v) for v in config.get("n_expert", []) or []]
    top_k = [int(v) for v in config.get("top_k", []) or []]
    out: dict[str, Any] = {
        "n_layer": len(layers),
        "d_model": int(config.get("d_model", 0)),
        "n_head_mean": float(np.mean(n_head)) if n_head else 0.0,
        "d_ff_mean": float(np.mean(d_ff)) if d_ff else 0.0,
    }
    if n_expert:
        out["n_expert_mean"] = float(np.mean(n_expert))
        out["top_k_mean"] = float(np.mean(top_k)) if top_k else 0.0
    for pos, layer in enumerate(layers):
        out[f"layer_{layer}.n_head"] = n_head[pos] if pos < len(n_head) else 0
        out[f"layer_{layer}.d_ff"] = d_ff[pos] if pos < len(d_ff) else 0
        if n_expert:
            out[f"layer_{layer}.n_expert"] = n_expert[pos]
    return out


def _dim_order(column: str) -> tuple[int, int, str]:
    name = column.removeprefix(_CONFIG_PREFIX)
    if name.startswith("layer_"):
        index, _, dim = name.removeprefix("layer_").partition(".")
        return (1, int(index) if index.isdigit() else 0, dim)
    order = ["n_layer", "d_model", "n_head_mean", "d_ff_mean", "n_expert_mean", "top_k_mean"]
    return (0, order.index(name) if name in order else len(order), name)


# ---------------------------------------------------------------------- helpers
def _glance(config_json: str) -> str:
    try:
        cfg = json.loads(config_json)
    except json.JSONDecodeError:
        return ""
    heads = " ".join(str(v) for v in cfg.get("n_head", []))
    d_ff = " ".join(str(v) for v in cfg.get("d_ff", []))
    layers = " ".join(str(v) for v in cfg.get("layers", []))
    text = f"layers {layers}<br>heads {heads}<br>d_ff {d_ff}"
    if cfg.get("n_expert"):
        text += "<br>experts " + " ".join(str(v) for v in cfg["n_expert"])
        text += "<br>top_k " + " ".join(str(v) for v in cfg.get("top_k", []))
    return text


def _n_trials_target(spec: Mapping[str, Any]) -> int | None:
    budget = spec.get("budget")
    value = budget.get("n_trials") if isinstance(budget, Mapping) else spec.get("n_trials")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ranges(values: Sequence[int]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    if len(values) > 8:
        return f"{values[0]}..{values[-1]} ({len(values)} trials)"
    return ", ".join(str(v) for v in values)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when missing / NaN / inf (for JSON)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


__all__ = ["StudyView", "TrialNotFound", "build_view", "finite", "flatten_config", "load_study", "pick_in_view", "view_of"]
