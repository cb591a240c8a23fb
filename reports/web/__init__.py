"""The web service: FastAPI app (:func:`create_app`) and :func:`serve` (``nas serve``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from nas.errors import NasError
from nas.paths import data_dir
from reports.web.app import FIGURE_KINDS, MAX_PAGE_SIZE, WebSettings, create_app
from reports.web.security import TOKEN_ENV, check_bind, new_token
from storage import normalise_url

log = logging.getLogger(__name__)


SUPERNET_DIRS_ENV = "NAS_SUPERNET_DIRS"


def settings_from_env(
    database_url: str | None, work_dir: Path, *, host: str = "127.0.0.1", supernet_dirs: Sequence[Path] = ()
) -> tuple[WebSettings, bool]:
    """Settings for ``nas serve``: the token from ``NAS_API_TOKEN``, or a fresh random one
    (loopback only); the directories API-submitted specs may read: the work dir, the data
    dir, ``supernet_dirs`` and those in ``NAS_SUPERNET_DIRS`` (``os.pathsep``-separated).
    Returns the settings and whether the token was generated."""
    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    generated = token is None
    extra = [Path(p) for p in os.environ.get(SUPERNET_DIRS_ENV, "").split(os.pathsep) if p.strip()]
    dirs = []
    for d in [*supernet_dirs, *extra]:
        if not d.expanduser().is_dir():
            raise NasError(f"supernet directory root {d} does not exist; fix --supernet-dir / {SUPERNET_DIRS_ENV}")
        dirs.append(d.expanduser().resolve())
    data = data_dir()
    return WebSettings(database_url=normalise_url(database_url), work_dir=work_dir.resolve(),
                       token=token or new_token(), data_dir=data.resolve() if data is not None else None,
                       supernet_dirs=tuple(dirs)), generated


def serve(settings: WebSettings, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted (refuses a non-loopback host without a
    token from the environment)."""
    # deferred: uvicorn only when serving
    import uvicorn

    check_bind(host, os.environ.get(TOKEN_ENV))
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["FIGURE_KINDS", "MAX_PAGE_SIZE", "SUPERNET_DIRS_ENV", "WebSettings", "create_app", "serve", "settings_from_env"]
