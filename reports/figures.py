"""Plotly figure builders: compute the data (a NamedTuple), then draw it (``go.Figure``).

Every builder has a ``*_data`` function that does the arithmetic on a
:class:`~reports.data.StudyView` (easy to test) and a ``draw_*`` function that only
turns that data into a figure; ``*_figure`` does both.

Point categories of the Pareto views:

* ``front`` — on the Pareto front of the plotted objectives (complete, feasible, full fidelity);
* ``dominated`` — complete, feasible, full fidelity, but dominated;
* ``low fidelity only`` — scored only at a lower fidelity (never promoted): open markers;
* ``infeasible`` — violated a constraint (known from the analytic costs, usually never
  scored): crosses, drawn at the worst plotted value of an axis they have no value for.

Each marker's ``customdata`` is its trial number, so web pages can link clicks to the
candidate page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.front import (
    HypervolumeHistory,
    candidates_mask,
    confirmed_column,
    front_mask,
    hypervolume_history,
    main_metric_columns,
    stderr_column,
)
from nas.metrics import ACCURACY, Objective
from reports.data import StudyView
from reports.numbers import human

CATEGORIES = ("front", "dominated", "low fidelity only", "infeasible")
_STYLE = {
    "front": dict(color="#d62728", size=10, symbol="circle", line=dict(color="#7f0000", width=1)),
    "dominated": dict(color="#1f77b4", size=7, symbol="circle", opacity=0.75),
    "low fidelity only": dict(color="#9467bd", size=7, symbol="circle-open", line=dict(width=1.5)),
    "infeasible": dict(color="#7f7f7f", size=7, symbol="x", opacity=0.7),
}
STUDY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), hovermode="closest")


# --------------------------------------------------------------------- helpers
def format_value(column: str, value: float) -> str:
    """A number as people read it: 0.5123, 75.1 M, 190 MFLOP, 12.3 ms (:func:`reports.numbers.human`)."""
    return human(value, column)


def hover_text(view: StudyView, row: pd.Series) -> str:
    """Config summary, per-layer glance, and every metric (with stderr) and cost."""
    lines = [f"<b>trial {int(row['trial'])}</b> — {row['summary']}", str(row["layers_glance"])]
    status = []
    if not row["feasible"]:
        status.append("infeasible")
    if row["fidelity"] is not None and row["fidelity"] == row["fidelity"]:
        status.append(f"fidelity {row['fidelity']}")
    if row.get("on_front"):
        status.append("on study front")
    if status:
        lines.append(", ".join(status))
    if pd.notna(row.get(ACCURACY)):
        lines.append(f"accuracy: {row[ACCURACY]:.4f}")
    for col in view.metric_columns:
        value = row.get(col)
        if pd.isna(value):
            continue
        stderr = row.get(f"{col}_stderr")
        text = f"{col}: {value:.4f}"
        if stderr is not None and pd.notna(stderr):
            text += f" ± {stderr:.4f}"
        lines.append(text)
    for col in view.cost_columns:
        value = row.get(col)
        if pd.notna(value):
            lines.append(f"{col}: {format_value(col, value)}")
    return "<br>".join(lines)


def _error_bars(errors: pd.Series, style: dict, *, faint: bool = False) -> dict | None:
    values = errors.astype(float)
    if not values.notna().any():
        return None
    colour = style.get("color", "#555")
    if faint and colour.startswith("#") and len(colour) == 7:  # behind the front: visible, not a thicket
        colour = "rgba({},{},{},0.3)".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))
    return dict(type="data", array=values.fillna(0.0).tolist(), visible=True, thickness=1, width=0, color=colour)


def _axis_title(o: Objective) -> str:
    arrow = "↑ better" if o.direction == "maximize" else "↓ better"
    return f"{o.label} ({arrow})"


def _step_shape(x: Objective) -> str:
    """Line shape that traces the dominated region's boundary with points sorted by x."""
    return "hv" if x.direction == "minimize" else "vh"


