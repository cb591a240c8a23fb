"""Elastic-supernet NAS: supernets, search spaces, search, pick and export.

``nas.load_exported(DIR)`` loads a model written by ``nas export`` (imported lazily, so
that ``import nas`` stays cheap).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_exported"]


def __getattr__(name: str) -> Any:
    if name == "load_exported":
        from nas.export.loading import load_exported  # deferred: torch and safetensors, only when asked for

        return load_exported
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
