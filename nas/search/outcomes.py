"""What a search run reports: one trial's outcome, one run's summary, one candidate's climb."""

from __future__ import annotations

from dataclasses import dataclass, field

from nas.search.promotion import Estimate, Promotion


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial did (for progress displays and tests)."""

    number: int
    state: str
    config_hash: str | None = None
    summary: str = ""
    feasible: bool = True
    fidelity: str | None = None
    values: tuple[float, ...] | None = None
    model_calls: int = 0
    cache_hits: int = 0
    promotion: str = ""
    complete: int = 0
    n_trials: int | None = None


@dataclass
class RunSummary:
    """What one :meth:`Search.optimize` call did, and where the study stands."""

    study: str
    trials_run: int = 0
    complete: int = 0
    n_trials: int | None = None
    infeasible: int = 0
    evaluations: int = 0  # scorer.evaluate calls (one sub-network at one fidelity)
    model_calls: int = 0  # forward passes reported by the scorers
    cache_hits: int = 0  # evaluations answered from storage
    low_fidelity_only: int = 0  # feasible trials that stopped below the top rung
    full_evaluations_saved: int = 0  # top-rung evaluations promotion avoided
    pruned_over_budget: int = 0
    seconds: float = 0.0
    stopped: str = ""
    outcomes: list[TrialOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class LadderResult:
    """Where a candidate's climb of the fidelity ladder ended."""

    estimates: tuple[Estimate, ...]  # one per objective, at the rung reached
    fidelity: str  # label of the rung reached
    reached_top: bool
    margin: float  # how far a rejected candidate's optimistic bound is from escaping the front
    model_calls: int
    cache_hits: int
    promotion: Promotion


__all__ = ["LadderResult", "RunSummary", "TrialOutcome"]