# ---------------------------------------------------------------- pareto 2-D
class ParetoData(NamedTuple):
    """Points of a two-objective view by category, and the front sorted by x.

    ``ex``/``ey`` are the points' error bars (``z`` standard errors; NaN for exact costs);
    ``confirmed`` holds the trials scored on the held-out confirmation documents at their
    confirmed score (the search score stays in ``points``)."""
    study: str
    x: Objective
    y: Objective
    points: dict[str, pd.DataFrame]  # category -> columns trial, x, y, ex, ey, hover
    front: pd.DataFrame  # trial, x, y sorted by x
    confirmed: pd.DataFrame = pd.DataFrame(columns=["trial", "x", "y", "ex", "ey"])
    z: float = 1.96
    #: the front's lower edge (upper for a minimised y): each member's y moved by its interval
    band: pd.DataFrame = pd.DataFrame(columns=["x", "y"])


def pareto_data(view: StudyView, x: str | Objective, y: str | Objective, *, hover: bool = True) -> ParetoData:
    """Categorise every trial for the (x, y) view; the front is that of these two objectives.

    ``hover=False`` leaves out the per-point hover text (the web page fetches a point's
    details when it is hovered: a 1,000-trial payload shrinks by about ten times)."""
    xo = x if isinstance(x, Objective) else view.objective_for(x)
    yo = y if isinstance(y, Objective) else view.objective_for(y)
    frame = view.frame
    for o in (xo, yo):
        if o.column not in frame.columns:
            raise KeyError(f"study {view.name!r} has no column {o.column!r}")
    cand = candidates_mask(frame, (xo, yo))
    on_front = front_mask(frame, (xo, yo))
    has_xy = frame[xo.column].notna() & frame[yo.column].notna()
    infeasible = ~frame["feasible"].astype(bool)
    low = ~infeasible & ~frame["full_fidelity"].astype(bool) & has_xy
    dominated = cand & ~on_front
    masks = {
        "front": on_front,
        "dominated": dominated,
        "low fidelity only": low,
        "infeasible": infeasible & (frame[xo.column].notna() | frame[yo.column].notna()),
    }
    # infeasible trials usually lack the scored axis: pin them to that axis' worst value
    worst = {}
    for o in (xo, yo):
        known = frame.loc[has_xy & ~infeasible, o.column]
        if known.empty:
            known = frame[o.column].dropna()
        worst[o.column] = (known.min() if o.direction == "maximize" else known.max()) if not known.empty else 0.0
    z = interval_z(view)
    points: dict[str, pd.DataFrame] = {}
    for name, mask in masks.items():
        rows = frame[mask]
        xs = rows[xo.column].fillna(worst[xo.column]) if name == "infeasible" else rows[xo.column]
        ys = rows[yo.column].fillna(worst[yo.column]) if name == "infeasible" else rows[yo.column]
        points[name] = pd.DataFrame(
            {
                "trial": rows["trial"].astype(int).to_numpy(),
                "x": xs.astype(float).to_numpy(),
                "y": ys.astype(float).to_numpy(),
                "ex": _errors(rows, xo.column, z),
                "ey": _errors(rows, yo.column, z),
                **({"hover": [hover_text(view, r) for _, r in rows.iterrows()]} if hover else {}),
            }
        )
    front = points["front"][["trial", "x", "y"]].sort_values(["x", "y"]).reset_index(drop=True)
    for name, pts in points.items():
        pts["near"] = near_front(pts, points["front"], xo, yo) if name == "dominated" else False
    ordered = points["front"].sort_values(["x", "y"])
    band = pd.DataFrame({"x": ordered["x"].to_numpy(),
                         "y": (ordered["y"] - (1 if yo.direction == "maximize" else -1) * ordered["ey"].fillna(0)).to_numpy()})
    return ParetoData(view.name, xo, yo, points, front, _confirmed_points(frame, xo, yo, z), z, band)


