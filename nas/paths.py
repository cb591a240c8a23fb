"""Where the tool reads data and writes run-time files.

- ``NAS_WORK_DIR`` (default ``./work``): supernets, databases, caches, reports.
- ``NAS_DATA_DIR`` (default ``../shared/data`` next to the repository, when it exists):
  offline benchmark files and training text.
- ``NAS_CACHE_DIR`` (default ``~/.cache/elastic-nas``): downloaded model files.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def work_dir() -> Path:
    return Path(os.environ.get("NAS_WORK_DIR", "work")).expanduser()


def data_dir() -> Path | None:
    """The offline data directory, or None when there is none."""
    env = os.environ.get("NAS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def cache_dir() -> Path:
    """Where downloaded model files are kept (``NAS_CACHE_DIR``, default ``~/.cache/elastic-nas``)."""
    return Path(os.environ.get("NAS_CACHE_DIR", Path.home() / ".cache" / "elastic-nas"))


__all__ = ["REPO_ROOT", "cache_dir", "data_dir", "work_dir"]
