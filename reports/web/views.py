"""What the pages and the JSON API show, built from a :class:`~reports.data.StudyView`.

Plain dicts (study summaries, trial rows, candidate details, template contexts) and the
plotly figures, shared by :mod:`reports.web.pages` and :mod:`reports.web.api`; nothing
here knows about requests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

import storage
from nas.front import confirmed_column, front_mask, resolve_column
from nas.metrics import ACCURACY, COST_LABELS, Objective
from nas.pick import bounds_from_mapping
from reports import figures as F
from reports.data import StudyView, finite, pick_in_view
from reports.web.cache import StudyCache
from reports.web.schemas import PickBody
from reports.web.security import outside_roots

FIGURE_KINDS = ("pareto", "pareto3d", "hypervolume", "tasks", "parallel")


def study_summary(view: StudyView) -> dict[str, Any]:
    frame = view.frame
    return {
        "name": view.name,
        "status": view.status,
        "n_trials": int(len(frame)),
        "n_trials_target": view.n_trials_target,
        "n_feasible": int(frame["feasible"].sum()),
        "n_top_fidelity": int((frame["full_fidelity"] & frame["feasible"]).sum()),
        "front_size": int(frame["on_front"].sum()),
        "hypervolume": float(view.hypervolume),
        "supernet_hash": view.supernet_hash,
        "objectives": [{"column": o.column, "direction": o.direction} for o in view.objectives],
        "created_at": view.created_at.isoformat() if view.created_at else None,
        "finished_at": view.finished_at.isoformat() if view.finished_at else None,
    }


def study_summaries(db: storage.Database, cache: StudyCache) -> list[dict[str, Any]]:
    out = []
    for row in storage.list_studies(db):
        out.append(cache.derived(row.name, ("summary",), study_summary))
    return out


def trial_row(view: StudyView, r: pd.Series) -> dict[str, Any]:
    layers, d_ff = _layers_and_widths(str(r["config_json"]))
    return {
        "trial": int(r["trial"]),
        "state": str(r["state"]),
        "feasible": bool(r["feasible"]),
        "fidelity": r["fidelity"] if isinstance(r["fidelity"], str) else None,
        "full_fidelity": bool(r["full_fidelity"]),
        "on_front": bool(r["on_front"]),
        "config_hash": str(r["config_hash"]),
        "summary": str(r["summary"]),
        "accuracy": finite(r[ACCURACY]),
        "accuracy_stderr": finite(r[f"{ACCURACY}_stderr"]),
        "accuracy_confirmed": finite(r.get(confirmed_column(ACCURACY))),
        "accuracy_confirmed_stderr": finite(r.get(confirmed_column(f"{ACCURACY}_stderr"))),
        "tied": bool(r.get("tied", False)),
        "metrics": {c: finite(r[c]) for c in view.metric_columns},
        "stderr": {c: finite(r.get(f"{c}_stderr")) for c in view.metric_columns},
        "costs": {c: finite(r[c]) for c in view.cost_columns},
        "layers": layers,
        "d_ff": d_ff,
    }


def _layers_and_widths(config_json: str) -> tuple[list[int], list[int]]:
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError:
        return [], []
    return [int(v) for v in config.get("layers", [])], [int(v) for v in config.get("d_ff", [])]


def glance_svg(layers: list[int], d_ff: list[int], n_layer: int = 0, full_d_ff: int = 0) -> str:
    """A per-layer glance: one bar per supernet layer, its height the kept FFN width, a flat
    grey tick where the layer is dropped (the same markup as ``glanceSVG`` in app.js)."""
    n = n_layer or (max(layers) + 1 if layers else 0)
    if not n:
        return ""
    top = full_d_ff or max([*d_ff, 1])
    w, h = 3, 16
    kept = {layer: (d_ff[i] if i < len(d_ff) else 0) for i, layer in enumerate(layers)}
    bars = []
    for i in range(n):
        if i in kept:
            v = kept[i]
            bh = max(1 if v > 0 else 0, int(math.floor(h * v / top + 0.5)))
            bars.append(f'<rect x="{i * w}" y="{h - bh}" width="{w - 1}" height="{bh}"></rect>')
        else:
            bars.append(f'<rect class="dropped" x="{i * w}" y="{h - 1}" width="{w - 1}" height="1"></rect>')
    return (f'<svg class="glance" width="{n * w}" height="{h}" role="img"><title>FFN width kept per layer</title>'
            + "".join(bars) + "</svg>")


def constraint_violations(view: StudyView, row: pd.Series) -> list[dict[str, Any]]:
    """Each of the study's constraints that ``row`` breaks: the column, the bound, the value
    and by how much (absolute and relative), worst first."""
    out = []
    for c in view.spec.get("constraints") or []:
        column = resolve_column(str(c.get("metric")), view.frame) or str(c.get("metric"))
        value = finite(row.get(column))
        if value is None:
            continue
        for side, bound in (("max", c.get("max")), ("min", c.get("min"))):
            if bound is None:
                continue
            excess = value - float(bound) if side == "max" else float(bound) - value
            if excess > 0:
                out.append({"column": column, "side": side, "bound": float(bound), "value": value, "excess": excess,
                            "relative": excess / abs(float(bound)) if bound else None})
    return sorted(out, key=lambda v: -(v["relative"] or 0.0))


def difference_from_largest(config: dict[str, Any], supernet: dict[str, Any] | None) -> list[str]:
    """What a sub-network drops from the largest one, in words (layers, heads, FFN width, d_model)."""
    if not supernet:
        return []
    n_layer, n_head, d_ff = int(supernet.get("n_layer", 0)), int(supernet.get("n_head", 0)), int(supernet.get("d_ff", 0))
    layers = [int(v) for v in config.get("layers", [])]
    out = []
    dropped = [i for i in range(n_layer) if i not in layers]
    out.append(f"drops layers {', '.join(str(i) for i in dropped)}" if dropped else "keeps all layers")
    heads = [int(v) for v in config.get("n_head", [])]
    if heads and n_head:
        fewer = sum(1 for v in heads if v < n_head)
        out.append(f"fewer heads in {fewer} of {len(heads)} kept layers ({sum(heads) / (n_head * len(heads)):.0%} of the heads)"
                   if fewer else "all heads")
    widths = [int(v) for v in config.get("d_ff", [])]
    if widths and d_ff:
        narrow = sum(1 for v in widths if v < d_ff)
        out.append(f"narrower FFN in {narrow} of {len(widths)} kept layers ({sum(widths) / (d_ff * len(widths)):.0%} of the width)"
                   if narrow else "full FFN width")
    d_model = int(config.get("d_model", 0))
    if d_model and int(supernet.get("d_model", d_model)) != d_model:
        out.append(f"d_model {d_model} of {supernet['d_model']}")
    return out


def trial_brief(view: StudyView, trial: int) -> dict[str, Any]:
    """:func:`trial_row` plus the kept layers and their head counts and FFN widths."""
    row = view.trial(trial)
    config = json.loads(row["config_json"])
    out = trial_row(view, row)
    out.update(layers=[int(v) for v in config.get("layers", [])], n_head=[int(v) for v in config.get("n_head", [])],
               d_ff=[int(v) for v in config.get("d_ff", [])])
    return out


def trial_rows(view: StudyView, only: str) -> list[dict[str, Any]]:
    frame = view.frame
    if only == "front":
        frame = view.front
        costs = [o for o in view.objectives if o.direction == "minimize"]
        if costs:
            frame = frame.sort_values(costs[0].column)
    elif only == "feasible":
        frame = frame[frame["feasible"]]
    elif only == "top":
        frame = frame[frame["feasible"] & frame["full_fidelity"]]
    return [trial_row(view, r) for _, r in frame.iterrows()]


def axes_of(view: StudyView, x: str | None, y: str | None) -> tuple[Objective, Objective]:
    """The plotted (x, y) objectives: the given columns, else the study's default axes."""
    dx, dy = F.default_axes(view)
    return (view.objective_for(x) if x else dx), (view.objective_for(y) if y else dy)