def near_front(points: pd.DataFrame, front: pd.DataFrame, x: Objective, y: Objective) -> np.ndarray:
    """True where a point's interval on y reaches the front's staircase at its x: it is
    dominated as measured, but not by more than its own uncertainty ("tied with the front").
    The staircase value at ``x`` is the best y of the front members at least as good on x."""
    if points.empty or front.empty:
        return np.zeros(len(points), dtype=bool)
    sx = 1.0 if x.direction == "minimize" else -1.0
    sy = 1.0 if y.direction == "minimize" else -1.0
    fx, fy = sx * front["x"].to_numpy(dtype=float), sy * front["y"].to_numpy(dtype=float)
    px, py = sx * points["x"].to_numpy(dtype=float), sy * points["y"].to_numpy(dtype=float)
    err = np.nan_to_num(points["ey"].to_numpy(dtype=float))
    better_x = fx[None, :] <= px[:, None]  # (points, front)
    stair = np.where(better_x, fy[None, :], np.inf).min(axis=1)
    return np.isfinite(stair) & (py - err <= stair)


def interval_z(view: StudyView) -> float:
    """How many standard errors the study's intervals span (its confirmation's ``z``, else 1.96)."""
    confirmation = view.spec.get("confirmation")
    return float(confirmation.get("z", 1.96)) if isinstance(confirmation, dict) else 1.96


def _errors(rows: pd.DataFrame, column: str, z: float) -> np.ndarray:
    """``z`` standard errors of a column (NaN where it has none)."""
    err = stderr_column(column)
    return (rows[err].astype(float) * z).to_numpy() if err in rows.columns else np.full(len(rows), np.nan)


def _confirmed_points(frame: pd.DataFrame, x: Objective, y: Objective, z: float) -> pd.DataFrame:
    """Trials with a confirmed score on an axis, placed at it (the other axis as searched)."""
    cx, cy = confirmed_column(x.column), confirmed_column(y.column)
    if cx not in frame.columns and cy not in frame.columns:
        return pd.DataFrame(columns=["trial", "x", "y", "ex", "ey"])
    xs = frame[cx] if cx in frame.columns else frame[x.column]
    ys = frame[cy] if cy in frame.columns else frame[y.column]
    rows = frame[xs.notna() & ys.notna() & (frame[cx].notna() if cx in frame.columns else frame[cy].notna())]
    return pd.DataFrame({
        "trial": rows["trial"].astype(int).to_numpy(),
        "x": (rows[cx] if cx in frame.columns else rows[x.column]).astype(float).to_numpy(),
        "y": (rows[cy] if cy in frame.columns else rows[y.column]).astype(float).to_numpy(),
        "ex": _errors(rows, cx if cx in frame.columns else x.column, z),
        "ey": _errors(rows, cy if cy in frame.columns else y.column, z),
    })


def _hover(pts: pd.DataFrame, name: str) -> dict:
    """Full hover text when the data has it, else a one-line template (trial, x, y)."""
    if "hover" in pts.columns:
        return {"hovertext": pts["hover"].tolist(), "hoverinfo": "text"}
    return {"hovertemplate": f"trial %{{customdata}}: %{{x:.4~s}}, %{{y:.4~s}}<extra>{name}</extra>"}


#: What each marker means, in the legend itself.
LEGEND = {
    "front": "front: no trial is better on both axes",
    "dominated": "dominated",
    "low fidelity only": "open circles: stopped below the top fidelity",
    "infeasible": "crosses: violate a constraint",
}
_NEAR = "#ff7f0e"


def _marker(name: str, pts: pd.DataFrame) -> dict:
    """The category's marker; dominated points tied with the front get an orange ring."""
    style = dict(_STYLE[name])
    if name == "dominated" and "near" in pts.columns and pts["near"].any():
        near = pts["near"].astype(bool).tolist()
        style["line"] = dict(color=[_NEAR if n else "rgba(0,0,0,0)" for n in near], width=[2 if n else 0 for n in near])
    return style


def _legend_name(name: str, pts: pd.DataFrame) -> str:
    if name == "dominated" and "near" in pts.columns:
        near = int(pts["near"].sum())
        return f"dominated ({len(pts)}; {near} tied with the front: orange ring)" if near else f"dominated ({len(pts)})"
    return f"{LEGEND[name]} ({len(pts)})"


