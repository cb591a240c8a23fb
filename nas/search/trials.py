"""What a search stores on each Optuna trial, and the one typed way to read it back.

The driver records a trial's sub-network, costs, fidelity and scoring bookkeeping as
Optuna ``user_attrs`` (so that optuna-dashboard shows them too). Everything that reads
them — the driver's bookkeeping, ``nas status`` — goes through :class:`TrialAttrs`
instead of string keys and ``dict.get`` chains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Optuna constraint of a trial that stopped below the top fidelity (> 0: it did).
TOP_FIDELITY_CONSTRAINT = "top_fidelity"
#: user_attr of a ``grid`` plan trial: its index in the plan.
PLAN_ATTR = "plan_index"
#: user_attr of a re-queued interrupted trial: the trial it retries.
RETRY_ATTR = "retry_of"
#: user_attr of a batch's trial that a stopped run never scored (FAIL, queued again).
UNSTARTED_ATTR = "unstarted"
#: user_attr of a batch's trial: True while it waits for its turn, False once it is scored.
QUEUED_ATTR = "queued"
#: Trial states that count against the budget.
LIVE_STATES = ("COMPLETE", "RUNNING", "WAITING")


@dataclass(frozen=True)
class TrialAttrs:
    """A trial's user attributes as the search wrote them (defaults for trials that did
    not get that far, e.g. pruned over budget)."""

    config_hash: str | None = None
    subnet: str = ""  # SubnetConfig.summary()
    worker: str = ""
    costs: Mapping[str, float] = field(default_factory=dict)
    feasible: bool = True
    fidelity: str | None = None
    top: bool = False  # feasible and scored at the top fidelity
    promotion: str = ""  # a nas.search.promotion.Promotion value
    subnet_id: int | None = None
    model_calls: int = 0
    cache_hits: int = 0
    stderr: tuple[float, ...] = ()
    over_budget: bool = False
    plan_index: int | None = None  # a grid plan trial's index in the plan
    retry_of: int | None = None  # the interrupted trial this one re-runs

    @classmethod
    def of(cls, trial: Any) -> TrialAttrs:
        """The attributes of an Optuna (frozen) trial."""
        attrs: Mapping[str, Any] = trial.user_attrs
        scoring = attrs.get("scoring")
        scoring = scoring if isinstance(scoring, Mapping) else {}
        return cls(
            config_hash=attrs.get("config_hash"),
            subnet=str(attrs.get("subnet", "")),
            worker=str(attrs.get("worker", "")),
            costs=dict(attrs.get("costs") or {}),
            feasible=bool(attrs.get("feasible", True)),
            fidelity=attrs.get("fidelity"),
            top=bool(attrs.get("top", False)),
            promotion=str(attrs.get("promotion", "")),
            subnet_id=_int_or_none(scoring.get("subnet_id")),
            model_calls=int(scoring.get("model_calls", 0)),
            cache_hits=int(scoring.get("cache_hits", 0)),
            stderr=tuple(float(s) for s in scoring.get("stderr", ())),
            over_budget=bool(attrs.get("over_budget", False)),
            plan_index=_int_or_none(attrs.get(PLAN_ATTR)),
            retry_of=_int_or_none(attrs.get(RETRY_ATTR)),
        )

    @property
    def answered_from_cache(self) -> bool:
        """A feasible trial whose every score came from the evaluation cache."""
        return self.feasible and self.cache_hits > 0 and self.model_calls == 0


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


__all__ = ["LIVE_STATES", "PLAN_ATTR", "QUEUED_ATTR", "RETRY_ATTR", "TOP_FIDELITY_CONSTRAINT", "TrialAttrs", "UNSTARTED_ATTR"]