def front_rows(view: StudyView, x: str | None = None, y: str | None = None) -> list[dict[str, Any]]:
    """The front of the plotted axes (as the Pareto plot draws it), cheapest on x first."""
    xo, yo = axes_of(view, x, y)
    frame = view.frame[front_mask(view.frame, (xo, yo))]
    frame = frame.sort_values([xo.column, yo.column], ascending=[xo.direction == "minimize", yo.direction != "minimize"])
    return [trial_row(view, r) for _, r in frame.iterrows()]


def column_choices(view: StudyView) -> list[dict[str, str]]:
    out = []
    for col in view.value_columns:
        if col in view.frame.columns and view.frame[col].notna().any():
            label = COST_LABELS.get(col, col)
            out.append({"column": col, "label": label, "direction": view.objective_for(col).direction})
    return out


def study_context(view: StudyView) -> dict[str, Any]:
    x, y = F.default_axes(view)
    front = front_rows(view, x.column, y.column)
    main_metrics = list(dict.fromkeys([c for c in view.metric_columns if c.endswith(("/acc_norm", "/acc", "/loss"))]))[:6]
    return {
        "study": view.name,
        "summary": study_summary(view),
        "axes": column_choices(view),
        "x": x.column,
        "y": y.column,
        "front": front,
        "front_metrics": main_metrics,
        "front_costs": list(view.cost_columns),
        "running": view.status in ("created", "running"),
        "objectives": [o.column for o in view.objectives],
        "z": F.interval_z(view),
        "confirmed": confirmed_column(ACCURACY) in view.frame.columns,
        "shape": shape_of_trials(view),
        "task_page": TASK_BARS_PER_PAGE,
        "has_experts": any(c.endswith(".n_expert") for c in view.dim_columns),
        "fidelities": sorted({str(f) for f in view.frame["fidelity"].dropna()}),
        "range_columns": [c for c in view.dim_columns if ".layer_" not in c] + [ACCURACY, *view.cost_columns, *view.metric_columns],
    }


