"""The HTML pages: ``/`` studies, ``/studies/{name}`` study, ``/studies/{name}/trials/{n}``
candidate, ``/studies/{name}/pick`` pick and export, ``/studies/{name}/compare?trials=a,b``
2-4 candidates side by side, ``/compare?study=a&study=b`` overlay of studies, ``/launch`` a
form for ``POST /api/studies``,
``/studies/{name}/report.html`` the static report (plotly.js and the API docs' assets are
:mod:`reports.web.assets`).
"""

from __future__ import annotations

from typing import Annotated

import plotly.io as pio
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nas.metrics import ACCURACY, COST_LABELS, DEFAULT_TASK_METRIC
from nas.search.spec import SAMPLERS
from reports import figures as F
from reports.html import render_report
from reports.web.compare import MIN_CANDIDATES, compare_context, parse_candidates
from reports.web.state import CacheDep, DatabaseDep, SettingsDep, TemplatesDep
from reports.web.views import (
    candidate_detail,
    candidate_figures,
    column_choices,
    front_rows,
    launchable_supernets,
    shape_of_trials,
    study_context,
    study_summaries,
    study_summary,
    supernet_shape,
)

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def studies_page(request: Request, db: DatabaseDep, cache: CacheDep, templates: TemplatesDep) -> Response:
    return templates.TemplateResponse(request, "studies.html", {"studies": study_summaries(db, cache)})


@router.get("/studies/{name}", response_class=HTMLResponse, include_in_schema=False)
async def study_page(name: str, cache: CacheDep, templates: TemplatesDep) -> Response:
    # the page does not depend on the request: render once per study version
    key = ("page-html",)
    html = cache.peek(name, key)
    if html is None:
        html = await run_in_threadpool(
            cache.derived, name, key, lambda v: templates.get_template("study.html").render(study_context(v))
        )
    return HTMLResponse(html)


@router.get("/studies/{name}/trials/{trial}", response_class=HTMLResponse, include_in_schema=False)
def candidate_page(
    request: Request, name: str, trial: int, db: DatabaseDep, cache: CacheDep, templates: TemplatesDep
) -> Response:
    detail = candidate_detail(db, cache, name, trial)
    view = cache.view(name)
    figs = cache.derived(name, ("candidate-figs", trial), lambda v: candidate_figures(detail))
    return templates.TemplateResponse(
        request, "candidate.html", {"study": name, "c": detail, "figs": figs, "view_status": view.status}
    )


@router.get("/studies/{name}/pick", response_class=HTMLResponse, include_in_schema=False)
def pick_page(request: Request, name: str, db: DatabaseDep, cache: CacheDep, templates: TemplatesDep) -> Response:
    view = cache.view(name)
    columns = column_choices(view)
    bounds = [o.column for o in view.objectives if o.direction == "minimize"] or ["params"]
    return templates.TemplateResponse(
        request,
        "pick.html",
        {"study": name, "columns": columns, "metrics": [ACCURACY, *view.metric_columns],
         "default_bounds": bounds, "costs": list(view.cost_columns), "supernet": supernet_shape(db, view)},
    )


@router.get("/studies/{name}/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_trials_page(
    request: Request, name: str, db: DatabaseDep, cache: CacheDep, templates: TemplatesDep, trials: str | None = None
) -> Response:
    """2 to 4 candidates side by side; with fewer, a chooser among the front members."""
    view = cache.view(name)
    given = [t for t in (trials or "").split(",") if t.strip()]
    if len(given) < MIN_CANDIDATES:
        front = front_rows(view)
        return templates.TemplateResponse(request, "compare_choose.html", {
            "study": name, "given": given, "front": front, "shape": shape_of_trials(view), "z": F.interval_z(view)})
    chosen = parse_candidates(trials)
    context = cache.derived(name, ("compare", tuple(chosen)), lambda v: compare_context(db, v, chosen))
    return templates.TemplateResponse(request, "compare_trials.html", context)


@router.get("/launch", response_class=HTMLResponse, include_in_schema=False)
def launch_page(request: Request, db: DatabaseDep, settings: SettingsDep, templates: TemplatesDep) -> Response:
    """A form for ``POST /api/studies``: supernet, tasks, objectives, constraints, sampler, budget."""
    return templates.TemplateResponse(request, "launch.html", {
        "supernets": launchable_supernets(db, settings), "tasks": list(DEFAULT_TASK_METRIC), "samplers": list(SAMPLERS),
        "costs": [c for c in COST_LABELS if c != "decode_tokens_per_s"], "work_dir": str(settings.work_dir)})


@router.get("/studies/{name}/report.html", response_class=HTMLResponse, include_in_schema=False)
def report_page(name: str, cache: CacheDep) -> Response:
    text = cache.derived(name, ("report",), lambda v: render_report(v))
    return HTMLResponse(text, headers={"Content-Disposition": f'inline; filename="{name}.html"'})


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(
    request: Request,
    db: DatabaseDep,
    cache: CacheDep,
    templates: TemplatesDep,
    study: Annotated[list[str], Query(max_length=8)] = [],  # noqa: B006 - FastAPI query list
    x: str | None = None,
    y: str | None = None,
) -> Response:
    names = [s["name"] for s in study_summaries(db, cache)]
    chosen = [s for s in study if s]
    fig_json = None
    rows = []
    if len(chosen) >= 2:
        views = [cache.view(s) for s in chosen]
        fig_json = pio.to_json(F.overlay_figure(views, x, y))
        rows = [study_summary(v) for v in views]
    elif len(chosen) == 1:
        rows = [study_summary(cache.view(chosen[0]))]
    axes = []
    if chosen:
        axes = column_choices(cache.view(chosen[0]))
    return templates.TemplateResponse(
        request,
        "compare.html",
        {"names": names, "chosen": chosen, "figure": fig_json, "rows": rows, "axes": axes, "x": x, "y": y},
    )


@router.get("/studies/{name}/", include_in_schema=False)
def trailing(name: str) -> Response:
    return RedirectResponse(f"/studies/{name}")


__all__ = ["router"]
