"""Static assets served without any network: plotly.js and the API docs' Swagger UI / ReDoc.

* plotly.js comes from the ``plotly`` package, at a URL that names its version
  (:data:`PLOTLY_URL`), so a browser may keep it for a year (``immutable``) and never asks
  again; it is gzip-compressed once per process (4.8 MB -> about 1.4 MB on the wire) and
  answers ``If-None-Match`` with 304.
* The pages load plotly.js's *basic* partial bundle (scatter, bar, pie and every layout
  component: 1.2 MB instead of 4.8 MB, so a first visit parses a quarter of the code) when it
  is installed: ``python -m reports.web.fetch_assets`` fetches the npm package of the same
  plotly.js version as the ``plotly`` package's own bundle from the npm registry, checks
  it against the registry's sha512, and keeps it in ``reports/web/bundles/`` (``make venv``
  and ``.ci/run`` do this). A figure with another trace type (parallel coordinates, 3-D)
  loads the full bundle on demand (``plotlyFor`` in ``static/app.js``). Without the
  partial bundle (or with ``NAS_PLOTLY_BUNDLE=full``) every page loads the full one.
* ``/docs`` loads Swagger UI from the ``fastapi-offline`` package's files (mounted at
  :data:`VENDOR_URL`), not from a CDN the machine may not reach; ``/redoc`` points there
  (ReDoc's bundle fetches its logo from a CDN).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import tarfile
import urllib.request
from pathlib import Path

import plotly
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from plotly.offline import get_plotlyjs

PLOTLY_URL = f"/static/plotly-{plotly.__version__}.min.js"
VENDOR_URL = "/static/vendor"
#: where ``python -m reports.web.assets`` keeps the partial bundle (not in git)
BUNDLE_DIR = Path(__file__).resolve().parent / "bundles"
#: the npm package of plotly.js's basic partial bundle, and the file inside it
BASIC_PACKAGE, BASIC_MEMBER = "plotly.js-basic-dist-min", "package/plotly-basic.min.js"
#: the trace types the basic bundle draws (the pages load the full bundle for any other)
BASIC_TRACES = ("scatter", "bar", "pie")
NPM_REGISTRY = "https://registry.npmjs.org"
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
def plotly_js_version() -> str:
    """The plotly.js version inside the ``plotly`` package (its bundle's banner: ``plotly.js v4.1.1``)."""
    found = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", get_plotlyjs()[:400])
    if not found:
        raise RuntimeError("cannot read the plotly.js version from the plotly package's bundle")
    return found.group(1)


def basic_bundle_path() -> Path | None:
    """The installed basic partial bundle of the full bundle's version, or None (also when
    ``NAS_PLOTLY_BUNDLE=full`` asks for the full bundle on every page)."""
    if os.environ.get("NAS_PLOTLY_BUNDLE", "").strip().lower() == "full":
        return None
    path = BUNDLE_DIR / f"plotly-basic-{plotly_js_version()}.min.js"
    return path if path.is_file() else None


def basic_bundle_url() -> str:
    return f"/static/plotly-basic-{plotly_js_version()}.min.js"


def fetch_basic_bundle(*, registry: str = NPM_REGISTRY, timeout: float = 60.0) -> Path:
    """Download the basic partial bundle of :func:`plotly_js_version` from the npm registry,
    check the tarball's sha512 against the registry's ``dist.integrity``, and install it in
    :data:`BUNDLE_DIR` (written beside, then renamed: a failed fetch leaves nothing half-written)."""
    version = plotly_js_version()
    with urllib.request.urlopen(f"{registry}/{BASIC_PACKAGE}/{version}", timeout=timeout) as reply:  # noqa: S310 - https registry
        dist = json.load(reply)["dist"]
    algo, _, expected = dist["integrity"].partition("-")
    if algo != "sha512":
        raise RuntimeError(f"{BASIC_PACKAGE}@{version}: unexpected integrity {dist['integrity']!r} from {registry}")
    with urllib.request.urlopen(dist["tarball"], timeout=timeout) as reply:  # noqa: S310 - the registry's own tarball URL
        tarball = reply.read()
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != expected:
        raise RuntimeError(f"{BASIC_PACKAGE}@{version}: the tarball from {dist['tarball']} fails its sha512 check")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(BASIC_MEMBER)
        licence = archive.extractfile("package/LICENSE")
        if member is None:
            raise RuntimeError(f"{BASIC_PACKAGE}@{version} has no {BASIC_MEMBER}")
        code, licence_text = member.read(), licence.read() if licence else b""
    if f"v{version}".encode() not in code[:400]:
        raise RuntimeError(f"{BASIC_PACKAGE}@{version}: the bundle's banner names another version")
    BUNDLE_DIR.mkdir(parents=True, exist_ok=True)
    target = BUNDLE_DIR / f"plotly-basic-{version}.min.js"
    partial = target.with_suffix(".partial")
    partial.write_bytes(code)
    partial.replace(target)
    (BUNDLE_DIR / "LICENSE.plotly.js").write_bytes(licence_text)
    return target


@functools.cache
def _bundle(path: Path | None) -> tuple[bytes, bytes, str]:
    """(plain, gzipped, etag) of a plotly.js bundle (``None``: the full one), built once per process."""
    plain = path.read_bytes() if path else get_plotlyjs().encode()
    return plain, gzip.compress(plain, compresslevel=6, mtime=0), '"' + hashlib.sha256(plain).hexdigest()[:20] + '"'


def plotly_response(request: Request, *, cache_control: str = IMMUTABLE, path: Path | None = None) -> Response:
    plain, packed, etag = _bundle(path)
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


@router.get("/static/plotly-basic-{version}.min.js", include_in_schema=False)
def plotly_basic_js(request: Request, version: str) -> Response:
    path = basic_bundle_path()
    if path is None or version != plotly_js_version():
        return Response(status_code=404)
    return plotly_response(request, path=path)


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


__all__ = ["BASIC_TRACES", "IMMUTABLE", "PLOTLY_URL", "VENDOR_URL", "basic_bundle_path", "basic_bundle_url",
           "fetch_basic_bundle", "plotly_js_version", "plotly_response", "router", "vendor_dir"]