def shape_of_trials(view: StudyView) -> dict[str, int]:
    """``n_layer`` and ``d_ff`` of the largest sizes any trial keeps (the glances' scale when
    the supernet row is not at hand)."""
    n_layer, d_ff = 0, 0
    for text in view.frame["config_json"]:
        layers, widths = _layers_and_widths(str(text))
        n_layer = max([n_layer, *(v + 1 for v in layers)])
        d_ff = max([d_ff, *widths])
    return {"n_layer": n_layer, "d_ff": d_ff}


#: Front members per page of the per-task bars (42 members side by side are a thicket).
TASK_BARS_PER_PAGE = 12


def study_figure(view: StudyView, kind: str, x: str | None, y: str | None, *, group: str = "summary", offset: int = 0) -> Any:
    """The figure ``kind`` (one of :data:`FIGURE_KINDS`) of a study; ``group`` chooses the
    parallel-coordinates axes, ``offset`` the page of per-task bars."""
    if kind == "pareto":  # hover details are fetched per point (/api/studies/NAME/trials/N/brief)
        return F.pareto_figure(view, x, y, hover=False)
    if kind == "pareto3d":
        return F.pareto3d_figure(view)
    if kind == "hypervolume":
        return F.hypervolume_figure(view)
    if kind == "tasks":
        return F.task_breakdown_figure(view, max_members=TASK_BARS_PER_PAGE, offset=offset)
    return F.parallel_figure(view, group=group)


def supernet_shape(db: storage.Database, view: StudyView) -> dict[str, int]:
    """The supernet's ``n_layer`` and ``d_ff`` (the scale of the per-layer glances; 0 when unknown)."""
    supernet = storage.get_supernet(db, view.supernet_hash)
    config = supernet.config if supernet else {}
    return {"n_layer": int(config.get("n_layer", 0) or 0), "d_ff": int(config.get("d_ff", 0) or 0)}


