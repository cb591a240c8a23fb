"""The read-only JSON API: health, studies, trials (paged), front, candidate, figures,
the compare overlay and ``POST /api/pick``. Launching, exporting and jobs are in
:mod:`reports.web.api_jobs`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import plotly.io as pio
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from nas.front import resolve_column
from nas.pick import describe_empty
from reports import figures as F
from reports.data import finite
from reports.web.schemas import PickBody, PickOut, StudySummary, TrialBrief, TrialOut, TrialPage, error_responses
from reports.web.state import CacheDep, DatabaseDep
from reports.web.trials import MAX_RANGES, TrialQuery, csv_text, parse_range, parse_trials, select_trials
from reports.web.views import (
    FIGURE_KINDS,
    candidate_detail,
    front_rows,
    run_pick,
    study_figure,
    study_summaries,
    study_summary,
    trial_brief,
    trial_row,
    trial_rows,
)

MAX_PAGE_SIZE = 500
_COLUMN = r"^[A-Za-z0-9_.\-/@]{1,200}$"

router = APIRouter(responses=error_responses(503))


@router.get("/api/health", tags=["meta"])
def health(db: DatabaseDep) -> dict[str, Any]:
    return {"ok": True, "database": db.safe_url}


@router.get("/api/studies", response_model=list[StudySummary], tags=["studies"])
def api_studies(db: DatabaseDep, cache: CacheDep) -> list[dict[str, Any]]:
    return study_summaries(db, cache)


@router.get("/api/studies/{name}", tags=["studies"], responses=error_responses(404, 422))
def api_study(name: str, cache: CacheDep) -> dict[str, Any]:
    view = cache.view(name)
    out = study_summary(view)
    out.update(
        spec=view.spec,
        top_fidelity=view.top_fidelity,
        columns={"metrics": list(view.metric_columns), "costs": list(view.cost_columns),
                 "dims": list(view.dim_columns)},
    )
    return out


def trial_query(
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    sort: Annotated[str, Query(max_length=200, pattern=_COLUMN)] = "trial",
    desc: bool = False,
    fidelity: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006 - FastAPI query list
    feasible: Annotated[str, Query(pattern="^(any|yes|no)$")] = "any",
    front_x: Annotated[str | None, Query(max_length=200, pattern=_COLUMN)] = None,
    front_y: Annotated[str | None, Query(max_length=200, pattern=_COLUMN)] = None,
    range_: Annotated[list[str], Query(alias="range", max_length=MAX_RANGES)] = [],  # noqa: B006
    trials: Annotated[str | None, Query(max_length=40_000)] = None,
) -> TrialQuery:
    """The all-trials table's query: ``fidelity`` (repeat; ``none`` = never scored),
    ``feasible`` yes/no, ``front_x``/``front_y`` (only the front of those axes), ``range``
    ``COLUMN:MIN:MAX`` (repeat; either bound may be empty, ``10M`` allowed), ``trials``
    ``3,7,12`` (a plot selection), ``sort`` (any numeric column) and ``desc``."""
    return TrialQuery(
        fidelity=tuple(fidelity), feasible=None if feasible == "any" else feasible == "yes",
        front_of=(front_x, front_y) if front_x and front_y else None, ranges=tuple(parse_range(r) for r in range_),
        trials=parse_trials(trials), sort=sort, descending=desc, offset=offset, limit=limit,
    )


TrialQueryDep = Annotated[TrialQuery, Depends(trial_query)]


@router.get("/api/studies/{name}/trials", response_model=TrialPage, tags=["studies"], responses=error_responses(404, 422))
def api_trials(
    name: str,
    cache: CacheDep,
    q: TrialQueryDep,
    only: Annotated[str, Query(pattern="^(all|front|feasible|top)$")] = "all",
) -> dict[str, Any]:
    """Every trial, paged on the server; filtered and sorted by the query (``only`` is the
    older shorthand: front / feasible / top fidelity)."""
    if only != "all":
        rows = cache.derived(name, ("rows", only), lambda v: trial_rows(v, only))
        return {"study": name, "total": len(rows), "offset": q.offset, "limit": q.limit,
                "trials": rows[q.offset: q.offset + q.limit], "matching": [r["trial"] for r in rows]}
    view = cache.view(name)
    selected = select_trials(view, q)
    page = selected.iloc[q.offset: q.offset + q.limit]
    return {"study": name, "total": int(len(selected)), "offset": q.offset, "limit": q.limit,
            "trials": [trial_row(view, r) for _, r in page.iterrows()],
            "matching": [int(t) for t in selected["trial"]], "sort": q.sort, "desc": q.descending}


@router.get("/api/studies/{name}/trials.csv", tags=["studies"], responses=error_responses(404, 422),
            response_class=Response)
def api_trials_csv(name: str, cache: CacheDep, q: TrialQueryDep) -> Response:
    """The filtered, sorted trials as CSV (every matching row: no paging; raw values)."""
    view = cache.view(name)
    text = csv_text(view, select_trials(view, q))
    return Response(text, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}-trials.csv"'})


@router.get("/api/studies/{name}/front", response_model=list[TrialOut], tags=["studies"], responses=error_responses(404, 422))
async def api_front(
    name: str,
    cache: CacheDep,
    x: Annotated[str | None, Query(max_length=200)] = None,
    y: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The study's front (its objectives); with ``x`` and ``y``, the front of those two
    columns, as the Pareto plot of those axes draws it (empty: the objectives, as for a page
    drawn before the first trial, which has no axes to choose)."""
    x, y = x or None, y or None
    if x is None and y is None:
        key: tuple[Any, ...] = ("front-json",)
        build: Any = lambda v: json.dumps(trial_rows(v, "front"))  # noqa: E731
    else:
        key = ("front-json", x, y)
        build = lambda v: json.dumps(front_rows(v, _column(v, x), _column(v, y)))  # noqa: E731
    body = cache.peek(name, key)
    if body is None:
        body = await run_in_threadpool(cache.derived, name, key, build)
    return Response(body, media_type="application/json")


