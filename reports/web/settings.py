"""What the web app serves and how: :class:`WebSettings` (re-exported by :mod:`reports.web.app`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


__all__ = ["WebSettings"]
