"""A study's results shaped for figures, reports, pick and the web app.

:func:`load_study` reads one study from storage (:func:`storage.study_results` plus the
study row) and adds what every view needs:

* ``summary`` / ``layers_glance`` — the config at a glance (``L24 h6..9 ff768..1536 d576``
  and ``heads 9 9 6 … | d_ff 1536 1024 …``);
* numeric elastic dims ``config.n_layer``, ``config.d_model``, ``config.n_head_mean``,
  ``config.d_ff_mean`` and per supernet layer ``config.layer_<i>.n_head`` /
  ``config.layer_<i>.d_ff`` (0 where the layer is dropped);
* ``accuracy`` — the study's aggregate accuracy (mean of each task's main metric, or
  the spec's weights);
* ``full_fidelity`` — the trial reached the study's top fidelity; only those make the front;
* ``on_front`` — non-dominated among complete, feasible, full-fidelity trials under the
  study's objectives.

The objectives come from the study spec (``objectives: [{name, direction}]``) and fall
back to ``accuracy`` (max) against ``params`` (min). Column names are storage's:
``<task>/<metric>``, ``<task>/<metric>_stderr``, cost metrics by name.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from nas.pareto import hypervolume, non_dominated_mask
from nas.pick import first_of_each_subnet
from storage import Database, StorageError, get_study, study_results

Direction = Literal["maximize", "minimize"]

ACCURACY = "accuracy"
#: Task metrics preferred as a task's "main" metric, in this order.
MAIN_METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match", "f1", "mcc")
#: Metrics where lower is better (everything else that is a task metric is higher-is-better).
LOWER_IS_BETTER_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "loss", "nll")
_CONFIG_PREFIX = "config."

#: Friendly names of the usual cost columns (anything else is shown as is).
COST_LABELS = {
    "params": "parameters",
    "non_embedding_params": "non-embedding parameters",
    "active_params": "active parameters",
    "flops_per_token": "FLOPs / token",
    "weight_memory_bytes": "weight memory (bytes)",
    "kv_cache_bytes": "KV cache (bytes)",
    "prefill_latency_ms": "prefill latency (ms)",
    "latency_ms": "latency (ms)",
    "decode_latency_ms": "decode latency (ms)",
    "decode_tokens_per_s": "decode tokens / s",
}
HIGHER_IS_BETTER_COSTS = ("decode_tokens_per_s", "tokens_per_s", "throughput")


class TrialNotFound(StorageError, LookupError):
    """A trial number the study does not have."""


@dataclass(frozen=True)
class Objective:
    """One axis of a study: a column of the study frame and which way is better."""

    column: str
    direction: Direction = "minimize"
    label: str = ""
    reference: float | None = None  # the spec's hypervolume reference, if it gives one

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"objective {self.column}: direction must be maximize or minimize")
        if not self.label:
            object.__setattr__(self, "label", COST_LABELS.get(self.column, self.column))

    @property
    def sign(self) -> float:
        """Multiply by this to turn the objective into one to minimise."""
        return 1.0 if self.direction == "minimize" else -1.0


def default_direction(column: str) -> Direction:
    """Which way a column is better when nothing says so: task metrics and ``accuracy``
    up (perplexities and losses down), costs down (throughputs up)."""
    if column == ACCURACY:
        return "maximize"
    if "/" in column:
        metric = column.rsplit("/", 1)[1]
        return "minimize" if metric in LOWER_IS_BETTER_METRICS else "maximize"
    return "maximize" if column in HIGHER_IS_BETTER_COSTS else "minimize"


def objective(column: str, direction: Direction | None = None, reference: float | None = None) -> Objective:
    return Objective(column, direction or default_direction(column), reference=reference)


def resolve_column(name: str, frame: pd.DataFrame) -> str | None:
    """The frame column a user-facing name means (``accuracy``, ``latency``, ``hellaswag``,
    ``hellaswag/acc_norm``, ``params`` ...), or None."""
    return _objective_column(name, frame)


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def front(self) -> pd.DataFrame:
        return self.frame[self.frame["on_front"]]

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


# ----------------------------------------------------------------------- loading
def load_study(db: Database, name: str) -> StudyView:
    """Read study ``name`` and derive the view (raises :class:`StorageError` if unknown)."""
    row = get_study(db, name)
    if row is None:
        study_results(db, name)  # raises the storage's "no study named ... known studies" error
        raise StorageError(f"no study named {name!r}")
    frame = study_results(db, name, flatten_config=flatten_config)
    return build_view(
        frame,
        name=row.name,
        status=row.status,
        supernet_hash=row.supernet_hash,
        spec=row.spec or {},
        created_at=row.created_at,
        finished_at=row.finished_at,
        cost_reference=largest_subnet_costs(db, row.supernet_hash, row.spec or {}),
    )


def largest_subnet_costs(db: Database, supernet_hash: str, spec: Mapping[str, Any]) -> dict[str, float]:
    """Analytic costs of the search space's largest sub-network, under the spec's cost
    names (the hypervolume reference of cost objectives, as ``nas status`` uses). Empty
    when the supernet row or the cost model is unavailable (then the largest observed
    cost stands in)."""
    from storage import get_supernet

    row = get_supernet(db, supernet_hash)
    if row is None or not row.config:
        return {}
    try:
        from evaluators.cost import analytic_costs
        from nas.config import SupernetConfig
        from nas.space import SearchSpace
        from nas.spec import COST_METRICS

        config = SupernetConfig.from_dict(row.config)
        rank = (row.space or {}).get("layer_rank") or list(range(config.n_layer))
        space_spec = spec.get("space")
        if isinstance(space_spec, dict):
            space = SearchSpace.from_dict(space_spec, config, rank)
        elif isinstance(space_spec, str):
            space = SearchSpace.from_yaml(space_spec, config, rank)
        else:
            space = SearchSpace.from_dict(row.space or {}, config, rank)
        values = analytic_costs(config, space.largest(), context_len=int(spec.get("context_len", 512)),
                                dtype=str(spec.get("dtype", "bf16"))).values
    except Exception:  # noqa: BLE001 - a missing space file or an unusual supernet: fall back to observed costs
        return {}
    out = {}
    for name, (keys, method) in COST_METRICS.items():
        if method == "analytic" and all(k in values for k in keys):
            out[name] = float(sum(values[k].value for k in keys))
    return out


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
    """Derive a :class:`StudyView` from a :func:`storage.study_results` frame.

    ``cost_reference``: hypervolume reference of cost objectives (the largest
    sub-network's costs, see :func:`largest_subnet_costs`)."""
    spec = dict(spec or {})
    frame = frame.copy()
    metric_cols = tuple(
        c for c in frame.columns if "/" in c and not c.endswith("_stderr") and "@" not in c
    )
    base = {"trial", "state", "feasible", "fidelity", "subnet_id", "config_hash", "config_json"}
    cost_cols = tuple(
        c
        for c in frame.columns
        if c not in base and not c.startswith(_CONFIG_PREFIX) and "/" not in c and c not in _DERIVED
    )
    # per-layer dims are missing where a layer is dropped: 0 there
    layer_cols = [c for c in frame.columns if c.startswith(_CONFIG_PREFIX + "layer_")]
    if layer_cols:
        frame[layer_cols] = frame[layer_cols].fillna(0)
    dims = [
        c
        for c in frame.columns
        if c.startswith(_CONFIG_PREFIX)
        and pd.api.types.is_numeric_dtype(frame[c])
        and frame[c].nunique(dropna=True) > 1
    ]
    dims.sort(key=_dim_order)

    cost_cols = (*cost_cols, *derive_cost_columns(frame))
    frame[ACCURACY], frame[f"{ACCURACY}_stderr"] = aggregate_accuracy(frame, metric_cols, spec)
    frame["summary"] = [_summary(text) for text in frame["config_json"]]
    frame["layers_glance"] = [_glance(text) for text in frame["config_json"]]
    top = top_fidelity(frame, spec)
    frame["full_fidelity"] = frame["fidelity"].eq(top) if top is not None else False
    objectives = spec_objectives(spec, frame, cost_reference or {})
    frame["on_front"] = front_mask(frame, objectives)
    return StudyView(
        name=name,
        status=status,
        supernet_hash=supernet_hash,
        spec=spec,
        frame=frame,
        objectives=objectives,
        metric_columns=metric_cols,
        cost_columns=cost_cols,
        dim_columns=tuple(dims),
        top_fidelity=top,
        n_trials_target=_n_trials_target(spec),
        created_at=created_at,
        finished_at=finished_at,
    )


_DERIVED = {ACCURACY, f"{ACCURACY}_stderr", "summary", "layers_glance", "full_fidelity", "on_front"}


def _dim_order(column: str) -> tuple[int, int, str]:
    name = column.removeprefix(_CONFIG_PREFIX)
    if name.startswith("layer_"):
        index, _, dim = name.removeprefix("layer_").partition(".")
        return (1, int(index) if index.isdigit() else 0, dim)
    order = ["n_layer", "d_model", "n_head_mean", "d_ff_mean", "n_expert_mean", "top_k_mean"]
    return (0, order.index(name) if name in order else len(order), name)


# ------------------------------------------------------------------ derivations
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
    metric (the spec's, else :data:`nas.spec.DEFAULT_TASK_METRIC`, else the best
    available); ``aggregation: weighted`` uses the weights, ``mean`` weighs every task 1.
    Without tasks in the spec every task's main metric counts.
    """
    from nas.spec import DEFAULT_TASK_METRIC

    mains = main_metric_columns(metric_columns)
    available = set(metric_columns)
    weighted = spec.get("aggregation") == "weighted"
    weights: dict[str, float] = {}
    for task in spec.get("tasks") or []:
        item = {"name": task} if isinstance(task, str) else task
        if not isinstance(item, Mapping):
            continue
        tname = str(item.get("name", ""))
        metric = item.get("metric") or DEFAULT_TASK_METRIC.get(tname)
        col = f"{tname}/{metric}" if metric and f"{tname}/{metric}" in available else mains.get(tname)
        if col and col in available:
            weights[col] = float(item.get("weight", 1.0)) if weighted else 1.0
    return weights or {col: 1.0 for col in mains.values()}


def aggregate_accuracy(frame: pd.DataFrame, metric_columns: Sequence[str], spec: Mapping[str, Any]) -> tuple[pd.Series, pd.Series]:
    """The study's aggregate accuracy per trial and its standard error (tasks taken as
    independent: sqrt(sum w^2 se^2) / sum w). NaN where a metric is missing."""
    weights = aggregate_weights(metric_columns, spec)
    if not weights:
        nan = pd.Series(np.nan, index=frame.index, dtype="float64")
        return nan, nan.copy()
    total = sum(weights.values())
    acc = sum(frame[col] * w for col, w in weights.items()) / total
    var = sum((frame[f"{col}_stderr"].fillna(0.0) * w) ** 2 if f"{col}_stderr" in frame else 0.0 for col, w in weights.items())
    stderr = np.sqrt(var) / total
    return acc.astype("float64"), pd.Series(stderr, index=frame.index, dtype="float64").where(acc.notna())


def derive_cost_columns(frame: pd.DataFrame) -> list[str]:
    """Add the spec's composite cost names that storage does not hold as such: ``memory``
    (weights + KV cache) and ``latency_ms`` (the measured prefill latency). Returns the
    columns added."""
    from nas.spec import COST_METRICS

    added = []
    for name, (keys, _method) in COST_METRICS.items():
        if name in frame.columns or len(keys) < 2 or not all(k in frame.columns for k in keys):
            continue
        frame[name] = sum(frame[k] for k in keys)
        added.append(name)
    if "latency_ms" not in frame.columns and "prefill_latency_ms" in frame.columns:
        frame["latency_ms"] = frame["prefill_latency_ms"]
        added.append("latency_ms")
    return added


def top_fidelity(frame: pd.DataFrame, spec: Mapping[str, Any]) -> str | None:
    """The study's final fidelity: the spec's last ladder rung, else ``full`` when any trial
    reached it, else the fidelity with the most examples seen in the frame."""
    ladder = spec.get("fidelities") or spec.get("fidelity_ladder") or spec.get("fidelity")
    labels = [_fidelity_label(rung) for rung in (ladder if isinstance(ladder, list) else [ladder] if ladder else [])]
    labels = [label for label in labels if label]
    if labels:
        return labels[-1]
    seen = [f for f in frame["fidelity"].dropna().unique().tolist()]
    if not seen:
        return None
    if "full" in seen:
        return "full"
    return max(seen, key=_fidelity_size)


def _fidelity_label(rung: Any) -> str | None:
    if rung is None:
        return None
    if isinstance(rung, str):
        return rung
    if isinstance(rung, int):
        return f"n{rung}-s0"
    if isinstance(rung, Mapping):
        limit = rung.get("limit")
        seed = int(rung.get("seed", 0))
        return "full" if limit is None else f"n{int(limit)}-s{seed}"
    return None


def _fidelity_size(label: str) -> int:
    if label == "full":
        return 1 << 62
    try:
        return int(label.split("-")[0].removeprefix("n"))
    except ValueError:
        return 0


def spec_objectives(
    spec: Mapping[str, Any], frame: pd.DataFrame, cost_reference: Mapping[str, float] | None = None
) -> tuple[Objective, ...]:
    """The study's objectives from its spec (names mapped onto frame columns), else
    ``accuracy`` (max) vs ``params`` (min)."""
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
        column = _objective_column(name, frame)
        if column is not None:
            ref = float(reference) if isinstance(reference, (int, float)) else (cost_reference or {}).get(column)
            out.append(objective(column, direction if direction in ("maximize", "minimize") else None, ref))
    if len(out) >= 2:
        return tuple(out)
    fallback = [objective(ACCURACY)]
    for cost in ("params", "non_embedding_params", "flops_per_token"):
        if cost in frame.columns:
            fallback.append(objective(cost))
            break
    return tuple(fallback)


def _aliases() -> dict[str, str]:
    from nas.spec import COST_ALIASES

    return {"aggregate_accuracy": ACCURACY, "mean_accuracy": ACCURACY, "memory_bytes": "memory", **COST_ALIASES}


def _objective_column(name: str, frame: pd.DataFrame) -> str | None:
    if not name:
        return None
    if name in frame.columns or name == ACCURACY:
        return name
    alias = _aliases().get(name)
    if alias and (alias in frame.columns or alias == ACCURACY):
        return alias
    if "/" not in name:  # a bare task name: its main metric
        from nas.spec import DEFAULT_TASK_METRIC

        default = f"{name}/{DEFAULT_TASK_METRIC.get(name, '')}"
        if default in frame.columns:
            return default
        metric_cols = [c for c in frame.columns if c.startswith(name + "/") and not c.endswith("_stderr")]
        if metric_cols:
            return main_metric_columns(metric_cols)[name]
    return None


def candidates_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Rows that may be on the front: complete, feasible, full fidelity, every objective known."""
    mask = frame["feasible"].astype(bool) & frame["full_fidelity"].astype(bool)
    if "state" in frame.columns:
        mask &= frame["state"].fillna("COMPLETE").eq("COMPLETE")
    for o in objectives:
        mask &= frame[o.column].notna() if o.column in frame.columns else False
    return first_of_each_subnet(frame, mask)


