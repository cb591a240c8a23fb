"""The static HTML report: one self-contained file (plotly.js inline, works offline).

:func:`render_report` returns the HTML text; :func:`write_report` writes it. The page holds
the study's Pareto views, hypervolume history, per-task breakdown of the front members,
parallel coordinates of the elastic dims, an overlay with other studies when given (and a
table of the sub-networks both studies scored, side by side), and a table of the front
members with every metric and cost.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import jinja2
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from nas.errors import NasError
from nas.front import confirmed_column, stderr_column
from nas.metrics import ACCURACY
from reports import figures as F
from reports.data import StudyView

_TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )


def figure_div(fig: go.Figure, div_id: str) -> str:
    """A figure as a ``<div>`` plus its inline script (plotly.js must be on the page)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config={"responsive": True})


def front_table(view: StudyView) -> dict:
    """Header and rows (already formatted) of the front-members table: the search accuracy
    and, when the study was confirmed, the confirmed accuracy, each ± ``z`` standard errors,
    and which members are statistically tied with the best."""
    front = view.front
    costs = [o for o in view.objectives if o.direction == "minimize"]
    if costs and not front.empty:
        front = front.sort_values(costs[0].column)
    z = F.interval_z(view)
    confirmed = confirmed_column(ACCURACY) if confirmed_column(ACCURACY) in view.frame.columns else None
    metric_cols = [c for c in view.metric_columns]
    header = ["trial", "config", f"{ACCURACY} ± {z:g} se", *([f"confirmed ± {z:g} se"] if confirmed else []),
              "tied with best", *metric_cols, *view.cost_columns]
    rows = []
    for _, r in front.iterrows():
        cells = [str(int(r["trial"])), str(r["summary"]), _with_interval(r, ACCURACY, z)]
        if confirmed:
            cells.append(_with_interval(r, confirmed, z))
        cells.append("yes" if r.get("tied") else "")
        for col in metric_cols:
            cells.append(_with_interval(r, col, 1.0))
        cells += [F.format_value(c, r[c]) for c in view.cost_columns]
        rows.append(cells)
    return {"header": header, "rows": rows}


def compare_table(view: StudyView, other: StudyView) -> dict:
    """Header and rows of the sub-networks both studies scored at their top fidelity (the
    same config; e.g. one study spec on a supernet and on its healed copy): the accuracy in
    each ± ``z`` se — confirmed when both confirmed it — and the difference (``other`` minus
    ``view``) ± ``z`` times the two standard errors combined as independent (the studies
    score the same seeded documents, so the paired interval would be narrower)."""
    z = F.interval_z(view)
    conf = confirmed_column(ACCURACY)

    def rows_of(v: StudyView) -> dict[str, object]:
        frame = v.frame[v.frame["full_fidelity"] & v.frame[ACCURACY].notna()].drop_duplicates("config_hash")
        return {str(r["config_hash"]): r for _, r in frame.iterrows()}

    mine, theirs = rows_of(view), rows_of(other)
    shared = [h for h in mine if h in theirs]
    rows = []
    for h in sorted(shared, key=lambda k: float(mine[k].get("params", 0) or 0)):  # type: ignore[union-attr]
        a, b = mine[h], theirs[h]
        column = conf if all(conf in r and r[conf] == r[conf] for r in (a, b)) else ACCURACY  # type: ignore[operator]
        err = stderr_column(column)
        va, vb = float(a[column]), float(b[column])  # type: ignore[index]
        ea, eb = (float(r.get(err, float("nan"))) for r in (a, b))  # type: ignore[attr-defined]
        diff_err = (ea * ea + eb * eb) ** 0.5
        pm = (lambda e: f" ± {z * e:.4f}" if e == e else "")
        rows.append([F.format_value("params", float(a.get("params", float("nan")))),  # type: ignore[attr-defined]
                     str(a["summary"]), "confirmed" if column == conf else "search",  # type: ignore[index]
                     f"{va:.4f}{pm(ea)}", f"{vb:.4f}{pm(eb)}", f"{vb - va:+.4f}{pm(diff_err)}",
                     "yes" if diff_err == diff_err and abs(vb - va) > z * diff_err else ""])
    header = ["params", "sub-network", "documents", f"{view.name} ± {z:g} se", f"{other.name} ± {z:g} se",
              f"difference ± {z:g} se", "interval excludes 0"]
    return {"other": other.name, "header": header, "rows": rows, "n_mine": len(mine), "n_theirs": len(theirs)}


