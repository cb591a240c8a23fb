"""Pareto maths as small pure numpy functions: dominance, non-dominated sorting, hypervolume.

Every function takes ``values`` of shape ``(n_points, n_objectives)`` and optional
``directions`` (one ``"minimize"``/``"maximize"`` per objective; ``"min"``/``"max"`` and
Optuna's ``StudyDirection`` work too; default: minimise everything). Internally maximised
objectives are negated, so "a dominates b" always means: a is no worse in every objective
and strictly better in at least one.

* :func:`dominates` — whether one point dominates another.
* :func:`non_dominated_mask` — which points no other point dominates (the Pareto front).
  Identical points do not dominate each other, so duplicates on the front are all kept.
  Rows containing NaN are never on the front and never dominate anything.
* :func:`non_dominated_ranks` — non-dominated sorting: 0 for the front, 1 for the front
  of what remains, and so on; -1 for rows containing NaN.
* :func:`hypervolume` — the volume dominated by the points and bounded by ``reference``
  (in the objectives' own units and directions: for a maximised objective the reference
  is a low value). Exact for any number of objectives: a sweep in O(n log n) for 2, and
  "hypervolume by slicing objectives" (slice along the last objective, recurse on the
  rest) above that, which costs O(n^(m-1) log n) — instant for 3-4 objectives and fronts
  of hundreds of points, impractical for many objectives with large fronts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.metrics import Direction

_DIRECTION_NAMES = {"minimize": 1.0, "min": 1.0, "maximize": -1.0, "max": -1.0}


def direction_signs(directions: Sequence[Any] | None, n_objectives: int) -> np.ndarray:
    """+1 for each minimised objective, -1 for each maximised one, shape ``(n_objectives,)``."""
    if directions is None:
        return np.ones(n_objectives)
    names = [getattr(d, "name", d) for d in directions]  # StudyDirection.MAXIMIZE -> "MAXIMIZE"
    if len(names) != n_objectives:
        raise ValueError(f"got {len(names)} directions for {n_objectives} objectives")
    signs = []
    for name in names:
        key = str(name).strip().lower()
        if key not in _DIRECTION_NAMES:
            raise ValueError(f"unknown direction {name!r}; use 'minimize' or 'maximize'")
        signs.append(_DIRECTION_NAMES[key])
    return np.asarray(signs)


def as_minimization(values: Any, directions: Sequence[Any] | None = None) -> np.ndarray:
    """``values`` as a float array ``(n, m)`` with maximised objectives negated."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"values must have shape (n_points, n_objectives), got {array.shape}")
    return array * direction_signs(directions, array.shape[1])


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Any] | None = None) -> bool:
    """``a`` dominates ``b``: no worse in every objective and strictly better in one."""
    pa, pb = as_minimization([a], directions)[0], as_minimization([b], directions)[0]
    return bool(np.all(pa <= pb) and np.any(pa < pb))


def non_dominated_mask(values: Any, directions: Sequence[Any] | None = None) -> np.ndarray:
    """Boolean mask ``(n,)``: True where no other point dominates the point (the Pareto front)."""
    return _non_dominated(as_minimization(values, directions))


def non_dominated_ranks(values: Any, directions: Sequence[Any] | None = None) -> np.ndarray:
    """Front number ``(n,)`` of every point: 0 = Pareto front, 1 = next front, ...; -1 for NaN rows.

    Peels one front at a time: O(F n |front| m) for F fronts, n points, m objectives.
    """
    points = as_minimization(values, directions)
    ranks = np.full(len(points), -1, dtype=np.int64)
    remaining = np.flatnonzero(~np.isnan(points).any(axis=1))
    rank = 0
    while remaining.size:
        front = _non_dominated(points[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def hypervolume(points: Any, reference: Any, directions: Sequence[Any] | None = None) -> float:
    """Volume dominated by ``points`` ``(n, m)`` and bounded by the ``reference`` point ``(m,)``.

    Points that are not strictly better than the reference in every objective add
    nothing. Raises ``ValueError`` for NaN, mismatched shapes or unknown directions.
    """
    pts = as_minimization(points, directions)
    signs = direction_signs(directions, pts.shape[1])
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if ref.shape != (pts.shape[1],):
        raise ValueError(f"reference has {ref.size} values for {pts.shape[1]} objectives")
    if np.isnan(pts).any() or np.isnan(ref).any():
        raise ValueError("hypervolume of points or a reference containing NaN is undefined; drop those rows")
    ref = ref * signs
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = np.unique(pts[_non_dominated(pts)], axis=0)
    return float(_hv(pts, ref))


# ---------------------------------------------------------------------------- internals
def _non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of non-dominated rows of a minimisation problem; NaN rows are False.

    A point can only be dominated by a point that precedes it in lexicographic order, and
    if anything dominates it, so does a member of the front (dominance is transitive). So
    one pass in lexicographic order, testing each point against the front found so far,
    is enough: O(n log n + n |front| m).
    """
    mask = np.zeros(len(points), dtype=bool)
    valid = np.flatnonzero(~np.isnan(points).any(axis=1))
    if valid.size == 0:
        return mask
    order = valid[np.lexsort(points[valid].T[::-1])]
    if points.shape[1] == 2:
        mask[order] = _non_dominated_2d(points[order])
        return mask
    front = np.empty_like(points[: len(order)])
    size = 0
    for i in order:
        p = points[i]
        kept = front[:size]
        if size and np.any(np.all(kept <= p, axis=1) & np.any(kept < p, axis=1)):
            continue
        front[size] = p
        size += 1
        mask[i] = True
    return mask


def _non_dominated_2d(points: np.ndarray) -> np.ndarray:
    """Non-dominated mask of 2-D points already in lexicographic order, in O(n).

    Every earlier point has x <= this x; one that is not an exact duplicate dominates
    this point iff its y <= this y. Duplicates sit next to each other, so compare with
    the smallest y before the point's run of duplicates.
    """
    new_run = np.ones(len(points), dtype=bool)
    new_run[1:] = np.any(points[1:] != points[:-1], axis=1)
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(points)), 0))
    min_y = np.concatenate([[np.inf], np.minimum.accumulate(points[:, 1])])
    return points[:, 1] < min_y[run_start]


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimisation points, all strictly inside ``ref``."""
    m = points.shape[1]
    if m == 1:
        return float(ref[0] - points[:, 0].min())
    if m == 2:
        # Sweep by the first objective; a point adds the strip it improves in the second.
        order = np.lexsort((points[:, 1], points[:, 0]))
        volume, best = 0.0, ref[1]
        for x, y in points[order]:
            if y < best:
                volume += (ref[0] - x) * (best - y)
                best = y
        return volume
    # Slice along the last objective: between consecutive values of it, the dominated
    # region is the (m-1)-dimensional hypervolume of the points already passed.
    order = np.argsort(points[:, -1], kind="stable")
    pts = points[order]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            section = pts[: i + 1, :-1]
            if m > 3:
                section = section[_non_dominated(section)]
            volume += depth * _hv(section, ref[:-1])
    return volume


__all__ = [
    "Direction",
    "as_minimization",
    "direction_signs",
    "dominates",
    "hypervolume",
    "non_dominated_mask",
    "non_dominated_ranks",
]