def _column(view: Any, column: str | None) -> str | None:
    """``column`` resolved against the study (422 naming it when unknown)."""
    if column is None:
        return None
    resolved = resolve_column(column, view.frame)
    if resolved is None:
        raise HTTPException(422, f"study {view.name!r} has no column {column!r}")
    return resolved


@router.get("/api/studies/{name}/trials/{trial}", tags=["studies"], responses=error_responses(404, 422))
def api_candidate(name: str, trial: int, db: DatabaseDep, cache: CacheDep) -> dict[str, Any]:
    return candidate_detail(db, cache, name, trial)


@router.get("/api/studies/{name}/trials/{trial}/brief", response_model=TrialBrief, tags=["studies"],
            responses=error_responses(404, 422))
def api_brief(name: str, trial: int, cache: CacheDep) -> dict[str, Any]:
    """One trial's row and per-layer glance: what a Pareto point shows when hovered (the
    figure itself carries only trial numbers and coordinates)."""
    return cache.derived(name, ("brief", trial), lambda v: trial_brief(v, trial))


@router.get("/api/studies/{name}/figures/{kind}", tags=["figures"], responses=error_responses(404, 422))
def api_figure(
    name: str,
    kind: str,
    cache: CacheDep,
    x: Annotated[str | None, Query(max_length=200)] = None,
    y: Annotated[str | None, Query(max_length=200)] = None,
    group: Annotated[str, Query(pattern="^(all|summary|n_head|d_ff|n_expert)$")] = "summary",
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """A plotly figure as JSON (``Plotly.newPlot(div, fig.data, fig.layout)``); an empty ``x``
    or ``y`` means the default axis, as an unset one does. ``group``:
    the parallel-coordinates axes (whole-network dims, or one dim per layer); ``offset``:
    the first front member of the per-task bars (a page of 12)."""
    if kind not in FIGURE_KINDS:
        raise HTTPException(404, f"unknown figure {kind!r}; use one of {', '.join(FIGURE_KINDS)}")
    view = cache.view(name)
    x, y = x or None, y or None  # empty: the default axes (a page drawn before the first trial has no choices)
    for axis in (x, y):
        if axis is not None and resolve_column(axis, view.frame) is None:
            raise HTTPException(422, f"study {name!r} has no column {axis!r}")
    key = ("figure", kind, x, y, group if kind == "parallel" else "", offset if kind == "tasks" else 0)
    return Response(cache.derived(name, key, lambda v: pio.to_json(study_figure(v, kind, x, y, group=group, offset=offset))),
                    media_type="application/json")


@router.get("/api/compare/figure", tags=["figures"], responses=error_responses(404, 422))
def api_compare(
    study: Annotated[list[str], Query(min_length=2, max_length=8)],
    cache: CacheDep,
    x: Annotated[str | None, Query(max_length=200)] = None,
    y: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    views = [cache.view(s) for s in study]
    return Response(pio.to_json(F.overlay_figure(views, x, y)), media_type="application/json")


@router.post("/api/pick", response_model=PickOut, tags=["pick"], responses=error_responses(404, 413, 422))
def api_pick(body: PickBody, cache: CacheDep, db: DatabaseDep) -> dict[str, Any]:
    """Rank the feasible efficient candidates of a study under bounds (read-only); ranked by
    the confirmed score when the study was confirmed, ties with the best marked."""
    view = cache.view(body.study)
    result = run_pick(view, body, db)
    out = result.to_dict()
    for c in out["candidates"]:  # JSON has no NaN: an unknown value is null
        for key in ("stderr", "interval", "search_score", "search_stderr"):
            c[key] = finite(c[key])
        c["values"] = {k: finite(v) for k, v in c["values"].items()}
        config = json.loads(view.trial(c["trial"])["config_json"])
        c["layers"], c["d_ff"] = [int(v) for v in config.get("layers", [])], [int(v) for v in config.get("d_ff", [])]
    out["study"] = body.study
    out["message"] = "" if result.candidates else describe_empty(result)
    return out


__all__ = ["MAX_PAGE_SIZE", "router"]