def draw_pareto(data: ParetoData, *, title: str | None = None) -> go.Figure:
    fig = go.Figure()
    for name in CATEGORIES:
        pts = data.points[name]
        fig.add_trace(
            go.Scatter(
                x=pts["x"].tolist(),
                y=pts["y"].tolist(),
                mode="markers",
                name=_legend_name(name, pts),
                marker=_marker(name, pts),
                error_x=_error_bars(pts["ex"], _STYLE[name], faint=name != "front"),
                error_y=_error_bars(pts["ey"], _STYLE[name], faint=name != "front"),
                customdata=pts["trial"].tolist(),
                **_hover(pts, name),
                meta={"category": name},
            )
        )
    if len(data.confirmed):
        fig.add_trace(
            go.Scatter(
                x=data.confirmed["x"].tolist(),
                y=data.confirmed["y"].tolist(),
                mode="markers",
                name=f"confirmed on held-out documents ({len(data.confirmed)})",
                marker=dict(color="#2ca02c", size=9, symbol="diamond", line=dict(color="#145214", width=1)),
                error_x=_error_bars(data.confirmed["ex"], {"color": "#2ca02c"}),
                error_y=_error_bars(data.confirmed["ey"], {"color": "#2ca02c"}),
                customdata=data.confirmed["trial"].tolist(),
                hovertemplate="trial %{customdata}: confirmed %{y:.4f}<extra></extra>",
                meta={"category": "confirmed"},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=data.front["x"].tolist(),
            y=data.front["y"].tolist(),
            mode="lines",
            line=dict(shape=_step_shape(data.x), color=_STYLE["front"]["color"], width=2),
            name="Pareto front",
            hoverinfo="skip",
            meta={"category": "front line"},
        )
    )
    if len(data.band) and data.band["y"].ne(data.front.sort_values(["x", "y"])["y"].to_numpy()).any():
        fig.add_trace(
            go.Scatter(
                x=data.band["x"].tolist(),
                y=data.band["y"].tolist(),
                mode="lines",
                line=dict(shape=_step_shape(data.x), color="rgba(214,39,40,0.35)", width=1, dash="dot"),
                fill="tonexty",
                fillcolor="rgba(214,39,40,0.10)",
                name=f"front ± {data.z:g} se: points in the shade are tied with it",
                hoverinfo="skip",
                meta={"category": "front band"},
            )
        )
    if len(data.confirmed):
        fig.add_trace(_confirmation_links(data))
    fig.update_layout(
        title=title or f"{data.study}: {data.y.label} vs {data.x.label}<br><sup>bars: ± {data.z:g} standard errors; "
        "open circles stopped below the top fidelity (racing / promotion), crosses violate a constraint</sup>",
        xaxis_title=_axis_title(data.x),
        yaxis_title=_axis_title(data.y),
        **{**_LAYOUT, "margin": dict(l=60, r=20, t=70, b=130)},
        height=560,
        legend=dict(orientation="h", yanchor="top", y=-0.16, x=0, font=dict(size=11)),
    )
    return fig


def _confirmation_links(data: ParetoData) -> go.Scatter:
    """A thin segment from each confirmed trial's search score to its confirmed score."""
    searched = pd.concat([p[["trial", "x", "y"]] for p in data.points.values()]).drop_duplicates("trial").set_index("trial")
    xs: list[float | None] = []
    ys: list[float | None] = []
    for _, r in data.confirmed.iterrows():
        if int(r["trial"]) in searched.index:
            s = searched.loc[int(r["trial"])]
            xs += [float(s["x"]), float(r["x"]), None]
            ys += [float(s["y"]), float(r["y"]), None]
    return go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#2ca02c", width=1), hoverinfo="skip",
                      name="search score → confirmed score", meta={"category": "confirmation links"})


def pareto_figure(view: StudyView, x: str | Objective | None = None, y: str | Objective | None = None, *,
                  hover: bool = True) -> go.Figure:
    """Pareto scatter of two objectives (default: the study's first two, cost on x)."""
    if x is None or y is None:
        dx, dy = default_axes(view)
        x, y = x or dx, y or dy
    return draw_pareto(pareto_data(view, x, y, hover=hover))


def default_axes(view: StudyView) -> tuple[Objective, Objective]:
    """Cost on x, accuracy on y when the study has both; else its first two objectives."""
    objs = list(view.objectives)
    if len(objs) < 2:
        objs.append(view.objective_for("params" if "params" in view.frame.columns else view.value_columns[0]))
    quality = [o for o in objs if o.direction == "maximize"]
    cost = [o for o in objs if o.direction == "minimize"]
    if quality and cost:
        return cost[0], quality[0]
    return objs[1], objs[0]


