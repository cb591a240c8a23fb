"""Multi-fidelity promotion and the estimates behind it, on synthetic per-example scores."""

from __future__ import annotations

import math

import pytest

from evaluators.types import TaskScore
from nas.pareto import dominates
from nas.search.costs import constraint_violation
from nas.search.promotion import Estimate, aggregate_estimate, promotion_decision, score_estimate

MIN_MAX = ("minimize", "maximize")  # (params, accuracy)


def test_score_estimate_uses_per_example_scores() -> None:
    scores = (1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0)  # mean 0.75, sample sd sqrt(0.2142857)
    est = score_estimate(TaskScore("piqa", "acc", 0.75, 99.0, 8, tuple(range(8)), scores))
    assert est.value == 0.75
    assert est.stderr == pytest.approx(math.sqrt((6 * 0.0625 + 2 * 0.5625) / 7 / 8))
    # without per-example scores the reported stderr is used
    assert score_estimate(TaskScore("piqa", "acc", 0.5, 0.04, 100)).stderr == 0.04


def test_aggregate_estimate_weights_and_independent_errors() -> None:
    est = aggregate_estimate([Estimate(0.6, 0.03), Estimate(0.3, 0.04)], [1.0, 1.0])
    assert est.value == pytest.approx(0.45)
    assert est.stderr == pytest.approx(math.sqrt(0.25 * 0.03**2 + 0.25 * 0.04**2))
    weighted = aggregate_estimate([Estimate(0.6, 0.0), Estimate(0.3, 0.0)], [3.0, 1.0])
    assert weighted.value == pytest.approx(0.525) and weighted.stderr == 0.0


def test_dominates_is_strict() -> None:
    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2]) and not dominates([0, 3], [1, 2])


def test_empty_front_promotes() -> None:
    assert promotion_decision([Estimate(10.0), Estimate(0.2, 0.05)], [], MIN_MAX, z=2.0) == (True, 0.0)


def test_clearly_dominated_candidate_is_not_promoted_and_margin_is_the_gap() -> None:
    front = [[10.0, 0.70], [20.0, 0.80]]
    # params 12 (worse than 10), accuracy 0.50 +/- 0.02: optimistic 0.54 < 0.70 -> dominated by (10, 0.70)
    promote, margin = promotion_decision([Estimate(12.0), Estimate(0.50, 0.02)], front, MIN_MAX, z=2.0)
    assert not promote
    assert margin == pytest.approx(0.70 - 0.54)  # accuracy must rise by 0.16 to escape (10, 0.70)


def test_uncertainty_can_save_a_candidate() -> None:
    front = [[10.0, 0.70]]
    cand = [Estimate(12.0), Estimate(0.62, 0.05)]
    assert promotion_decision(cand, front, MIN_MAX, z=2.0) == (True, 0.0)  # 0.62 + 0.10 > 0.70
    promote, margin = promotion_decision(cand, front, MIN_MAX, z=1.0)  # 0.67 < 0.70
    assert not promote and margin == pytest.approx(0.03)


def test_margin_escapes_every_dominating_point() -> None:
    front = [[10.0, 0.70], [11.0, 0.90]]
    promote, margin = promotion_decision([Estimate(12.0), Estimate(0.50, 0.01)], front, MIN_MAX, z=0.0)
    assert not promote and margin == pytest.approx(0.40)  # must beat 0.90, not just 0.70


def test_cheaper_candidate_is_never_dominated_by_costlier_points() -> None:
    front = [[10.0, 0.70], [20.0, 0.80]]
    assert promotion_decision([Estimate(5.0), Estimate(0.10, 0.01)], front, MIN_MAX, z=0.0)[0]


def test_exact_objectives_only_give_an_infinite_margin() -> None:
    promote, margin = promotion_decision([Estimate(12.0), Estimate(0.5)], [[10.0, 0.7]], MIN_MAX, z=2.0)
    assert not promote and margin == math.inf


def test_minimised_metric_uses_the_lower_bound() -> None:
    # (loss, params), both minimised: loss 3.0 +/- 0.1 vs front loss 2.85 at fewer params.
    front = [[2.85, 100.0]]
    assert promotion_decision([Estimate(3.0, 0.1), Estimate(120.0)], front, ("minimize", "minimize"), z=2.0)[0]
    promote, margin = promotion_decision([Estimate(3.0, 0.05), Estimate(120.0)], front, ("minimize", "minimize"), z=2.0)
    assert not promote and margin == pytest.approx(0.05)


def test_constraint_violation_is_relative_and_signed() -> None:
    assert constraint_violation(120.0, lower=None, upper=100.0) == pytest.approx(0.2)
    assert constraint_violation(80.0, lower=None, upper=100.0) == pytest.approx(-0.2)
    assert constraint_violation(5.0, lower=10.0, upper=None) == pytest.approx(0.5)
    assert constraint_violation(50.0, lower=10.0, upper=100.0) < 0
    assert constraint_violation(1.0, lower=None, upper=0.0) == 1.0
