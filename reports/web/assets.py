"""Static assets served without any network: plotly.js and the API docs' Swagger UI / ReDoc.

* plotly.js comes from the ``plotly`` package, at a URL that names its version
  (:data:`PLOTLY_URL`), so a browser may keep it for a year (``immutable``) and never asks
  again; it is gzip-compressed once per process (4.8 MB -> about 1.4 MB on the wire) and
  answers ``If-None-Match`` with 304.
* ``/docs`` loads Swagger UI from the ``fastapi-offline`` package's files (mounted at
  :data:`VENDOR_URL`), not from a CDN the machine may not reach; ``/redoc`` points there
  (ReDoc's bundle fetches its logo from a CDN).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
from pathlib import Path

import plotly
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from plotly.offline import get_plotlyjs

PLOTLY_URL = f"/static/plotly-{plotly.__version__}.min.js"
VENDOR_URL = "/static/vendor"
#: A year: the URL changes with the plotly version, so the content behind it never does.
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter()


def vendor_dir() -> Path:
    """The directory holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``redoc.standalone.js``."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fastapi-offline package is missing: pip install fastapi-offline (it ships Swagger UI)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _plotly() -> tuple[bytes, bytes, str]:
    """(plain, gzipped, etag) of the plotly.js bundle, built once per process."""
    plain = get_plotlyjs().encode()
    return plain, gzip.compress(plain, compresslevel=6, mtime=0), '"' + hashlib.sha256(plain).hexdigest()[:20] + '"'


def plotly_response(request: Request, *, cache_control: str = IMMUTABLE) -> Response:
    plain, packed, etag = _plotly()
    headers = {"Cache-Control": cache_control, "ETag": etag, "Vary": "Accept-Encoding"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type="application/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return Response(plain, media_type="application/javascript", headers=headers)


@router.get(PLOTLY_URL, include_in_schema=False)
def plotly_js(request: Request) -> Response:
    return plotly_response(request)


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js_unversioned(request: Request) -> Response:
    """The same bundle at the old URL (for pages saved before versioned URLs), cached a day."""
    return plotly_response(request, cache_control="public, max-age=86400")


@router.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="Elastic NAS API",
        swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js", swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
        swagger_favicon_url=f"{VENDOR_URL}/favicon.png",
    )


@router.get("/redoc", include_in_schema=False)
def redoc() -> RedirectResponse:
    """ReDoc's bundle fetches its own logo from a CDN even when served locally: the offline
    docs are Swagger UI's."""
    return RedirectResponse("/docs")


__all__ = ["IMMUTABLE", "PLOTLY_URL", "VENDOR_URL", "plotly_response", "router", "vendor_dir"]