# ---------------------------------------------------------------- pareto 3-D
class Pareto3DData(NamedTuple):
    study: str
    objectives: tuple[Objective, Objective, Objective]
    points: dict[str, pd.DataFrame]  # "front" / "other": trial, x, y, z, hover


def pareto3d_data(view: StudyView, objectives: Sequence[str | Objective] | None = None) -> Pareto3DData:
    """Scored full-fidelity feasible trials in three objectives, front (of these three) marked."""
    objs = [o if isinstance(o, Objective) else view.objective_for(o) for o in (objectives or ())]
    if not objs:
        objs = list(view.objectives)
        extras = [c for c in (ACCURACY, "params", "flops_per_token", "prefill_latency_ms", "latency_ms", "kv_cache_bytes",
                              "weight_memory_bytes", *view.cost_columns, *view.metric_columns)
                  if c in view.frame.columns and all(o.column != c for o in objs)]
        while len(objs) < 3 and extras:
            best = min(dict.fromkeys(extras), key=lambda c: _max_abs_corr(view.frame, c, [o.column for o in objs]))
            objs.append(view.objective_for(best))
            extras = [c for c in extras if c != best]
    if len(objs) != 3:
        raise ValueError(f"a three-objective view needs three objectives, got {[o.column for o in objs]}")
    frame = view.frame
    cand = candidates_mask(frame, objs)
    front = front_mask(frame, objs)
    points = {}
    for name, mask in (("front", front), ("other", cand & ~front)):
        rows = frame[mask]
        points[name] = pd.DataFrame(
            {
                "trial": rows["trial"].astype(int).to_numpy(),
                "x": rows[objs[0].column].to_numpy(dtype=float),
                "y": rows[objs[1].column].to_numpy(dtype=float),
                "z": rows[objs[2].column].to_numpy(dtype=float),
                "hover": [hover_text(view, r) for _, r in rows.iterrows()],
            }
        )
    return Pareto3DData(view.name, (objs[0], objs[1], objs[2]), points)


def _max_abs_corr(frame: pd.DataFrame, column: str, others: Sequence[str]) -> float:
    """The largest |correlation| of ``column`` with any of ``others`` over the rows that have
    them all (1 when unknown): a third axis that is nearly a function of the first two
    (non-embedding params against params) shows nothing new."""
    cols = [column, *others]
    rows = frame[cols].apply(pd.to_numeric, errors="coerce").dropna()
    if len(rows) < 3 or rows[column].nunique() < 2:
        return 1.0
    corr = [abs(rows[column].corr(rows[o])) for o in others if rows[o].nunique() > 1]
    return float(max(corr)) if corr else 0.0


def draw_pareto3d(data: Pareto3DData) -> go.Figure:
    fig = go.Figure()
    for name, colour, size in (("other", "#1f77b4", 3), ("front", "#d62728", 6)):
        pts = data.points[name]
        fig.add_trace(
            go.Scatter3d(
                x=pts["x"].tolist(),
                y=pts["y"].tolist(),
                z=pts["z"].tolist(),
                mode="markers",
                name=f"{name} ({len(pts)})",
                marker=dict(color=colour, size=size, opacity=0.9 if name == "front" else 0.5),
                customdata=pts["trial"].tolist(),
                hovertext=pts["hover"].tolist(),
                hoverinfo="text",
            )
        )
    a, b, c = data.objectives
    fig.update_layout(
        title=f"{data.study}: three objectives",
        scene=dict(xaxis_title=_axis_title(a), yaxis_title=_axis_title(b), zaxis_title=_axis_title(c)),
        **_LAYOUT,
    )
    return fig


def pareto3d_figure(view: StudyView, objectives: Sequence[str | Objective] | None = None) -> go.Figure:
    return draw_pareto3d(pareto3d_data(view, objectives))


# ---------------------------------------------------------- hypervolume history
def hypervolume_data(view: StudyView) -> HypervolumeHistory:
    return hypervolume_history(view.frame, view.objectives)


