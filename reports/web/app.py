"""The FastAPI app: pages to browse studies, pick and export, and the JSON API behind them.

Pages (HTML): ``/`` studies, ``/studies/{name}`` study (Pareto plot with objective
selectors, sortable front table, hypervolume history, live progress),
``/studies/{name}/trials/{n}`` candidate, ``/studies/{name}/pick`` pick and export,
``/compare?study=a&study=b`` overlay, ``/studies/{name}/report.html`` the static report.

JSON API (OpenAPI at ``/docs`` and ``/openapi.json``): studies, trials (paged), front,
candidate, figures; ``POST /api/pick``; and, with ``Authorization: Bearer
<NAS_API_TOKEN>``, ``POST /api/studies`` (launch ``nas search`` in a worker process),
``POST /api/exports`` (``nas export`` in a worker process), ``DELETE /api/jobs/{id}``;
``GET /api/jobs[/{id}]`` report job status.

Everything reads through :mod:`storage` (no SQL strings); results are cached per study
(:mod:`reports.web.cache`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from plotly.offline import get_plotlyjs

import storage
from nas.errors import NasError
from nas.front import resolve_column
from nas.metrics import ACCURACY, COST_LABELS
from nas.pick import bounds_from_mapping, describe_empty
from nas.search.spec import parse_spec, resolve_paths
from reports import figures as F
from reports.data import StudyView, TrialNotFound, finite, pick_in_view
from reports.html import render_report
from reports.web.cache import StudyCache
from reports.web.jobs import JobManager, TooManyJobs
from reports.web.schemas import (
    ExportBody,
    ExportStarted,
    JobOut,
    PickBody,
    StudyLaunchBody,
    StudyLaunched,
    StudySummary,
    TrialOut,
    TrialPage,
)
from reports.web.security import LimitsMiddleware, confine, require_token

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
MAX_PAGE_SIZE = 500
FIGURE_KINDS = ("pareto", "pareto3d", "hypervolume", "tasks", "parallel")


@dataclass(frozen=True)
class WebSettings:
    """What the app serves and how.

    ``token`` guards every mutating endpoint (``nas serve`` makes a random one when
    ``NAS_API_TOKEN`` is unset); ``work_dir`` holds exports (``<work>/exports``),
    launched specs (``<work>/specs``) and job logs (``<work>/jobs``).
    """
    database_url: str
    work_dir: Path
    token: str
    cache_ttl_s: float = 2.0
    max_jobs: int = 2

    @property
    def exports_dir(self) -> Path:
        return self.work_dir / "exports"


def create_app(settings: WebSettings) -> FastAPI:
    """Build the app for ``settings`` (opens the database; raises StorageError if it cannot)."""
    if not settings.token:
        raise NasError("the web app needs an API token for its mutating endpoints")
    db = storage.open_database(settings.database_url)
    jobs = JobManager(settings.work_dir, env={"NAS_STORAGE": db.url, "NAS_WORK_DIR": str(settings.work_dir)},
                      max_running=settings.max_jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        yield
        jobs.shutdown()
        db.close()

    app = FastAPI(
        title="Elastic NAS",
        description="Browse NAS studies and their Pareto fronts, pick sub-networks under a budget, export them.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.cache = StudyCache(db, ttl_s=settings.cache_ttl_s)
    app.state.jobs = jobs
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["num"] = _num_filter
    templates.env.filters["tojson_safe"] = _json_for_script

    app.add_middleware(LimitsMiddleware)

    @app.exception_handler(storage.StorageError)
    async def storage_error(request: Request, exc: storage.StorageError) -> Response:
        code = 404 if isinstance(exc, TrialNotFound) or str(exc).startswith("no study named") else 503
        return _error(request, templates, code, str(exc))

    @app.exception_handler(NasError)
    async def nas_error(request: Request, exc: NasError) -> Response:
        return _error(request, templates, 422, str(exc))

    cache: StudyCache = app.state.cache

    # ================================================================ pages
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def studies_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "studies.html", {"studies": _summaries(db, cache)})

    @app.get("/studies/{name}", response_class=HTMLResponse, include_in_schema=False)
    async def study_page(name: str) -> Response:
        # the page does not depend on the request: render once per study version
        key = ("page-html",)
        html = cache.peek(name, key)
        if html is None:
            html = await run_in_threadpool(
                cache.derived, name, key, lambda v: templates.get_template("study.html").render(_study_context(v))
            )
        return HTMLResponse(html)

    @app.get("/studies/{name}/trials/{trial}", response_class=HTMLResponse, include_in_schema=False)
    def candidate_page(request: Request, name: str, trial: int) -> Response:
        detail = _candidate(db, cache, name, trial)
        view = cache.view(name)
        figs = cache.derived(name, ("candidate-figs", trial), lambda v: _candidate_figures(detail))
        return templates.TemplateResponse(
            request, "candidate.html", {"study": name, "c": detail, "figs": figs, "view_status": view.status}
        )

    @app.get("/studies/{name}/pick", response_class=HTMLResponse, include_in_schema=False)
    def pick_page(request: Request, name: str) -> Response:
        view = cache.view(name)
        columns = _column_choices(view)
        bounds = [o.column for o in view.objectives if o.direction == "minimize"] or ["params"]
        return templates.TemplateResponse(
            request,
            "pick.html",
            {"study": name, "columns": columns, "metrics": [ACCURACY, *view.metric_columns],
             "default_bounds": bounds, "costs": list(view.cost_columns)},
        )

    @app.get("/studies/{name}/report.html", response_class=HTMLResponse, include_in_schema=False)
    def report_page(name: str) -> Response:
        text = cache.derived(name, ("report",), lambda v: render_report(v))
        return HTMLResponse(text, headers={"Content-Disposition": f'inline; filename="{name}.html"'})

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_page(
        request: Request,
        study: Annotated[list[str], Query(max_length=8)] = [],  # noqa: B006 - FastAPI query list
        x: str | None = None,
        y: str | None = None,
    ) -> Response:
        names = [s["name"] for s in _summaries(db, cache)]
        chosen = [s for s in study if s]
        fig_json = None
        rows = []
        if len(chosen) >= 2:
            views = [cache.view(s) for s in chosen]
            fig_json = pio.to_json(F.overlay_figure(views, x, y))
            rows = [_summary(v) for v in views]
        elif len(chosen) == 1:
            rows = [_summary(cache.view(chosen[0]))]
        axes = []
        if chosen:
            axes = _column_choices(cache.view(chosen[0]))
        return templates.TemplateResponse(
            request,
            "compare.html",
            {"names": names, "chosen": chosen, "figure": fig_json, "rows": rows, "axes": axes, "x": x, "y": y},
        )

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    # ================================================================== API
    @app.get("/api/health", tags=["meta"])
    def health() -> dict[str, Any]:
        return {"ok": True, "database": db.safe_url}

    @app.get("/api/studies", response_model=list[StudySummary], tags=["studies"])
    def api_studies() -> list[dict[str, Any]]:
        return _summaries(db, cache)

    @app.get("/api/studies/{name}", tags=["studies"])
    def api_study(name: str) -> dict[str, Any]:
        view = cache.view(name)
        out = _summary(view)
        out.update(
            spec=view.spec,
            top_fidelity=view.top_fidelity,
            columns={"metrics": list(view.metric_columns), "costs": list(view.cost_columns),
                     "dims": list(view.dim_columns)},
        )
        return out

    @app.get("/api/studies/{name}/trials", response_model=TrialPage, tags=["studies"])
    def api_trials(
        name: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
        only: Annotated[str, Query(pattern="^(all|front|feasible|top)$")] = "all",
    ) -> dict[str, Any]:
        rows = cache.derived(name, ("rows", only), lambda v: _trial_rows(v, only))
        return {"study": name, "total": len(rows), "offset": offset, "limit": limit, "trials": rows[offset: offset + limit]}

    @app.get("/api/studies/{name}/front", response_model=list[TrialOut], tags=["studies"])
    async def api_front(name: str) -> Response:
        key = ("front-json",)
        body = cache.peek(name, key)
        if body is None:
            body = await run_in_threadpool(cache.derived, name, key, lambda v: json.dumps(_trial_rows(v, "front")))
        return Response(body, media_type="application/json")

    @app.get("/api/studies/{name}/trials/{trial}", tags=["studies"])
    def api_candidate(name: str, trial: int) -> dict[str, Any]:
        return _candidate(db, cache, name, trial)

    @app.get("/api/studies/{name}/figures/{kind}", tags=["figures"])
    def api_figure(
        name: str,
        kind: str,
        x: Annotated[str | None, Query(max_length=200)] = None,
        y: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        """A plotly figure as JSON (``Plotly.newPlot(div, fig.data, fig.layout)``)."""
        if kind not in FIGURE_KINDS:
            raise HTTPException(404, f"unknown figure {kind!r}; use one of {', '.join(FIGURE_KINDS)}")
        view = cache.view(name)
        for axis in (x, y):
            if axis is not None and resolve_column(axis, view.frame) is None:
                raise HTTPException(422, f"study {name!r} has no column {axis!r}")
        key = ("figure", kind, x, y)
        return Response(cache.derived(name, key, lambda v: pio.to_json(_figure(v, kind, x, y))), media_type="application/json")


    @app.get("/api/compare/figure", tags=["figures"])
    def api_compare(
        study: Annotated[list[str], Query(min_length=2, max_length=8)],
        x: Annotated[str | None, Query(max_length=200)] = None,
        y: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        views = [cache.view(s) for s in study]
        return Response(pio.to_json(F.overlay_figure(views, x, y)), media_type="application/json")

    @app.post("/api/pick", tags=["pick"])
    def api_pick(body: PickBody) -> dict[str, Any]:
        """Rank the feasible efficient candidates of a study under bounds (read-only)."""
        view = cache.view(body.study)
        result = _run_pick(view, body)
        out = result.to_dict()
        out["study"] = body.study
        out["message"] = "" if result.candidates else describe_empty(result)
        return out

    @app.post("/api/studies", response_model=StudyLaunched, status_code=202, tags=["studies"],
              dependencies=[Depends(require_token)])
    def api_launch(body: StudyLaunchBody) -> dict[str, Any]:
        """Validate a study spec and run `nas search` on it in a background worker process."""
        spec = parse_spec(body.spec, source="spec")
        if spec.storage is not None and storage.normalise_url(spec.storage) != db.url:
            raise HTTPException(422, f"spec.storage must be this server's database ({db.safe_url}) or omitted")
        spec = resolve_paths(spec, base=settings.work_dir)
        if not Path(spec.supernet).is_dir():
            raise HTTPException(422, f"spec.supernet: {spec.supernet} is not a supernet directory on the server")
        data = spec.to_dict()
        data["storage"] = db.url
        specs_dir = settings.work_dir / "specs"
        specs_dir.mkdir(parents=True, exist_ok=True)
        path = specs_dir / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        path.chmod(0o600)
        job = _start(jobs, "study", ["search", str(path)], {"study": spec.name, "spec": str(path)})
        return {"study": spec.name, "job": job.to_dict()}

    @app.post("/api/exports", response_model=ExportStarted, status_code=202, tags=["exports"],
              dependencies=[Depends(require_token)])
    def api_export(body: ExportBody) -> dict[str, Any]:
        """Export a trial (or the best pick) as a standalone model in a background worker process.
        ``out`` is relative to the server's exports directory."""
        target = confine(settings.exports_dir, body.out)
        view = cache.view(body.study)
        trial = body.trial
        if body.pick is not None:
            result = _run_pick(view, body.pick)
            if not result.candidates:
                raise HTTPException(422, describe_empty(result))
            trial = result.candidates[0].trial
        assert trial is not None
        view.trial(trial)  # 404 for an unknown trial
        if target.exists() and any(target.iterdir()) and not body.overwrite:
            raise HTTPException(409, f"{body.out} already exists in the exports directory; choose another name or set overwrite")
        args = ["export", body.study, str(trial), "--out", str(target)]
        if body.verify:
            args.append("--verify")
        if body.dtype:
            args += ["--dtype", body.dtype]
        if body.overwrite:
            args.append("--overwrite")
        rel = str(target.relative_to(settings.exports_dir.resolve()))
        job = _start(jobs, "export", args, {"study": body.study, "trial": trial, "out": rel})
        return {"study": body.study, "trial": trial, "out": rel, "job": job.to_dict()}

    @app.get("/api/jobs", response_model=list[JobOut], tags=["jobs"])
    def api_jobs() -> list[dict[str, Any]]:
        return [j.to_dict() for j in jobs.list()]

    @app.get("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
    def api_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job.to_dict()

    @app.delete("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"], dependencies=[Depends(require_token)])
    def api_cancel(job_id: str) -> dict[str, Any]:
        job = jobs.cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job.to_dict()

    @app.get("/studies/{name}/", include_in_schema=False)
    def trailing(name: str) -> Response:
        return RedirectResponse(f"/studies/{name}")

    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")  # after /static/plotly.min.js
    return app


