"""Pareto maths used by the reports (bridge to :mod:`nas.pareto`).

Uses :mod:`nas.pareto` when it provides ``non_dominated_mask`` and ``hypervolume``;
until then (or if it is missing) a small local implementation with the same meaning:
minimisation on every column.
"""

from __future__ import annotations

import numpy as np


def _local_non_dominated_mask(values: np.ndarray) -> np.ndarray:
    """True for rows of ``values`` (n, k) that no other row dominates (minimisation).
    Duplicated points are all kept."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        le = np.all(values <= values[i], axis=1)
        lt = np.any(values < values[i], axis=1)
        if np.any(le & lt):
            mask[i] = False
    return mask


def _local_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` (n, k) and bounded by ``reference`` (minimisation)."""
    pts = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if pts.size == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    k = pts.shape[1]
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        pts = pts[np.argsort(pts[:, 0])]
        volume, best_y = 0.0, ref[1]
        for x, y in pts:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    # slice along the last objective (fine for the few front points of a study)
    pts = pts[np.argsort(pts[:, -1])]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            volume += depth * _local_hypervolume(pts[: i + 1, :-1], ref[:-1])
    return float(volume)


try:  # prefer the shared implementation
    from nas.pareto import hypervolume as _hv
    from nas.pareto import non_dominated_mask as _ndm
except ImportError:  # pragma: no cover - depends on the tree state
    _hv, _ndm = _local_hypervolume, _local_non_dominated_mask


def non_dominated_mask(values: np.ndarray) -> np.ndarray:
    return np.asarray(_ndm(np.asarray(values, dtype=float)), dtype=bool)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    return float(_hv(np.asarray(points, dtype=float), np.asarray(reference, dtype=float)))


__all__ = ["hypervolume", "non_dominated_mask"]