def draw_hypervolume(history: HypervolumeHistory, *, study: str = "", objectives: Sequence[Objective] = ()) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=list(history.trials),
            y=list(history.values),
            mode="lines+markers",
            line=dict(shape="hv", color="#2ca02c"),
            marker=dict(size=4),
            name="hypervolume",
        )
    )
    names = " × ".join(o.label for o in objectives)
    fig.update_layout(
        title=f"{study}: hypervolume over trials" + (f" ({names})" if names else ""),
        xaxis_title="trial",
        yaxis_title="hypervolume (costs scaled by their reference)",
        **_LAYOUT,
    )
    return fig


def hypervolume_figure(view: StudyView) -> go.Figure:
    return draw_hypervolume(hypervolume_data(view), study=view.name, objectives=view.objectives)


# ------------------------------------------------------------ per-task breakdown
class TaskBreakdownData(NamedTuple):
    study: str
    members: tuple[str, ...]  # x labels, "#12 L24 h..."
    trials: tuple[int, ...]
    metrics: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]  # column -> (values, stderrs)
    summaries: tuple[str, ...] = ()
    total: int = 0  # front members in all (the data holds ``offset`` .. ``offset + len(trials)``)
    offset: int = 0


def task_breakdown_data(view: StudyView, *, max_members: int = 30, offset: int = 0) -> TaskBreakdownData:
    """Each task's main metric (with stderr) for the study's front members, ordered by the
    first cost objective (cheapest first); a page of ``max_members`` from ``offset``."""
    front = view.front
    costs = [o for o in view.objectives if o.direction == "minimize"]
    if costs and not front.empty:
        front = front.sort_values(costs[0].column)
    total = len(front)
    offset = max(0, min(offset, max(0, total - 1)))
    front = front.iloc[offset: offset + max_members]
    mains = main_metric_columns(view.metric_columns)
    metrics = {}
    for col in mains.values():
        values = tuple(float(v) for v in front[col].to_numpy(dtype=float))
        err_col = f"{col}_stderr"
        errs = tuple(float(v) for v in front[err_col].fillna(0).to_numpy(dtype=float)) if err_col in front else tuple(0.0 for _ in values)
        metrics[col] = (values, errs)
    labels = tuple(f"#{int(t)}" for t in front["trial"])
    return TaskBreakdownData(view.name, labels, tuple(int(t) for t in front["trial"]), metrics,
                             tuple(str(s) for s in front["summary"]), total, offset)


def draw_task_breakdown(data: TaskBreakdownData) -> go.Figure:
    fig = go.Figure()
    for i, (col, (values, errs)) in enumerate(data.metrics.items()):
        fig.add_trace(
            go.Bar(
                x=list(data.members),
                y=list(values),
                error_y=dict(type="data", array=list(errs), visible=True),
                name=col,
                customdata=list(data.trials),
                hovertext=[f"trial {t}: {s}" for t, s in zip(data.trials, data.summaries)] if data.summaries else None,
                marker_color=STUDY_COLOURS[i % len(STUDY_COLOURS)],
            )
        )
    shown = len(data.trials)
    part = f" {data.offset + 1}–{data.offset + shown} of {data.total}" if data.total > shown else ""
    fig.update_layout(
        title=f"{data.study}: per-task scores of the front members{part}",
        barmode="group",
        xaxis_title="front member (cheapest first)",
        yaxis_title="score (± stderr)",
        **_LAYOUT,
    )
    return fig


def task_breakdown_figure(view: StudyView, *, max_members: int = 30, offset: int = 0) -> go.Figure:
    return draw_task_breakdown(task_breakdown_data(view, max_members=max_members, offset=offset))


# ------------------------------------------------------------ parallel coordinates
class ParallelData(NamedTuple):
    study: str
    dimensions: tuple[tuple[str, tuple[float, ...]], ...]  # (label, values)
    colour: tuple[float, ...]
    colour_label: str
    trials: tuple[int, ...]


#: Axis groups of the parallel-coordinates view: a study of a 30-layer supernet has ~60
#: per-layer dims, far too many axes for one chart.
PARALLEL_GROUPS = ("all", "summary", "n_head", "d_ff", "n_expert")


