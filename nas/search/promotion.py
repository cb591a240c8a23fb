"""Multi-fidelity promotion: should a candidate scored on a low rung be scored on the next?

Optuna cannot prune multi-objective trials, so promotion is ours. A candidate's scored
objectives are :class:`Estimate` s (value and standard error, from per-example scores);
its *optimistic bound* moves each uncertain objective ``z`` standard errors in its
favour, and it is promoted when no top-fidelity point of the current front dominates
that bound (:func:`promotion_decision`). :class:`Promotion` names what happened to a
trial; its values are what the trial stores (user attr ``promotion``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from evaluators.types import TaskScore
from nas.pareto import as_minimization, dominates
from nas.stats import mean_stderr, weighted_mean


class Promotion(str, Enum):
    """What the fidelity ladder did with a trial (stored as the value)."""

    NONE = ""  # costs only: nothing to score
    INFEASIBLE = "infeasible"  # violates a constraint: never scored
    CACHED = "cached"  # every top-fidelity score came from the evaluation cache
    SINGLE = "single"  # a one-rung ladder
    BOOTSTRAP = "bootstrap"  # promoted because the top-fidelity front was still too small to judge
    PROMOTED = "promoted"  # its optimistic bound escaped the front at every rung
    REJECTED = "rejected"  # stopped below the top rung: confidently dominated


@dataclass(frozen=True)
class Estimate:
    """An objective value and its standard error (0 for exact quantities such as costs)."""

    value: float
    stderr: float = 0.0


def score_estimate(score: TaskScore) -> Estimate:
    """Mean and stderr of one task metric, from its per-example scores when it has them."""
    if len(score.example_scores) >= 2:
        return Estimate(score.value, mean_stderr(score.example_scores))
    stderr = float(score.stderr) if score.stderr is not None else 0.0
    return Estimate(score.value, stderr if math.isfinite(stderr) else 0.0)


def aggregate_estimate(parts: Sequence[Estimate], weights: Sequence[float]) -> Estimate:
    """Weighted mean of independent estimates, with its stderr."""
    value, stderr = weighted_mean([p.value for p in parts], [p.stderr for p in parts], list(weights))
    return Estimate(float(value), float(stderr))


def promotion_decision(
    candidate: Sequence[Estimate],
    front: Sequence[Sequence[float]],
    directions: Sequence[str],
    *,
    z: float,
) -> tuple[bool, float]:
    """Should a low-fidelity result be scored at the next rung?

    The candidate's optimistic bound moves every uncertain objective ``z`` standard errors
    in its favour; it is promoted when no top-fidelity point in ``front`` (raw values)
    dominates that bound. Returns ``(promote, margin)``: ``margin`` is 0 when promoted,
    else how much the bound would have to improve (in the uncertain objectives, the
    objectives' own units) to escape every dominating point (``inf`` when only exact
    objectives separate them).
    """
    optimistic = [e.value + z * e.stderr if d == "maximize" else e.value - z * e.stderr for e, d in zip(candidate, directions)]
    cand = as_minimization([optimistic], directions)[0]
    uncertain = [j for j, e in enumerate(candidate) if e.stderr > 0]
    margin = 0.0
    dominated = False
    for point in as_minimization(front, directions) if len(front) else []:
        if not dominates(point, cand):
            continue
        dominated = True
        margin = max(margin, min((float(cand[j] - point[j]) for j in uncertain), default=math.inf))
    return (not dominated), (margin if dominated else 0.0)


__all__ = ["Estimate", "Promotion", "aggregate_estimate", "promotion_decision", "score_estimate"]