def launchable_supernets(db: storage.Database, settings: Any) -> list[dict[str, str]]:
    """Stored supernets whose directory exists inside the roots the server reads (a launched
    spec may name only those), newest first: name, path and content hash."""
    out = []
    for row in reversed(storage.list_supernets(db)):
        path = Path(row.path) if row.path else None
        if path is None or not path.is_dir() or outside_roots(path, settings.allowed_roots):
            continue
        out.append({"name": row.name, "path": str(path.resolve()), "hash": row.content_hash[:12]})
    return out


def run_pick(view: StudyView, body: PickBody, db: Any = None) -> Any:
    """The pick of ``body`` in ``view`` (ties with the best marked when ``db`` is given)."""
    return pick_in_view(view, body.metric, bounds_from_mapping(body.max, body.min), body.top, db=db)


def candidate_detail(db: storage.Database, cache: StudyCache, name: str, trial: int) -> dict[str, Any]:
    """One trial with its evaluations, costs and lineage (memoised per study version)."""
    def build(view: StudyView) -> dict[str, Any]:
        row = view.trial(trial)
        evaluations = storage.list_evaluations(db, int(row["subnet_id"]))
        costs = storage.find_costs(db, supernet_hash=view.supernet_hash, config_hash=str(row["config_hash"]))
        supernet = storage.get_supernet(db, view.supernet_hash)
        by_fidelity: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(evaluations, key=lambda e: (e.fidelity, e.task, e.metric, e.id)):
            by_fidelity.setdefault(e.fidelity, []).append(
                {"task": e.task, "metric": e.metric, "value": e.value, "stderr": e.stderr, "n_examples": e.n_examples,
                 "harness_version": e.harness_version, "task_hash": e.task_hash, "wall_s": e.wall_s}
            )
        config = json.loads(row["config_json"])
        base = trial_row(view, row)
        base.update(
            study=name,
            config=config,
            evaluations=by_fidelity,
            cost_rows=[{"metric": c.metric, "value": c.value, "method": c.method, "device": c.device} for c in costs],
            lineage={
                "supernet_hash": view.supernet_hash,
                "supernet_name": supernet.name if supernet else None,
                "supernet_path": supernet.path if supernet else None,
                "harness_versions": sorted({e.harness_version for e in evaluations}),
                "task_hashes": {e.task: e.task_hash for e in evaluations},
                "fidelity": base["fidelity"],
            },
            supernet_config=supernet.config if supernet else None,
            violations=constraint_violations(view, row),
            difference=difference_from_largest(config, supernet.config if supernet else None),
        )
        return base

    return cache.derived(name, ("candidate", trial), build)


def candidate_figures(detail: dict[str, Any]) -> dict[str, str]:
    """Figure JSON for the candidate page: per-layer config and scores at its fidelity."""
    layer = F.draw_layer_chart(F.layer_chart_data(detail["config"], detail["supernet_config"]),
                               title=f"trial {detail['trial']}: per-layer config")
    rows = detail["evaluations"].get(detail["fidelity"] or "", [])
    if not rows:  # never scored (an infeasible sub-network): no empty chart
        return {"layers": pio.to_json(layer), "metrics": None}
    metrics = go.Figure(
        go.Bar(
            x=[f"{r['task']}/{r['metric']}" for r in rows],
            y=[r["value"] for r in rows],
            error_y=dict(type="data", array=[r["stderr"] or 0.0 for r in rows], visible=True),
            marker_color="#1f77b4",
        )
    )
    metrics.update_layout(title=f"scores at fidelity {detail['fidelity']} (± stderr)", template="plotly_white",
                          margin=dict(l=50, r=20, t=50, b=80), height=360)
    return {"layers": pio.to_json(layer), "metrics": pio.to_json(metrics)}


__all__ = [
    "FIGURE_KINDS", "TASK_BARS_PER_PAGE", "axes_of", "constraint_violations", "difference_from_largest", "front_rows", "glance_svg", "launchable_supernets", "shape_of_trials", "candidate_detail", "candidate_figures", "column_choices", "run_pick", "study_context",
    "study_figure", "study_summaries", "study_summary", "supernet_shape", "trial_brief", "trial_row", "trial_rows",
]