# ==================================================================== helpers
_PLOTLY_JS: str | None = None


def _plotly_js() -> str:
    global _PLOTLY_JS  # noqa: PLW0603 - an immutable asset read once
    if _PLOTLY_JS is None:
        _PLOTLY_JS = get_plotlyjs()
    return _PLOTLY_JS


def _start(jobs: JobManager, kind: str, args: list[str], result: dict[str, Any]) -> Any:
    try:
        return jobs.start(kind, args, result)
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc)) from None


def _error(request: Request, templates: Jinja2Templates, code: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": message}, status_code=code)
    return templates.TemplateResponse(request, "error.html", {"code": code, "message": message}, status_code=code)


def _json_for_script(value: Any) -> Markup:
    """JSON safe to embed in a <script> (no '</' can close the tag)."""
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def _num_filter(value: Any, column: str = "") -> str:
    f = finite(value)
    return "–" if f is None else F.format_value(column, f)


def _summary(view: StudyView) -> dict[str, Any]:
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


def _summaries(db: storage.Database, cache: StudyCache) -> list[dict[str, Any]]:
    out = []
    for row in storage.list_studies(db):
        out.append(cache.derived(row.name, ("summary",), _summary))
    return out


def _trial_row(view: StudyView, r: pd.Series) -> dict[str, Any]:
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
        "metrics": {c: finite(r[c]) for c in view.metric_columns},
        "stderr": {c: finite(r.get(f"{c}_stderr")) for c in view.metric_columns},
        "costs": {c: finite(r[c]) for c in view.cost_columns},
    }


