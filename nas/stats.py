"""Standard errors: the one implementation every score, aggregate and decision uses.

* :func:`sample_stddev` — the sample standard deviation (``n - 1`` in the denominator);
* :func:`mean_stderr` — the standard error of a mean of per-example scores;
* :func:`weighted_mean` — a weighted mean of independent estimates and its standard
  error, ``sqrt(sum w_i^2 se_i^2) / sum w_i``; it works on floats and element-wise on
  numpy arrays or pandas Series alike (one value per trial);
* :func:`paired_difference` — the mean difference of two candidates scored on the same
  examples and its standard error, from the per-example differences (paired: the
  examples' shared difficulty cancels).

Plain numpy, no torch, no other ``nas`` code.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _sample_variance(values: Sequence[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / (n - 1)


def sample_stddev(values: Sequence[float]) -> float:
    """Sample standard deviation of ``values``; NaN for fewer than two values."""
    return math.sqrt(_sample_variance(values)) if len(values) >= 2 else math.nan


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values``, ``sqrt(s^2 / n)``; NaN below two values."""
    return math.sqrt(_sample_variance(values) / len(values)) if len(values) >= 2 else math.nan


def weighted_mean(values: Sequence[Any], stderrs: Sequence[Any], weights: Sequence[float]) -> tuple[Any, Any]:
    """``(sum w_i v_i / sum w_i, sqrt(sum w_i^2 se_i^2) / sum w_i)`` of independent estimates.

    Each ``values[i]`` / ``stderrs[i]`` is a float or an array of one value per row;
    the result has the same shape. A missing (NaN) stderr counts as 0.
    """
    if not values or len(values) != len(stderrs) or len(values) != len(weights):
        raise ValueError(f"weighted_mean needs as many values, stderrs and weights ({len(values)}, {len(stderrs)}, {len(weights)})")
    total = float(sum(weights))
    mean = sum(v * w for v, w in zip(values, weights)) / total
    variance = sum((np.nan_to_num(np.asarray(s, dtype=float)) * w) ** 2 for s, w in zip(stderrs, weights))
    stderr = np.sqrt(variance) / total
    return mean, (float(stderr) if np.ndim(stderr) == 0 else stderr)


def paired_difference(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[float, float] | None:
    """``(mean, stderr)`` of ``a[i] - b[i]`` over the examples ``i`` both have (in ``a``'s
    order); None when they share fewer than two."""
    diffs = [value - b[key] for key, value in a.items() if key in b]
    if len(diffs) < 2:
        return None
    return sum(diffs) / len(diffs), mean_stderr(diffs)


def paired_weighted_difference(
    a: Mapping[Any, Mapping[Any, float]], b: Mapping[Any, Mapping[Any, float]], weights: Mapping[Any, float]
) -> tuple[float, float] | None:
    """A weighted mean over parts (e.g. tasks) of paired differences ``a[part] - b[part]``,
    parts taken as independent: ``(mean, stderr)``, or None when a part has fewer than two
    shared examples."""
    means, errors = [], []
    for part in weights:
        diff = paired_difference(a.get(part, {}), b.get(part, {}))
        if diff is None:
            return None
        means.append(diff[0])
        errors.append(diff[1])
    if not means:
        return None
    mean, stderr = weighted_mean(means, errors, list(weights.values()))
    return float(mean), float(stderr)


def fit_line(raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(scale, offset) of ``measured ~ scale * raw + offset`` (least squares); offset only
    for one point or when the points do not spread."""
    if len(raw) == 1 or max(raw) - min(raw) < 1e-6 * max(1.0, max(raw)):
        return 1.0, statistics.median(m - r for m, r in zip(measured, raw))
    mr, mm = statistics.fmean(raw), statistics.fmean(measured)
    sxx = sum((r - mr) ** 2 for r in raw)
    scale = sum((r - mr) * (m - mm) for r, m in zip(raw, measured)) / sxx
    return scale, mm - scale * mr


__all__ = ["fit_line", "mean_stderr", "paired_difference", "paired_weighted_difference", "sample_stddev", "weighted_mean"]
