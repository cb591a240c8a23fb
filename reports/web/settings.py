"""What the web app serves and how: :class:`WebSettings` (re-exported by :mod:`reports.web.app`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WebSettings:
    """What the app serves and how.

    ``token`` guards every mutating endpoint (``nas serve`` makes a random one when
    ``NAS_API_TOKEN`` is unset); ``work_dir`` holds exports (``<work>/exports``),
    launched specs (``<work>/specs``) and job logs (``<work>/jobs``). A study spec
    submitted through the API may only name files under :attr:`allowed_roots`: the work
    dir, ``data_dir`` (the offline data, ``NAS_DATA_DIR``) and ``supernet_dirs``
    (``nas serve --supernet-dir``, ``NAS_SUPERNET_DIRS``).
    """
    database_url: str
    work_dir: Path
    token: str
    cache_ttl_s: float = 2.0
    max_jobs: int = 2
    data_dir: Path | None = None
    supernet_dirs: tuple[Path, ...] = ()

    @property
    def exports_dir(self) -> Path:
        return self.work_dir / "exports"

    @property
    def allowed_roots(self) -> tuple[Path, ...]:
        roots = [self.work_dir, *([self.data_dir] if self.data_dir is not None else []), *self.supernet_dirs]
        return tuple(dict.fromkeys(p.expanduser().resolve() for p in roots))


__all__ = ["WebSettings"]