def parallel_data(view: StudyView, *, colour: str = ACCURACY, max_dims: int = 24, group: str = "all") -> ParallelData:
    """The elastic dims that vary (summary dims first, then per layer) of every scored trial,
    coloured by ``colour`` (default the aggregate accuracy). ``group``: ``summary`` (the
    whole-network dims and the study's cost objectives), ``n_head`` / ``d_ff`` / ``n_expert``
    (that dim per layer) or ``all``."""
    if group not in PARALLEL_GROUPS:
        raise ValueError(f"unknown axis group {group!r}; use one of {', '.join(PARALLEL_GROUPS)}")
    frame = view.frame[view.frame[colour].notna()] if colour in view.frame.columns else view.frame.iloc[0:0]
    if group == "all":
        dims = list(view.dim_columns[:max_dims])
    elif group == "summary":
        dims = [c for c in view.dim_columns if ".layer_" not in c]
        dims += [c for c, _ in view.cost_objectives if c in frame.columns and frame[c].nunique() > 1]
        dims = dims[:max_dims]
    else:
        dims = [c for c in view.dim_columns if c.endswith(f".{group}")][:max_dims]
    dimensions = tuple(
        (col.removeprefix("config."), tuple(float(v) for v in frame[col].to_numpy(dtype=float))) for col in dims
    )
    return ParallelData(
        view.name,
        dimensions,
        tuple(float(v) for v in frame[colour].to_numpy(dtype=float)) if len(frame) else (),
        colour,
        tuple(int(t) for t in frame["trial"]),
    )


def draw_parallel(data: ParallelData) -> go.Figure:
    fig = go.Figure(
        go.Parcoords(
            line=dict(
                color=list(data.colour),
                colorscale="Viridis",
                showscale=True,
                colorbar=dict(title=data.colour_label),
            ),
            dimensions=[dict(label=label, values=list(values)) for label, values in data.dimensions],
        )
    )
    fig.update_layout(title=f"{data.study}: elastic dims coloured by {data.colour_label}",
                      **{**_LAYOUT, "margin": dict(l=60, r=40, t=110, b=40)})
    return fig


def parallel_figure(view: StudyView, *, colour: str = ACCURACY, group: str = "all", max_dims: int = 24) -> go.Figure:
    return draw_parallel(parallel_data(view, colour=colour, group=group, max_dims=max_dims))


# --------------------------------------------------------------------- overlay
class OverlayData(NamedTuple):
    x: Objective
    y: Objective
    studies: tuple[ParetoData, ...]


def overlay_data(views: Sequence[StudyView], x: str | Objective | None = None, y: str | Objective | None = None) -> OverlayData:
    """Two or more studies on the same axes (default: the first study's default axes)."""
    if len(views) < 2:
        raise ValueError("an overlay needs at least two studies")
    if x is None or y is None:
        dx, dy = default_axes(views[0])
        x, y = x or dx, y or dy
    xo = x if isinstance(x, Objective) else views[0].objective_for(x)
    yo = y if isinstance(y, Objective) else views[0].objective_for(y)
    return OverlayData(xo, yo, tuple(pareto_data(v, xo, yo) for v in views))


def draw_overlay(data: OverlayData) -> go.Figure:
    fig = go.Figure()
    for i, study in enumerate(data.studies):
        colour = STUDY_COLOURS[i % len(STUDY_COLOURS)]
        scored = pd.concat([study.points["front"], study.points["dominated"]])
        fig.add_trace(
            go.Scatter(
                x=scored["x"].tolist(),
                y=scored["y"].tolist(),
                mode="markers",
                name=f"{study.study} ({len(scored)})",
                marker=dict(color=colour, size=6, opacity=0.45),
                customdata=scored["trial"].tolist(),
                hovertext=scored["hover"].tolist(),
                hoverinfo="text",
                legendgroup=study.study,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=study.front["x"].tolist(),
                y=study.front["y"].tolist(),
                mode="lines+markers",
                line=dict(shape=_step_shape(data.x), color=colour, width=2.5),
                marker=dict(color=colour, size=9, line=dict(color="black", width=1)),
                name=f"{study.study} front ({len(study.front)})",
                customdata=study.front["trial"].tolist(),
                legendgroup=study.study,
            )
        )
    fig.update_layout(
        title=f"{' vs '.join(s.study for s in data.studies)}: {data.y.label} vs {data.x.label}",
        xaxis_title=_axis_title(data.x),
        yaxis_title=_axis_title(data.y),
        **_LAYOUT,
    )
    return fig


