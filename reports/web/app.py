"""The FastAPI app factory: pages to browse studies, pick and export, and the JSON API behind them.

Pages (HTML, :mod:`reports.web.pages`): ``/`` studies, ``/studies/{name}`` study (Pareto
plot with objective selectors, sortable front table, hypervolume history, live progress),
``/studies/{name}/trials/{n}`` candidate, ``/studies/{name}/pick`` pick and export,
``/compare?study=a&study=b`` overlay, ``/studies/{name}/report.html`` the static report.

JSON API (OpenAPI at ``/docs`` (Swagger UI from local files) and ``/openapi.json``; :mod:`reports.web.api`): studies,
trials (paged), front, candidate, figures; ``POST /api/pick``; and, with ``Authorization:
Bearer <NAS_API_TOKEN>`` (:mod:`reports.web.api_jobs`), ``POST /api/studies`` (launch
``nas search`` in a worker process), ``POST /api/exports`` (``nas export`` in a worker
process), ``DELETE /api/jobs/{id}``; ``GET /api/jobs[/{id}]`` report job status.

:func:`create_app` puts the shared objects on ``app.state`` (settings, db, cache, jobs,
templates); the routers read them through the dependencies in :mod:`reports.web.state`.
Everything reads through :mod:`storage` (no SQL strings); results are cached per study
(:mod:`reports.web.cache`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

import storage
from nas.errors import NasError
from reports.data import TrialNotFound
from reports.numbers import cell_html, human, raw
from reports.web import api, api_jobs, assets, pages
from reports.web.api import MAX_PAGE_SIZE
from reports.web.cache import StudyCache
from reports.web.jobs import JobManager
from reports.web.security import LimitsMiddleware
from reports.web.settings import WebSettings
from reports.web.views import FIGURE_KINDS, glance_svg

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent


def create_app(settings: WebSettings) -> FastAPI:
    """Build the app for ``settings`` (opens the database; raises StorageError if it cannot)."""
    if not settings.token:
        raise NasError("the web app needs an API token for its mutating endpoints")
    db = storage.open_database(settings.database_url)
    jobs = JobManager(settings.work_dir, env={"NAS_STORAGE": db.url, "NAS_WORK_DIR": str(settings.work_dir)},
                      max_running=settings.max_jobs)

    app = FastAPI(
        title="Elastic NAS",
        description="Browse NAS studies and their Pareto fronts, pick sub-networks under a budget, export them.",
        version="1",
        lifespan=_lifespan,
        docs_url=None,  # served by reports.web.assets from local files, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.cache = StudyCache(db, ttl_s=settings.cache_ttl_s)
    app.state.jobs = jobs
    app.state.templates = _templates()

    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(LimitsMiddleware)
    app.add_exception_handler(storage.StorageError, _storage_error)
    app.add_exception_handler(NasError, _nas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    app.include_router(assets.router)  # before the /static mount: /static/plotly-*.min.js wins
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(api_jobs.router)
    app.mount(assets.VENDOR_URL, StaticFiles(directory=str(assets.vendor_dir())), name="vendor")
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.jobs.shutdown()
    app.state.db.close()


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["num"] = _num_filter
    templates.env.filters["cell"] = _cell_filter
    templates.env.filters["raw"] = raw
    templates.env.globals["glance"] = lambda row, shape=None: Markup(  # noqa: S704 - numbers only
        glance_svg(row.get("layers", []), row.get("d_ff", []), (shape or {}).get("n_layer", 0), (shape or {}).get("d_ff", 0)))
    templates.env.filters["tojson_safe"] = _json_for_script
    basic = assets.basic_bundle_path() is not None
    # the basic partial bundle when installed (a quarter of the code to parse); app.js loads the
    # full one on demand for the figures it does not draw (parallel coordinates, 3-D)
    templates.env.globals["plotly_src"] = assets.basic_bundle_url() if basic else assets.PLOTLY_URL
    templates.env.globals["plotly_full_src"] = assets.PLOTLY_URL if basic else None
    templates.env.globals["plotly_basic_traces"] = list(assets.BASIC_TRACES)
    return templates


async def _storage_error(request: Request, exc: Exception) -> Response:
    code = 404 if isinstance(exc, TrialNotFound) or str(exc).startswith("no study named") else 503
    return _error(request, code, str(exc))


async def _nas_error(request: Request, exc: Exception) -> Response:
    return _error(request, 422, str(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    """422 with each problem's location, message and type. FastAPI's own handler echoes the
    offending input, which fails to serialise when it is not JSON (a NaN or an infinite
    bound, 1e999): a 500 instead of the 422."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())],
         "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": problems}, status_code=422)
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in problems)
    return _error(request, 422, text)


def _error(request: Request, code: int, message: str) -> Response:
    """JSON for the API and for clients that do not accept HTML, else the error page."""
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": message}, status_code=code)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {"code": code, "message": message}, status_code=code)


def _json_for_script(value: Any) -> Markup:
    """JSON safe to embed in a <script> (no '</' can close the tag)."""
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def _num_filter(value: Any, column: str = "") -> str:
    return human(value, column)


def _cell_filter(value: Any, column: str = "", stderr: Any = None, z: float = 1.0) -> Markup:
    return Markup(cell_html(value, column, stderr, z))  # noqa: S704 - cell_html escapes its text


__all__ = ["FIGURE_KINDS", "MAX_PAGE_SIZE", "WebSettings", "create_app"]