def _trial_rows(view: StudyView, only: str) -> list[dict[str, Any]]:
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
    return [_trial_row(view, r) for _, r in frame.iterrows()]


def _column_choices(view: StudyView) -> list[dict[str, str]]:
    out = []
    for col in view.value_columns:
        if col in view.frame.columns and view.frame[col].notna().any():
            label = COST_LABELS.get(col, col)
            out.append({"column": col, "label": label, "direction": view.objective_for(col).direction})
    return out


def _study_context(view: StudyView) -> dict[str, Any]:
    x, y = F.default_axes(view)
    front = _trial_rows(view, "front")
    main_metrics = list(dict.fromkeys([c for c in view.metric_columns if c.endswith(("/acc_norm", "/acc", "/loss"))]))[:6]
    return {
        "study": view.name,
        "summary": _summary(view),
        "axes": _column_choices(view),
        "x": x.column,
        "y": y.column,
        "front": front,
        "front_metrics": main_metrics,
        "front_costs": list(view.cost_columns),
        "running": view.status in ("created", "running"),
        "objectives": [o.column for o in view.objectives],
    }


def _figure(view: StudyView, kind: str, x: str | None, y: str | None) -> Any:
    if kind == "pareto":
        return F.pareto_figure(view, x, y)
    if kind == "pareto3d":
        return F.pareto3d_figure(view)
    if kind == "hypervolume":
        return F.hypervolume_figure(view)
    if kind == "tasks":
        return F.task_breakdown_figure(view)
    return F.parallel_figure(view)


def _run_pick(view: StudyView, body: PickBody) -> Any:
    return pick_in_view(view, body.metric, bounds_from_mapping(body.max, body.min), body.top)


def _candidate(db: storage.Database, cache: StudyCache, name: str, trial: int) -> dict[str, Any]:
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
        base = _trial_row(view, row)
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
        )
        return base

    return cache.derived(name, ("candidate", trial), build)


def _candidate_figures(detail: dict[str, Any]) -> dict[str, str]:

    layer = F.draw_layer_chart(F.layer_chart_data(detail["config"], detail["supernet_config"]),
                               title=f"trial {detail['trial']}: per-layer config")
    rows = detail["evaluations"].get(detail["fidelity"] or "", [])
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


__all__ = ["FIGURE_KINDS", "MAX_PAGE_SIZE", "WebSettings", "create_app"]
