"""The web service: FastAPI app (:func:`create_app`) and :func:`serve` (``nas serve``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reports.web.app import FIGURE_KINDS, MAX_PAGE_SIZE, WebSettings, create_app
from reports.web.security import TOKEN_ENV, check_bind, new_token
from storage import normalise_url

log = logging.getLogger(__name__)


def settings_from_env(database_url: str | None, work_dir: Path, *, host: str = "127.0.0.1") -> tuple[WebSettings, bool]:
    """Settings for ``nas serve``: the token from ``NAS_API_TOKEN``, or a fresh random one
    (loopback only). Returns the settings and whether the token was generated."""
    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    generated = token is None
    return WebSettings(database_url=normalise_url(database_url), work_dir=work_dir.resolve(),
                       token=token or new_token()), generated


def serve(settings: WebSettings, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted (refuses a non-loopback host without a
    token from the environment)."""
    # deferred: uvicorn only when serving
    import uvicorn

    check_bind(host, os.environ.get(TOKEN_ENV))
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["FIGURE_KINDS", "MAX_PAGE_SIZE", "WebSettings", "create_app", "serve", "settings_from_env"]
