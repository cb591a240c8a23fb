"""Pictures of studies: plotly figure builders, the static HTML report, the web service.

* :mod:`reports.data` — a study's results shaped for views (:func:`load_study` -> :class:`StudyView`);
* :mod:`reports.figures` — "compute the data" / "draw it" pairs returning ``go.Figure``;
* :mod:`reports.html` — one self-contained HTML report (``nas report``);
* :mod:`reports.web` — the FastAPI app (``nas serve``).

No torch anywhere in this package: the web server draws pages without it.
"""

from __future__ import annotations

from reports.data import StudyView, TrialNotFound, build_view, load_study
from reports.figures import (
    hypervolume_figure,
    overlay_figure,
    parallel_figure,
    pareto3d_figure,
    pareto_figure,
    task_breakdown_figure,
)
from reports.html import render_report, write_report

__all__ = [
    "StudyView",
    "TrialNotFound",
    "build_view",
    "hypervolume_figure",
    "load_study",
    "overlay_figure",
    "parallel_figure",
    "pareto3d_figure",
    "pareto_figure",
    "render_report",
    "task_breakdown_figure",
    "write_report",
]