def overlay_figure(views: Sequence[StudyView], x: str | Objective | None = None, y: str | Objective | None = None) -> go.Figure:
    return draw_overlay(overlay_data(views, x, y))


# ---------------------------------------------------------------- candidate
class LayerChartData(NamedTuple):
    """Per supernet layer: kept or dropped, and the kept sizes against the supernet's."""
    layers: tuple[int, ...]
    kept: tuple[bool, ...]
    n_head: tuple[int, ...]
    d_ff: tuple[int, ...]
    full_n_head: tuple[int, ...]
    full_d_ff: tuple[int, ...]


def layer_chart_data(config: dict, supernet_config: dict | None) -> LayerChartData:
    """``config`` is a sub-network config dict; ``supernet_config`` the supernet's (for the
    full sizes; missing: the largest kept sizes are used)."""
    kept_layers = [int(v) for v in config["layers"]]
    n_layer = int((supernet_config or {}).get("n_layer", max(kept_layers) + 1))
    pos = {layer: i for i, layer in enumerate(kept_layers)}
    full_head = int((supernet_config or {}).get("n_head", max(config["n_head"])))
    full_ff = int((supernet_config or {}).get("d_ff", max(config["d_ff"])))
    per_layer = (supernet_config or {}).get("layer_dims") or None
    layers = tuple(range(n_layer))
    return LayerChartData(
        layers=layers,
        kept=tuple(i in pos for i in layers),
        n_head=tuple(int(config["n_head"][pos[i]]) if i in pos else 0 for i in layers),
        d_ff=tuple(int(config["d_ff"][pos[i]]) if i in pos else 0 for i in layers),
        full_n_head=tuple(int(per_layer[i]["n_head"]) if per_layer else full_head for i in layers),
        full_d_ff=tuple(int(per_layer[i]["d_ff"]) if per_layer else full_ff for i in layers),
    )


def draw_layer_chart(data: LayerChartData, *, title: str = "per-layer config") -> go.Figure:

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("attention heads kept", "FFN width (d_ff) kept"))
    labels = [f"L{i}" for i in data.layers]
    for row, kept, full in ((1, data.n_head, data.full_n_head), (2, data.d_ff, data.full_d_ff)):
        fig.add_trace(go.Bar(x=labels, y=list(full), marker_color="#e0e0e0", name="supernet", showlegend=row == 1), row=row, col=1)
        colours = ["#1f77b4" if k else "#ffffff" for k in data.kept]
        fig.add_trace(go.Bar(x=labels, y=list(kept), marker_color=colours, name="kept", showlegend=row == 1), row=row, col=1)
    dropped = [f"L{i}" for i, k in zip(data.layers, data.kept) if not k]
    fig.update_layout(
        title=title + (f" — dropped layers: {', '.join(dropped)}" if dropped else " — all layers kept"),
        barmode="overlay",
        height=420,
        **_LAYOUT,
    )
    return fig


__all__ = [
    "CATEGORIES",
    "LayerChartData",
    "OverlayData",
    "PARALLEL_GROUPS",
    "Pareto3DData",
    "ParallelData",
    "ParetoData",
    "TaskBreakdownData",
    "default_axes",
    "draw_hypervolume",
    "draw_layer_chart",
    "draw_overlay",
    "draw_parallel",
    "draw_pareto",
    "draw_pareto3d",
    "draw_task_breakdown",
    "format_value",
    "hover_text",
    "hypervolume_data",
    "hypervolume_figure",
    "layer_chart_data",
    "overlay_data",
    "overlay_figure",
    "parallel_data",
    "parallel_figure",
    "pareto3d_data",
    "pareto3d_figure",
    "pareto_data",
    "pareto_figure",
    "task_breakdown_data",
    "task_breakdown_figure",
]