def front_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Non-dominated rows among :func:`candidates_mask` (False elsewhere)."""
    mask = candidates_mask(frame, objectives)
    out = pd.Series(False, index=frame.index)
    if not mask.any():
        return out
    values = oriented(frame.loc[mask], objectives)
    out.loc[mask] = non_dominated_mask(values)
    return out


def oriented(frame: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """(n, k) objective values turned into minimisation."""
    return np.column_stack([frame[o.column].to_numpy(dtype=float) * o.sign for o in objectives])


# ----------------------------------------------------------------- hypervolume
@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume of the front after each trial, and the reference point (raw units)."""

    trials: tuple[int, ...]
    values: tuple[float, ...]
    reference: tuple[float, ...]


def hypervolume_reference(frame: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The reference point, by the search's convention (``nas status``): the objective's
    ``reference`` (the spec's, or for analytic costs the largest sub-network's cost); 0 for
    maximised objectives; 1.1 x the worst top-fidelity value for other minimised ones."""
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
    """Hypervolume of the feasible top-fidelity front as trials arrive (by trial number).

    Axes are scaled as the search does: a minimised objective by its reference (so costs
    span [0, 1]), maximised metrics keep their scale with reference 0; see
    :func:`hypervolume_reference`.
    """
    frame = frame.sort_values("trial")
    trials = tuple(int(t) for t in frame["trial"])
    mask = candidates_mask(frame, objectives).to_numpy()
    reference = hypervolume_reference(frame, objectives)
    if not mask.any():
        return HypervolumeHistory(trials, tuple(0.0 for _ in trials), reference)
    ref = np.array(reference)
    signs = np.array([o.sign for o in objectives])
    scale = np.array([abs(r) if (o.direction == "minimize" and r) else 1.0 for r, o in zip(reference, objectives)])
    values = oriented(frame, objectives) / scale
    ref_min = ref * signs / scale
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


def study_hypervolume(view: StudyView) -> float:
    """The study's final normalised hypervolume (see :func:`hypervolume_history`)."""
    hist = hypervolume_history(view.frame, view.objectives)
    return hist.values[-1] if hist.values else 0.0


# ---------------------------------------------------------------------- helpers
def _summary(config_json: str) -> str:
    from nas.space import SubnetConfig

    try:
        return SubnetConfig.from_json(config_json).summary()
    except Exception:  # noqa: BLE001 - a foreign config is shown raw rather than failing the page
        return config_json[:60]


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


__all__ = [
    "ACCURACY",
    "COST_LABELS",
    "HypervolumeHistory",
    "Objective",
    "StudyView",
    "TrialNotFound",
    "aggregate_accuracy",
    "aggregate_weights",
    "build_view",
    "candidates_mask",
    "default_direction",
    "finite",
    "flatten_config",
    "front_mask",
    "hypervolume_history",
    "hypervolume_reference",
    "largest_subnet_costs",
    "load_study",
    "main_metric_columns",
    "objective",
    "oriented",
    "resolve_column",
    "derive_cost_columns",
    "spec_objectives",
    "study_hypervolume",
    "top_fidelity",
]
