"""Where a study stands (``nas status``): trial counts from Optuna, the front from our rows.

Trial states and the search's bookkeeping (promotion, cache hits, model calls) come from
Optuna's trials (:class:`~nas.search.trials.TrialAttrs`); the front, its hypervolume and
reference point come from :func:`nas.search.results.load_results`, the same numbers the
report, ``nas results`` and the web pages show.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from nas.errors import NasError
from nas.front import confirmed_column, hypervolume_reference, resolve_column
from nas.metrics import ACCURACY
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.search.promotion import Promotion
from nas.search.results import load_results
from nas.search.study import effective_n_trials, stored_spec
from nas.search.trials import UNSTARTED_ATTR, TrialAttrs
from storage import get_supernet, open_database


@dataclass(frozen=True)
class StudyStatus:
    """Where a study stands (``nas status``)."""

    name: str
    storage: str
    supernet_hash: str
    sampler: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    n_trials: int | None
    complete: int
    running: int
    waiting: int
    failed: int
    pruned: int
    infeasible: int
    top_fidelity: int
    low_fidelity_only: int
    model_calls: int
    cache_hit_trials: int
    front: tuple[dict[str, Any], ...]
    hypervolume: float
    reference: tuple[float, ...]
    confirmation: str = ""  # how the study's front is (or can be) confirmed on held-out documents
    unstarted: int = 0  # batch trials a stopped run never scored (FAIL, queued again; not in ``failed``)
    confirmed: int = 0  # trials scored on the confirmation documents

    @property
    def full_evaluations_saved(self) -> int:
        """Top-rung evaluations multi-fidelity promotion avoided."""
        return self.low_fidelity_only


def study_status(name: str, storage_url: str | None = None) -> StudyStatus:
    """Trials done/total, front and hypervolume of a study, from the database alone."""
    db = open_database(storage_url)
    try:
        spec = stored_spec(name, db.url)
        results = load_results(db, name)
        supernet = get_supernet(db, results.supernet_hash)
        if supernet is None:
            raise NasError(f"study {name!r}: its supernet {results.supernet_hash} is missing from the database")
        config = SupernetConfig.from_dict(supernet.config)
        rank = (supernet.space or {}).get("layer_rank") or list(range(config.n_layer))
        space = SearchSpace.resolve(spec.space, config, rank, SearchSpace.from_dict(supernet.space, config, rank))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(db.url))
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        unstarted = sum(1 for t in trials if t.state.name == "FAIL" and t.user_attrs.get(UNSTARTED_ATTR))
        complete = [TrialAttrs.of(t) for t in trials if t.state.name == "COMPLETE"]
        names = [o.metric for o in spec.objectives]
        columns = [o.column for o in results.objectives]
        front = results.front.sort_values([columns[0], "trial"]) if columns else results.front
        rows = tuple(
            {"trial": int(r["trial"]), "subnet": str(r["summary"]),
             **{n: _value(r, resolve_column(n, results.frame) or n) for n in names}}
            for _, r in front.iterrows()
        )
        return StudyStatus(
            name=name,
            storage=db.safe_url,
            supernet_hash=results.supernet_hash,
            sampler=spec.sampler.name,
            objectives=tuple(names),
            directions=tuple(o.direction or "maximize" for o in spec.objectives),
            n_trials=effective_n_trials(spec, space),
            complete=counts.get("COMPLETE", 0),
            running=counts.get("RUNNING", 0),
            waiting=counts.get("WAITING", 0),
            failed=counts.get("FAIL", 0) - unstarted,
            unstarted=unstarted,
            pruned=counts.get("PRUNED", 0),
            infeasible=sum(1 for a in complete if not a.feasible),
            top_fidelity=sum(1 for a in complete if a.top),
            low_fidelity_only=sum(1 for a in complete if a.promotion == Promotion.REJECTED.value),
            model_calls=sum(TrialAttrs.of(t).model_calls for t in trials),
            cache_hit_trials=sum(1 for a in complete if a.answered_from_cache),
            front=rows,
            hypervolume=results.hypervolume,
            reference=hypervolume_reference(results.frame, results.objectives),
            confirmation=_confirmation_line(spec, results.confirmed_fidelity, "confirmation" in results.spec),
            confirmed=_confirmed_subnets(results.frame),
        )
    finally:
        db.close()


def _confirmation_line(spec: Any, confirmed: str | None, recorded: bool) -> str:
    if spec.confirmation is None:
        if not recorded:
            return ("none: this study predates confirmation sets; `nas confirm` adds one from the documents its search "
                    "never reached")
        return "off (confirmation: null)"
    held = f"{spec.holdout} documents per task held out of the search"
    return f"{held}; confirmed on {confirmed}" if confirmed else f"{held}; not confirmed yet (`nas confirm`)"


def _confirmed_subnets(frame: Any) -> int:
    column = confirmed_column(ACCURACY)
    return int(frame.loc[frame[column].notna(), "config_hash"].nunique()) if column in frame.columns else 0


def _value(row: Any, column: str) -> float:
    value = row.get(column)
    return float(value) if value is not None else math.nan


__all__ = ["StudyStatus", "study_status"]