def _with_interval(row: object, column: str, z: float) -> str:
    text = F.format_value(column, row[column])  # type: ignore[index]
    err = row.get(stderr_column(column))  # type: ignore[attr-defined]
    if err is not None and err == err and text != "–":
        text += f" ± {z * err:.4f}"
    return text


def report_figures(view: StudyView, others: Sequence[StudyView] = ()) -> list[tuple[str, go.Figure]]:
    """(section title, figure) pairs of the report; figures that cannot be drawn are skipped."""
    out: list[tuple[str, go.Figure]] = [("Pareto front", F.pareto_figure(view))]
    x, y = F.default_axes(view)
    for extra in ("flops_per_token", "prefill_latency_ms", "non_embedding_params"):
        if extra in view.frame.columns and extra != x.column:
            out.append((f"Pareto front ({extra})", F.pareto_figure(view, extra, y)))
            break
    try:
        out.append(("Three objectives", F.pareto3d_figure(view)))
    except ValueError:
        pass
    out.append(("Hypervolume history", F.hypervolume_figure(view)))
    out.append(("Per-task scores of the front members", F.task_breakdown_figure(view)))
    if view.dim_columns:
        out.append(("Elastic dims", F.parallel_figure(view)))
    if others:
        out.append(("Studies compared", F.overlay_figure([view, *others], x, y)))
    return out


def render_report(view: StudyView, others: Sequence[StudyView] = ()) -> str:
    """The report of ``view`` (and an overlay with ``others``) as one HTML string."""
    sections = [
        {"title": title, "div": figure_div(fig, f"fig{i}")} for i, (title, fig) in enumerate(report_figures(view, others))
    ]
    frame = view.frame
    summary = {
        "status": view.status,
        "trials": len(frame),
        "feasible": int(frame["feasible"].sum()),
        "full fidelity": int((frame["full_fidelity"] & frame["feasible"]).sum()),
        "front size": int(frame["on_front"].sum()),
        "hypervolume": f"{view.hypervolume:.4f}",
        "objectives": ", ".join(f"{o.column} ({o.direction})" for o in view.objectives),
        "supernet": view.supernet_hash,
        "top fidelity": view.top_fidelity or "–",
    }
    return _env().get_template("report.html").render(
        study=view.name,
        summary=summary,
        sections=sections,
        table=front_table(view),
        compare=[compare_table(view, o) for o in others],
        others=[o.name for o in others],
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        plotly_js=get_plotlyjs(),
        escape=html.escape,
    )


def write_report(view: StudyView, out: str | Path, others: Sequence[StudyView] = ()) -> Path:
    """Write the report to ``out`` (an existing directory receives ``<study>.html``) and
    return the file's path. The file appears whole or not at all: it is written to a
    temporary file beside it, renamed into place, and the temporary file never stays."""
    path = Path(out).expanduser()
    if path.is_dir():
        path = path / f"{view.name}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NasError(f"cannot write the report to {path}: {path.parent} is a file, not a directory") from None
    except OSError as exc:
        raise NasError(f"cannot create the directory {path.parent} for the report ({exc.strerror}); choose another --out") from None
    if path.is_dir():
        raise NasError(f"cannot write the report to {path}: it is a directory; give a file such as {path / 'report.html'}")
    text = render_report(view, others)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise NasError(f"cannot write the report into {path.parent} ({exc.strerror}); choose another --out") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        tmp.replace(path)
    except OSError as exc:
        raise NasError(f"cannot write the report to {path} ({exc.strerror}); choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["compare_table", "figure_div", "front_table", "render_report", "report_figures", "write_report"]
