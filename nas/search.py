"""The search driver: multi-objective Optuna studies over the sub-networks of a supernet.

One trial = one sub-network::

    suggest_subnet(space, trial)                 # stable parameter names (layer_3.d_ff, ...)
      -> analytic (and predicted/measured) costs # before any benchmark
      -> constraints: infeasible?  -> told to Optuna with trial.set_constraint, never scored
      -> fidelity ladder: score at the low rung (or answer from the storage cache),
         promote to the next rung only if the optimistic bound may be non-dominated
      -> values reported to Optuna, rows recorded in our tables

Design points:

* **Optuna lives in our database.** The study is an Optuna ``RDBStorage`` study in the same
  database as our ``nas_*`` tables, with ``set_metric_names``, so ``optuna-dashboard URL``
  shows it. Our :class:`~storage.records.TrialRecord` links trial numbers to sub-networks.
* **Constraints** use Optuna 5's ``Trial.set_constraint`` (``constraints_func`` on samplers is
  deprecated in 5.0): one key per spec constraint (relative violation, > 0 = infeasible),
  plus ``top_fidelity`` when the ladder has several rungs. Infeasible trials report their
  exact costs and, for scored objectives, the worst value seen so far.
* **Multi-fidelity.** Optuna cannot prune multi-objective trials, so promotion is ours. A
  trial reports the values of the highest rung it reached (user attr ``fidelity``). A trial
  that stopped below the top rung is marked infeasible through the ``top_fidelity``
  constraint (its value: how much better its optimistic bound would have to be to escape
  domination), so Optuna's own Pareto front (``study.best_trials``, the dashboard) and ours
  are built from top-fidelity results only, and samplers treat it as dominated.
* **Cache.** Every evaluation goes through storage's evaluation cache (supernet content hash,
  config hash, task, fidelity, task hash, harness version): a sub-network already scored by
  this or any other study on the same supernet costs zero model calls.
* **Budget and workers.** ``n_trials`` counts COMPLETE trials over every run and worker. A
  worker only starts a trial while COMPLETE + RUNNING + WAITING trials are fewer than the
  budget, and a trial that finds ``n_trials`` live trials numbered before it is pruned
  before it samples anything (the race between workers), so the study ends with exactly
  ``n_trials`` complete trials. Heartbeats plus ``RetryHeartbeatStaleTrialCallback`` re-queue
  the trial of a killed worker; results it had stored are cache hits for the retry.
* **Reproducibility.** Samplers are seeded with ``seed`` (+ the number of trials already in
  the study when resuming), parameters are asked in a fixed order and every scorer is
  deterministic, so one worker with the same spec and seed runs the same trials.

Scoring is behind :class:`TaskScorer` (``evaluate(subnet, fidelity) -> Metrics`` plus the
task hashes and harness version the cache needs), so tests and benchmarks can plug in a
cheap but real scorer (:class:`nas.heldout.HeldOutLoss`) and count model calls.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from evaluators.types import CostValue, Fidelity, Metrics, TaskScore
from nas.errors import NasError
from nas.pareto import hypervolume, non_dominated_mask
from nas.space import SearchSpace, SubnetConfig
from nas.spec import COST_METRICS, StudySpec, spec_from_json

if TYPE_CHECKING:
    import optuna

    from nas.checkpoint import LoadedSupernet
    from nas.config import SupernetConfig
    from storage import Database

log = logging.getLogger(__name__)

TOP_FIDELITY_CONSTRAINT = "top_fidelity"
PLAN_ATTR = "plan_index"
RETRY_ATTR = "retry_of"
_LIVE_STATES = ("COMPLETE", "RUNNING", "WAITING")


# =============================================================== estimates and promotion
@dataclass(frozen=True)
class Estimate:
    """An objective value and its standard error (0 for exact quantities such as costs)."""

    value: float
    stderr: float = 0.0


def score_estimate(score: TaskScore) -> Estimate:
    """Mean and stderr of one task metric, from its per-example scores when it has them."""
    xs = score.example_scores
    if len(xs) >= 2:
        n = len(xs)
        mean = sum(xs) / n
        var = sum((x - mean) ** 2 for x in xs) / (n - 1)
        return Estimate(score.value, math.sqrt(var / n))
    stderr = float(score.stderr) if score.stderr is not None else 0.0
    return Estimate(score.value, stderr if math.isfinite(stderr) else 0.0)


def aggregate_estimate(parts: Sequence[Estimate], weights: Sequence[float]) -> Estimate:
    """Weighted mean of independent estimates, with its stderr."""
    total = float(sum(weights))
    value = sum(w * p.value for p, w in zip(parts, weights)) / total
    stderr = math.sqrt(sum((w / total) ** 2 * p.stderr**2 for p, w in zip(parts, weights)))
    return Estimate(value, stderr)


def to_minimization(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Flip maximised objectives so that every objective is minimised."""
    return [-v if d == "maximize" else v for v, d in zip(values, directions)]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (minimisation): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


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
    cand = to_minimization(optimistic, directions)
    uncertain = [j for j, e in enumerate(candidate) if e.stderr > 0]
    margin = 0.0
    dominated = False
    for point in front:
        p = to_minimization(point, directions)
        if not dominates(p, cand):
            continue
        dominated = True
        gap = min((cand[j] - p[j] for j in uncertain), default=math.inf)
        margin = max(margin, gap)
    return (not dominated), (margin if dominated else 0.0)


# ===================================================================== parametrisation
def param_distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of the space's parameters (names from ``space.param_choices``).

    Evenly spaced integer choices (d_ff in quarters, heads in whole KV groups, depths,
    expert counts: nearly every dimension) become ``IntDistribution(low, high, step)`` so
    that model-based samplers (TPE, GP) and QMC see their order; anything else stays
    categorical. Every value is one of the space's choices either way.
    """
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, choices in space.param_choices().items():
        values = sorted(choices)
        steps = {b - a for a, b in zip(values, values[1:])}
        if len(steps) == 1:
            out[name] = IntDistribution(values[0], values[-1], step=steps.pop())
        else:
            out[name] = CategoricalDistribution(values)
    return out


def suggest_subnet(space: SearchSpace, trial: Any) -> SubnetConfig:
    """Ask an Optuna trial for one sub-network of ``space`` (parameters in a fixed order).

    Depth and width come first; then only the kept layers' parameters are asked (a
    conditional space: a dropped layer's sizes would be noise to the sampler).
    """
    dists = param_distributions(space)
    params = {name: int(_suggest(trial, name, dists[name])) for name in ("n_layer", "d_model") if name in dists}
    n_layer = params.get("n_layer", max(space.n_layer_choices))
    kept = set(space.kept_layers(n_layer))
    for name, dist in dists.items():
        if name in params:
            continue
        layer, _, _ = name.partition(".")
        if layer.startswith("layer_") and int(layer.removeprefix("layer_")) not in kept:
            continue
        params[name] = int(_suggest(trial, name, dist))
    return space.from_params(params)


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    from optuna.distributions import IntDistribution

    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    return trial.suggest_categorical(name, list(dist.choices))


# ============================================================================ scorers
@runtime_checkable
class TaskScorer(Protocol):
    """Scores sub-networks on some tasks; built once per study and reused.

    ``task_hashes`` and ``harness_version`` must be known before any evaluation: they are
    the evaluation cache's keys.
    """

    tasks: tuple[str, ...]
    harness_version: str
    task_hashes: Mapping[str, str]

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity) -> Metrics: ...


class LmEvalScorer:
    """Adapter from :class:`evaluators.evaluate.Evaluator` (lm-eval tasks) to :class:`TaskScorer`."""

    def __init__(self, evaluator: Any, tasks: Sequence[str]) -> None:
        self.evaluator = evaluator
        self.tasks = tuple(tasks)
        self.harness_version = str(evaluator.harness_version)
        self.task_hashes = dict(evaluator.task_hashes)

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity) -> Metrics:
        return self.evaluator.evaluate(subnet, fidelity)


def check_task_names(spec: StudySpec) -> None:
    """Refuse unknown lm-eval task names before anything is loaded (close matches suggested)."""
    bench = [t.name for t in spec.tasks if not t.is_heldout]
    if bench:
        from evaluators.tasks import TaskPack

        pack = TaskPack()
        try:
            pack.check_names(bench)
        finally:
            pack.close()


def build_scorers(spec: StudySpec, loaded: LoadedSupernet, space: SearchSpace | None = None) -> list[TaskScorer]:
    """The scorers a spec needs: :class:`~nas.heldout.HeldOutLoss` for ``heldout_loss`` and
    one :class:`evaluators.evaluate.Evaluator` (built once, reused) for the lm-eval tasks."""
    from nas.heldout import HeldOutLoss

    scorers: list[TaskScorer] = []
    tokenizer = None
    for task in spec.tasks:
        if task.is_heldout:
            if task.source != "random" and loaded.tokenizer_dir is not None and tokenizer is None:
                tokenizer = loaded.load_tokenizer()
            scorers.append(
                HeldOutLoss(
                    loaded.model, n_examples=task.n_examples, seq_len=task.seq_len, source=task.source,
                    seed=spec.seed, batch_size=spec.batch_size, tokenizer=tokenizer, task=task.name,
                )
            )
    bench = [t.name for t in spec.tasks if not t.is_heldout]
    if bench:
        from evaluators.evaluate import Evaluator

        evaluator = Evaluator.from_loaded(
            loaded, bench, dtype=spec.dtype, batch_size=spec.batch_size, space=space or loaded.space,
        )
        scorers.append(LmEvalScorer(evaluator, bench))
    return scorers


# ============================================================================== costs
class StudyCosts:
    """The costs a study uses: analytic (always), predicted latency (when named) and
    measured prefill latency (when named), recorded in storage as they are obtained."""

    def __init__(
        self,
        config: SupernetConfig,
        *,
        context_len: int,
        dtype: str,
        model: Any = None,
        space: SearchSpace | None = None,
        needs: Sequence[str] = (),
        latency_table_path: Path | None = None,
    ) -> None:
        self.config = config
        self.context_len = context_len
        self.dtype = dtype
        self.model = model
        self.needs = tuple(needs)
        self.analytic_device = f"analytic/ctx{context_len}/{dtype}"
        self.table = None
        self.measured_device: str | None = None
        if "predicted_latency_ms" in self.needs:
            self.table = self._latency_table(space, latency_table_path)
        if "latency_ms" in self.needs:
            if model is None:
                raise NasError("the latency_ms objective/constraint measures the model; load the supernet first")
            from evaluators.latency import device_fingerprint

            self.measured_device = device_fingerprint(dtype=dtype)

    def _latency_table(self, space: SearchSpace | None, path: Path | None) -> Any:
        from evaluators.errors import EvaluatorError
        from evaluators.latency import LatencyTable, device_fingerprint

        from nas.paths import work_dir

        path = path or work_dir() / "latency_tables.json"
        fingerprint = device_fingerprint(dtype=self.dtype)
        try:
            return LatencyTable.load(path, fingerprint, config=self.config)
        except EvaluatorError:
            if self.model is None:
                raise NasError(
                    f"predicted_latency_ms needs a latency table for {fingerprint} in {path}; run the search once "
                    "on this device to build it"
                ) from None
        log.warning("building a latency table for %s (once per device)", fingerprint)
        table = LatencyTable.build(self.model, space, dtype=self.dtype)
        table.save(path)
        return table

    def before_scoring(self, subnet: SubnetConfig) -> dict[str, CostValue]:
        """Analytic costs (plus predicted latency with a table): no model run."""
        from evaluators.cost import costs

        result = costs(self.config, subnet, context_len=self.context_len, dtype=self.dtype, table=self.table)
        return dict(result.values)

    def measured(self, subnet: SubnetConfig) -> dict[str, CostValue]:
        from evaluators.latency import measure_latency

        result = measure_latency(self.model, subnet, dtype=self.dtype, decode_tokens=0)
        return {"prefill_latency_ms": result.values["prefill_latency_ms"]}

    @staticmethod
    def value(name: str, values: Mapping[str, CostValue]) -> float:
        """A spec cost (see :data:`nas.spec.COST_METRICS`) from cost-model values."""
        keys, _ = COST_METRICS[name]
        missing = [k for k in keys if k not in values]
        if missing:
            raise NasError(f"cost {name!r} is not available (missing {missing}); known: {sorted(values)}")
        return float(sum(values[k].value for k in keys))


def constraint_violation(value: float, *, lower: float | None, upper: float | None) -> float:
    """Relative violation of ``lower <= value <= upper`` (> 0: violated, <= 0: satisfied)."""
    out = -math.inf
    if upper is not None:
        out = max(out, (value - upper) / abs(upper) if upper else value - upper)
    if lower is not None:
        out = max(out, (lower - value) / abs(lower) if lower else lower - value)
    return float(out)


# ============================================================================= results
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


# ============================================================================== search
class Search:
    """One worker's handle on a study: call :meth:`optimize` to run trials until the budget is met."""

    def __init__(
        self,
        *,
        spec: StudySpec,
        db: Database,
        study: optuna.Study,
        study_id: int,
        supernet_id: int,
        supernet_hash: str,
        config: SupernetConfig,
        space: SearchSpace,
        scorers: Sequence[TaskScorer],
        costs: StudyCosts,
    ) -> None:
        self.spec = spec
        self.db = db
        self.study = study
        self.study_id = study_id
        self.supernet_id = supernet_id
        self.supernet_hash = supernet_hash
        self.config = config
        self.space = space
        self.scorers = list(scorers)
        self.costs = costs
        self.directions = [o.direction or "maximize" for o in spec.objectives]
        self.metric_names = [o.metric for o in spec.objectives]
        self.n_trials = _effective_n_trials(spec, space)
        self._stop = threading.Event()
        self._summary = RunSummary(study=spec.name)
        self._task_scorer = {t: s for s in self.scorers for t in s.tasks}
        self._costs_recorded: set[int] = set()
        self._subnet_ids: dict[int, int] = {}
        self._on_trial: Callable[[TrialOutcome], None] | None = None
        missing = [t.name for t in spec.tasks if t.name not in self._task_scorer] if spec.needs_scores else []
        if missing:
            raise NasError(f"no scorer for task(s) {missing}; check the spec's tasks")

    @property
    def name(self) -> str:
        return self.spec.name

    def close(self) -> None:
        """Release the database connections (ours and Optuna's), e.g. before forking."""
        self.db.close()
        backend = getattr(self.study._storage, "_backend", self.study._storage)
        engine = getattr(backend, "engine", None)
        if engine is not None:
            engine.dispose()

    def request_stop(self) -> None:
        """Finish the running trial, then return from :meth:`optimize`."""
        self._stop.set()

    # --------------------------------------------------------------- main loop
    def optimize(
        self,
        *,
        on_trial: Callable[[TrialOutcome], None] | None = None,
        max_trials: int | None = None,
        wall_time_s: float | None = None,
        poll_s: float = 1.0,
    ) -> RunSummary:
        """Run trials until ``n_trials`` trials of the study are COMPLETE (over all workers),
        the wall time (spec budget, or ``wall_time_s``) is spent, ``max_trials`` trials
        ran in this call, or :meth:`request_stop` was called."""
        import optuna
        from optuna.storages import fail_stale_trials

        from storage import set_study_status

        summary = self._summary = RunSummary(study=self.name, n_trials=self.n_trials)
        budget_s = wall_time_s if wall_time_s is not None else self.spec.budget.wall_time_s
        deadline = time.monotonic() + budget_s if budget_s else math.inf
        start = time.monotonic()
        set_study_status(self.db, self.name, "running")
        self._on_trial = on_trial
        try:
            while True:
                if self._stop.is_set():
                    summary.stopped = "stop requested"
                    break
                if time.monotonic() >= deadline:
                    summary.stopped = "wall time"
                    break
                if max_trials is not None and summary.trials_run >= max_trials:
                    summary.stopped = "max_trials"
                    break
                counts = self.state_counts()
                summary.complete = counts["COMPLETE"]
                if self.n_trials is not None and counts["COMPLETE"] >= self.n_trials:
                    summary.stopped = "budget met"
                    break
                live = counts["COMPLETE"] + counts["RUNNING"] + counts["WAITING"]
                if self.n_trials is not None and live >= self.n_trials and counts["WAITING"] == 0:
                    # The rest of the budget is running on other workers: wait for them, and
                    # fail (and re-queue) any whose worker stopped sending heartbeats.
                    time.sleep(poll_s)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fail_stale_trials(self.study)
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                    self.study.optimize(self._objective, n_trials=1, callbacks=[self._after_trial], gc_after_trial=False)
                summary.trials_run += 1
        finally:
            summary.seconds = time.monotonic() - start
            self._sync_trial_records()
            counts = self.state_counts()
            summary.complete = counts["COMPLETE"]
            done = self.n_trials is not None and counts["COMPLETE"] >= self.n_trials
            running = counts["RUNNING"] + counts["WAITING"] > 0
            set_study_status(self.db, self.name, "finished" if done else ("running" if running else "stopped"))
        return summary

    def state_counts(self) -> dict[str, int]:
        """Trials of the study by Optuna state name (all workers)."""
        counts = dict.fromkeys(("COMPLETE", "RUNNING", "WAITING", "FAIL", "PRUNED"), 0)
        for t in self.study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    # --------------------------------------------------------------- one trial
    def _objective(self, trial: optuna.Trial) -> list[float]:
        from storage import get_or_create_subnet, record_trial

        self._budget_guard(trial)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        subnet = suggest_subnet(self.space, trial)
        subnet_id = get_or_create_subnet(
            self.db, supernet_id=self.supernet_id, config_json=subnet.to_json(), config_hash=subnet.hash,
            n_layer=subnet.n_layer, params=_params(self.config, subnet),
        )
        self._subnet_ids[trial.number] = subnet_id
        trial.set_user_attr("config_hash", subnet.hash)
        trial.set_user_attr("subnet", subnet.summary())
        record_trial(self.db, study_id=self.study_id, trial_number=trial.number, subnet_id=subnet_id,
                     fidelity=None, feasible=True, state="RUNNING")

        cost_values = self._costs(subnet, subnet_id, measured=False)
        violations = self._violations(cost_values)
        feasible = all(v <= 0 for v in violations.values())
        if feasible and "latency_ms" in self.spec.cost_metrics:
            cost_values.update(self._costs(subnet, subnet_id, measured=True))
            violations = self._violations(cost_values)
            feasible = all(v <= 0 for v in violations.values())
        trial.set_user_attr("costs", {k: v.value for k, v in cost_values.items()})
        trial.set_user_attr("feasible", feasible)

        calls = hits = 0
        stderr: list[float] = []
        promotion = ""
        fidelity_label: str | None = None
        reached_top = True
        margin = 0.0
        if not feasible:
            values = self._infeasible_values(cost_values)
            promotion = "infeasible"
            self._summary.infeasible += 1
        elif not self.spec.needs_scores:
            values = [self._cost(o.metric, cost_values) for o in self.spec.objectives]
        else:
            estimates, fidelity_label, reached_top, margin, calls, hits, promotion = self._ladder(subnet, subnet_id, cost_values)
            values = [e.value for e in estimates]
            stderr = [e.stderr for e in estimates]
            if not reached_top:
                self._summary.low_fidelity_only += 1
                self._summary.full_evaluations_saved += 1
        trial.set_user_attr("fidelity", fidelity_label)
        trial.set_user_attr("top", bool(feasible and reached_top))
        trial.set_user_attr("promotion", promotion)
        trial.set_user_attr("scoring", {"subnet_id": subnet_id, "model_calls": calls, "cache_hits": hits, "stderr": stderr})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, value in violations.items():
                trial.set_constraint(key, value)
            if len(self.spec.fidelities) > 1:
                gap = 0.0 if (reached_top or not feasible) else max(margin, 1e-6)
                trial.set_constraint(TOP_FIDELITY_CONSTRAINT, min(gap, 1e6))
        return values

    def _budget_guard(self, trial: optuna.Trial) -> None:
        """Prune a trial that another worker's trials already pushed past the budget."""
        import optuna

        if self.n_trials is None:
            return
        ahead = sum(
            1 for t in self.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state.name in _LIVE_STATES
        )
        if ahead >= self.n_trials:
            trial.set_user_attr("over_budget", True)
            self._summary.pruned_over_budget += 1
            raise optuna.TrialPruned(f"budget of {self.n_trials} trials already taken by earlier trials")

    def _after_trial(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        from storage import record_trial

        subnet_id = self._subnet_ids.pop(frozen.number, None)
        if subnet_id is not None:
            record_trial(
                self.db, study_id=self.study_id, trial_number=frozen.number, subnet_id=int(subnet_id),
                fidelity=frozen.user_attrs.get("fidelity"), feasible=bool(frozen.user_attrs.get("feasible", True)),
                state=frozen.state.name,
            )
        if frozen.state.name == "COMPLETE":
            self._summary.complete += 1
        outcome = TrialOutcome(
            number=frozen.number,
            state=frozen.state.name,
            config_hash=frozen.user_attrs.get("config_hash"),
            summary=frozen.user_attrs.get("subnet", ""),
            feasible=bool(frozen.user_attrs.get("feasible", True)),
            fidelity=frozen.user_attrs.get("fidelity"),
            values=tuple(frozen.values) if frozen.values else None,
            model_calls=int(_scoring(frozen).get("model_calls", 0)),
            cache_hits=int(_scoring(frozen).get("cache_hits", 0)),
            promotion=frozen.user_attrs.get("promotion", ""),
            complete=self._summary.complete,
            n_trials=self.n_trials,
        )
        self._summary.outcomes.append(outcome)
        if self._on_trial is not None:
            self._on_trial(outcome)

    def _sync_trial_records(self) -> None:
        """Bring our trial rows in line with Optuna's states (e.g. trials failed as stale)."""
        from storage import list_trials, record_trial

        states = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False)}
        for row in list_trials(self.db, self.name):
            state = states.get(row.trial_number)
            if state is not None and state != row.state and state != "RUNNING":
                record_trial(self.db, study_id=self.study_id, trial_number=row.trial_number, subnet_id=row.subnet_id,
                             fidelity=row.fidelity, feasible=row.feasible, state=state)

    # ------------------------------------------------------------------- costs
    def _costs(self, subnet: SubnetConfig, subnet_id: int, *, measured: bool) -> dict[str, CostValue]:
        from storage import find_costs, record_cost

        if not measured:
            values = self.costs.before_scoring(subnet)
            if subnet_id in self._costs_recorded:
                return values
            self._costs_recorded.add(subnet_id)
            for name, cv in values.items():
                device = self.costs.analytic_device if cv.method == "analytic" else (self.costs.table.fingerprint if self.costs.table else "predicted")
                record_cost(self.db, subnet_id=subnet_id, device=device, metric=name, value=cv.value, method=cv.method)
            return values
        device = self.costs.measured_device or "cpu"
        rows = find_costs(self.db, supernet_hash=self.supernet_hash, config_hash=subnet.hash, device=device,
                          metrics=["prefill_latency_ms"], method="measured")
        if rows:
            return {"prefill_latency_ms": CostValue(rows[0].value, "measured", "ms")}
        values = self.costs.measured(subnet)
        for name, cv in values.items():
            record_cost(self.db, subnet_id=subnet_id, device=device, metric=name, value=cv.value, method="measured")
        return values

    def _cost(self, name: str, values: Mapping[str, CostValue]) -> float:
        return StudyCosts.value(name, values)

    def _violations(self, values: Mapping[str, CostValue]) -> dict[str, float]:
        out: dict[str, float] = {}
        for con in self.spec.constraints:
            if con.metric == "latency_ms" and "prefill_latency_ms" not in values:
                continue
            out[con.metric] = constraint_violation(self._cost(con.metric, values), lower=con.min, upper=con.max)
        return out

    def _infeasible_values(self, cost_values: Mapping[str, CostValue]) -> list[float]:
        """Exact costs; for scored objectives the worst value any complete trial reported."""
        worst: dict[int, float] = {}
        scored = [i for i, o in enumerate(self.spec.objectives) if self.spec.objective_kind(o) != "cost"]
        if scored:
            for t in self.study.get_trials(deepcopy=False):
                if t.state.name != "COMPLETE" or not t.values or not t.user_attrs.get("feasible", True):
                    continue
                for i in scored:
                    v = t.values[i]
                    if i not in worst or (v < worst[i] if self.directions[i] == "maximize" else v > worst[i]):
                        worst[i] = v
        out = []
        for i, obj in enumerate(self.spec.objectives):
            if self.spec.objective_kind(obj) == "cost":
                out.append(self._cost(obj.metric, cost_values))
            else:
                out.append(worst.get(i, 0.0 if self.directions[i] == "maximize" else _chance_loss(self.config)))
        return out

    # ----------------------------------------------------------------- scoring
    def _ladder(
        self, subnet: SubnetConfig, subnet_id: int, cost_values: Mapping[str, CostValue]
    ) -> tuple[list[Estimate], str, bool, float, int, int, str]:
        """Climb the fidelity ladder: (estimates, fidelity reached, top?, margin, model calls, cache hits, promotion)."""
        rungs = self.spec.fidelities
        top = rungs[-1]
        calls = hits = 0
        cached_top = self._cached_scores(subnet, Fidelity(top.limit, top.seed))
        if cached_top is not None:
            return self._estimates(cached_top, cost_values), top.label, True, 0.0, 0, len(self.scorers), "cached"
        promotion = "single" if len(rungs) == 1 else ""
        for i, rung in enumerate(rungs):
            scores, c, h = self._scores_at(subnet, subnet_id, Fidelity(rung.limit, rung.seed))
            calls, hits = calls + c, hits + h
            estimates = self._estimates(scores, cost_values)
            if i == len(rungs) - 1:
                return estimates, rung.label, True, 0.0, calls, hits, promotion or "promoted"
            front = self._top_front()
            if len(front) < self.spec.promotion.min_top_trials:
                promotion = "bootstrap"
                continue
            promote, margin = promotion_decision(estimates, front, self.directions, z=self.spec.promotion.z)
            if not promote:
                return estimates, rung.label, False, margin, calls, hits, "rejected"
            promotion = "promoted"
        raise AssertionError("unreachable")

    def _scores_at(self, subnet: SubnetConfig, subnet_id: int, fidelity: Fidelity) -> tuple[dict[tuple[str, str], TaskScore], int, int]:
        """Scores of every task at one fidelity: from the cache, else by running the scorers."""
        from storage import record_evaluation

        out: dict[tuple[str, str], TaskScore] = {}
        calls = hits = 0
        for scorer in self.scorers:
            cached = self._cached_for(scorer, subnet, fidelity)
            if cached is not None:
                out.update(cached)
                hits += 1
                self._summary.cache_hits += 1
                continue
            metrics = scorer.evaluate(subnet, fidelity)
            self._summary.evaluations += 1
            self._summary.model_calls += int(metrics.n_model_calls)
            calls += max(1, int(metrics.n_model_calls))
            hashes = {**dict(scorer.task_hashes), **dict(metrics.task_hashes)}
            per_metric_wall = metrics.wall_s / max(1, len(metrics.scores))
            for s in metrics.scores:
                record_evaluation(
                    self.db, subnet_id=subnet_id, task=s.task, metric=s.metric, value=s.value, stderr=s.stderr,
                    n_examples=s.n_examples, fidelity=fidelity.label, harness_version=metrics.harness_version or scorer.harness_version,
                    task_hash=hashes.get(s.task, "unknown"), wall_s=per_metric_wall,
                    example_ids=list(s.example_ids) if s.example_scores else None,
                    example_scores=list(s.example_scores) if s.example_scores else None,
                )
                out[(s.task, s.metric)] = s
        return out, calls, hits

    def _cached_scores(self, subnet: SubnetConfig, fidelity: Fidelity) -> dict[tuple[str, str], TaskScore] | None:
        out: dict[tuple[str, str], TaskScore] = {}
        for scorer in self.scorers:
            cached = self._cached_for(scorer, subnet, fidelity)
            if cached is None:
                return None
            out.update(cached)
        self._summary.cache_hits += len(self.scorers)
        return out

    def _cached_for(self, scorer: TaskScorer, subnet: SubnetConfig, fidelity: Fidelity) -> dict[tuple[str, str], TaskScore] | None:
        """This scorer's cached scores, or None unless every metric the spec needs is there."""
        from storage import find_evaluations

        rows = find_evaluations(
            self.db, supernet_hash=self.supernet_hash, config_hash=subnet.hash, fidelity=fidelity.label,
            harness_version=scorer.harness_version, task_hashes=dict(scorer.task_hashes),
        )
        found = {(r.task, r.metric): TaskScore(r.task, r.metric, r.value, r.stderr or 0.0, r.n_examples) for r in rows}
        needed = self._needed_metrics(scorer.tasks)
        return found if needed <= set(found) else None

    def _needed_metrics(self, tasks: Sequence[str]) -> set[tuple[str, str]]:
        by_name = {t.name: t for t in self.spec.tasks}
        needed = {(t, by_name[t].main_metric) for t in tasks if t in by_name}
        for obj in self.spec.objectives:
            if self.spec.objective_kind(obj) == "metric":
                task, _, metric = obj.metric.partition("/")
                if task in tasks:
                    needed.add((task, metric))
        return needed

    def _estimates(self, scores: Mapping[tuple[str, str], TaskScore], cost_values: Mapping[str, CostValue]) -> list[Estimate]:
        out = []
        for obj in self.spec.objectives:
            kind = self.spec.objective_kind(obj)
            if kind == "cost":
                out.append(Estimate(self._cost(obj.metric, cost_values)))
            elif kind == "metric":
                task, _, metric = obj.metric.partition("/")
                out.append(score_estimate(_get_score(scores, task, metric)))
            else:
                parts = [score_estimate(_get_score(scores, t.name, t.main_metric)) for t in self.spec.tasks]
                weights = [t.weight if self.spec.aggregation == "weighted" else 1.0 for t in self.spec.tasks]
                out.append(aggregate_estimate(parts, weights))
        return out

    def _top_front(self) -> list[list[float]]:
        """Values of this study's feasible top-fidelity trials (the front is among them)."""
        points = [
            list(t.values) for t in self.study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and t.values and t.user_attrs.get("top")
        ]
        if not points:
            return []
        mins = np.array([to_minimization(p, self.directions) for p in points])
        mask = non_dominated_mask(mins)
        return [p for p, keep in zip(points, mask) if keep]


def _scoring(trial: Any) -> dict[str, Any]:
    value = trial.user_attrs.get("scoring")
    return value if isinstance(value, dict) else {}


def _get_score(scores: Mapping[tuple[str, str], TaskScore], task: str, metric: str) -> TaskScore:
    try:
        return scores[(task, metric)]
    except KeyError:
        have = sorted(f"{t}/{m}" for t, m in scores if t == task)
        raise NasError(
            f"task {task} produced no metric {metric!r} (it has {have}); set tasks[].metric in the spec to one of them"
        ) from None


def _params(config: SupernetConfig, subnet: SubnetConfig) -> int:
    from evaluators.cost import cost_breakdown

    return cost_breakdown(config, subnet).params


def _chance_loss(config: SupernetConfig) -> float:
    return math.log(config.vocab_size)


def _effective_n_trials(spec: StudySpec, space: SearchSpace) -> int | None:
    n = spec.budget.n_trials
    if spec.sampler.name == "grid":
        size = space.size()
        return size if n is None else min(n, size)
    return n


# ============================================================================= opening
def _sampler(spec: StudySpec, seed: int, n_trials: int | None) -> Any:
    import optuna

    s = spec.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if s.name in ("nsga2", "nsga3"):
            pop = s.population_size or (min(50, max(10, n_trials // 5)) if n_trials else 50)
            cls = optuna.samplers.NSGAIISampler if s.name == "nsga2" else optuna.samplers.NSGAIIISampler
            return cls(population_size=pop, seed=seed)
        if s.name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=s.n_startup_trials if s.n_startup_trials is not None else 10,
                multivariate=True, constant_liar=True,
            )
        if s.name == "gp":
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=s.n_startup_trials if s.n_startup_trials is not None else 10,
            )
        if s.name == "qmc":
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)  # random, and the fallback of the grid plan


def _plan(space: SearchSpace, seed: int, total: int) -> list[dict[str, int]]:
    """The ``grid`` sampler's plan: every distinct sub-network once, in a seeded order."""
    subnets = list(space.enumerate(limit=200_000))
    random.Random(seed).shuffle(subnets)
    return [space.to_params(s) for s in subnets[:total]]


def _enqueue_plan(study: optuna.Study, spec: StudySpec, space: SearchSpace, total: int | None) -> None:
    """Enqueue the rest of the grid plan (resumable: trials carry their plan index)."""
    if spec.sampler.name != "grid":
        return
    total = space.size() if total is None else total
    done = [t.user_attrs.get(PLAN_ATTR, -1) for t in study.get_trials(deepcopy=False)]
    plan = _plan(space, spec.seed, total)
    for i in range(max(done, default=-1) + 1, len(plan)):
        study.enqueue_trial(plan[i], user_attrs={PLAN_ATTR: i})


def _requeue_interrupted(study: optuna.Study) -> None:
    """On resume, queue again the trials an interrupted run left failed (Ctrl-C, a crash), so
    the resumed study runs the sub-networks the sampler had chosen. Trials failed as stale
    are already re-queued by the heartbeat callback; a retry that fails again is not."""
    trials = study.get_trials(deepcopy=False)
    handled = {t.user_attrs.get(RETRY_ATTR) for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
    for t in trials:
        if t.state.name != "FAIL" or t.number in handled or RETRY_ATTR in t.user_attrs or "failed_trial" in t.system_attrs:
            continue
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_ATTR: t.number})


def check_feasible_extremes(spec: StudySpec, costs: StudyCosts, space: SearchSpace) -> None:
    """Refuse constraints that no sub-network can meet, judged on the space's extremes
    (every cost grows with every dimension, so the smallest sub-network has the smallest
    costs and the largest the largest)."""
    if not spec.constraints:
        return
    small, large = space.smallest(), space.largest()
    lo_vals, hi_vals = costs.before_scoring(small), costs.before_scoring(large)
    problems = []
    for i, con in enumerate(spec.constraints):
        if con.metric == "latency_ms":
            continue
        lo, hi = StudyCosts.value(con.metric, lo_vals), StudyCosts.value(con.metric, hi_vals)
        if con.max is not None and lo > con.max:
            problems.append(
                f"constraints[{i}]: {con.metric} <= {con.max:g} but even the smallest sub-network ({small.summary()}) "
                f"has {lo:,.6g}; raise max to at least {lo:,.6g}"
            )
        if con.min is not None and hi < con.min:
            problems.append(
                f"constraints[{i}]: {con.metric} >= {con.min:g} but even the largest sub-network ({large.summary()}) "
                f"has {hi:,.6g}; lower min to at most {hi:,.6g}"
            )
    if problems:
        raise NasError("no sub-network of the search space can satisfy the constraints: " + "; ".join(problems))


def resolve_space(spec: StudySpec, loaded_space: SearchSpace, config: SupernetConfig, layer_rank: Sequence[int]) -> SearchSpace:
    if spec.space is None:
        return loaded_space
    if isinstance(spec.space, dict):
        return SearchSpace.from_dict(spec.space, config, layer_rank)
    return SearchSpace.from_yaml(spec.space, config, layer_rank)


def optuna_storage(url: str, spec: StudySpec) -> Any:
    """Optuna's RDB storage on our database URL, with heartbeats and retry of stale trials."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    ft = spec.fault_tolerance
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=ft.heartbeat_interval_s,
                grace_period=ft.grace_period_s or 3 * ft.heartbeat_interval_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=ft.max_retry),
            )
        except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors vary by backend
            raise NasError(f"Optuna cannot open storage {_safe(url)}: {str(exc).splitlines()[0]}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage.engine)
    return storage


def _sqlite_pragmas(engine: Any) -> None:
    """WAL with synchronous=NORMAL on Optuna's SQLite connections, as on ours: one fsync per
    checkpoint instead of per commit (an Optuna trial makes dozens of small commits)."""
    from sqlalchemy import event

    from storage.database import enable_sqlite_wal

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            enable_sqlite_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    engine.dispose()  # connections opened before the listener reconnect with it


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database>"


def open_search(
    spec: StudySpec,
    *,
    scorers: Sequence[TaskScorer] | None = None,
    loaded: LoadedSupernet | None = None,
    seed: int | None = None,
    worker: bool = False,
) -> Search:
    """Create the study described by ``spec``, or attach to it when it exists (resume).

    ``scorers`` replaces the scorers built from the spec's tasks (tests, benchmarks);
    ``loaded`` an already loaded supernet. ``seed`` overrides the sampler seed (default:
    ``spec.seed`` + the trials already in the study; workers mix in their process id).
    Refuses a study of the same name on another supernet or with another spec.
    """
    import optuna

    from nas.checkpoint import load_supernet
    from storage import create_study, get_study, open_database, upsert_supernet

    if scorers is None:
        check_task_names(spec)
    db = open_database(spec.storage)
    if loaded is None:
        loaded = load_supernet(spec.supernet, dtype=spec.dtype, device=spec.device)
    config = loaded.config
    space = resolve_space(spec, loaded.space, config, loaded.model.layer_rank)
    existing = get_study(db, spec.name)
    if existing is not None:
        if existing.supernet_hash != loaded.content_hash:
            raise NasError(
                f"study {spec.name!r} in {db.safe_url} was run on supernet {existing.supernet_hash}, but "
                f"{spec.supernet} has content hash {loaded.content_hash}; refusing to mix sub-networks of two "
                "supernets in one study: give this spec a new name"
            )
        stored = dict(existing.spec)
        stored_identity = {k: stored.get(k) for k in spec.identity()}
        mine = spec.identity()
        diff = sorted(k for k in mine if k != "supernet" and _canon(stored_identity.get(k)) != _canon(mine[k]))
        if diff:
            raise NasError(
                f"study {spec.name!r} already exists with different {', '.join(diff)}; resume it with the same spec "
                "(only budget, sampler, seed, storage, batch_size and device may change) or give the new spec a new name"
            )
    needs = spec.cost_metrics
    costs = StudyCosts(config, context_len=spec.context_len, dtype=spec.dtype, model=loaded.model, space=space, needs=needs)
    check_feasible_extremes(spec, costs, space)
    if scorers is None:
        scorers = build_scorers(spec, loaded, space) if spec.needs_scores else []

    supernet_id = upsert_supernet(
        db, content_hash=loaded.content_hash, name=Path(loaded.path).name, path=str(loaded.path),
        config=config.to_dict(), space=loaded.space.to_dict(), provenance=dict(loaded.provenance),
    )
    storage = optuna_storage(db.url, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = optuna.create_study(
            study_name=spec.name, storage=storage, directions=[o.direction for o in spec.objectives],
            load_if_exists=True, sampler=optuna.samplers.RandomSampler(),
        )
        if list(probe.directions) != [optuna.study.StudyDirection.MAXIMIZE if o.direction == "maximize" else optuna.study.StudyDirection.MINIMIZE for o in spec.objectives]:
            raise NasError(f"Optuna study {spec.name!r} exists with other objective directions; give the spec a new name")
        n_before = len(probe.get_trials(deepcopy=False))
        if seed is None:
            seed = spec.seed + n_before
            if worker:
                seed = (seed * 1_000_003 + os.getpid() * 7919 + int(time.time() * 1000)) % (2**31)
        n_trials = _effective_n_trials(spec, space)
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec, seed, n_trials))
        if study.metric_names is None:
            study.set_metric_names([o.metric for o in spec.objectives])
    stored_spec = {**spec.to_dict(), "supernet_hash": loaded.content_hash}
    study_id = create_study(db, name=spec.name, optuna_study_name=spec.name, spec=stored_spec, supernet_id=supernet_id)
    if not worker:
        _enqueue_plan(study, spec, space, n_trials)
        _requeue_interrupted(study)
    log.info("study %s: %d trials already, sampler %s seed %d", spec.name, n_before, spec.sampler.name, seed)
    return Search(
        spec=spec, db=db, study=study, study_id=study_id, supernet_id=supernet_id, supernet_hash=loaded.content_hash,
        config=config, space=space, scorers=scorers, costs=costs,
    )


def stored_spec(study_name: str, storage_url: str | None) -> StudySpec:
    """The spec a study was created with, from the database (for ``nas worker``)."""
    from storage import get_study, open_database

    db = open_database(storage_url)
    try:
        row = get_study(db, study_name)
        if row is None:
            from storage import list_studies

            known = [s.name for s in list_studies(db)]
            raise NasError(
                f"no study named {study_name!r} in {db.safe_url}; "
                + (f"known studies: {', '.join(known)}" if known else "start one with `nas search SPEC.yaml`")
            )
        data = {k: v for k, v in dict(row.spec).items() if k != "supernet_hash"}
        data["storage"] = db.url
        return spec_from_json(data)
    finally:
        db.close()


def _canon(value: Any) -> Any:
    import json

    return json.dumps(value, sort_keys=True, default=str)


# ============================================================================== status
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

    @property
    def full_evaluations_saved(self) -> int:
        """Top-rung evaluations multi-fidelity promotion avoided."""
        return self.low_fidelity_only


def front_and_hypervolume(
    trials: Sequence[Any], spec: StudySpec, config: SupernetConfig, space: SearchSpace
) -> tuple[list[Any], float, list[float]]:
    """The feasible top-fidelity Pareto front of ``trials`` (Optuna FrozenTrials), its
    hypervolume on normalised axes, and the reference point (raw units).

    Each objective is scaled by its reference: costs by the largest sub-network's cost
    (so they span [0, 1]); maximised metrics (accuracies) keep their scale with
    reference 0; minimised metrics are scaled by their reference (default: 1.1 x the
    worst top-fidelity value seen).
    """
    directions = [o.direction or "maximize" for o in spec.objectives]
    top = [t for t in trials if t.state.name == "COMPLETE" and t.values and t.user_attrs.get("top")]
    reference = []
    largest_costs: dict[str, CostValue] | None = None
    for j, obj in enumerate(spec.objectives):
        if obj.reference is not None:
            reference.append(float(obj.reference))
            continue
        kind = spec.objective_kind(obj)
        observed = [t.values[j] for t in top]
        if kind == "cost" and COST_METRICS[obj.metric][1] == "analytic":
            if largest_costs is None:
                from evaluators.cost import analytic_costs

                largest_costs = dict(analytic_costs(config, space.largest(), context_len=spec.context_len, dtype=spec.dtype).values)
            reference.append(StudyCosts.value(obj.metric, largest_costs))
        elif directions[j] == "maximize":
            reference.append(0.0)
        else:
            worst = max(observed) if observed else 1.0
            reference.append(worst * 1.1 if worst > 0 else worst + 1.0)
    if not top:
        return [], 0.0, reference
    mins = np.array([to_minimization(t.values, directions) for t in top])
    mask = non_dominated_mask(mins)
    front = [t for t, keep in zip(top, mask) if keep]
    scale = np.array([abs(r) if (d == "minimize" and r) else 1.0 for r, d in zip(reference, directions)])
    ref_min = np.array(to_minimization(reference, directions)) / scale
    pts = mins[mask] / scale
    return front, hypervolume(pts, ref_min), reference


def study_status(name: str, storage_url: str | None = None) -> StudyStatus:
    """Trials done/total, front size and hypervolume of a study, from the database alone."""
    import optuna

    from nas.config import SupernetConfig
    from storage import get_study, get_supernet, open_database

    db = open_database(storage_url)
    try:
        spec = stored_spec(name, db.url)
        row = get_study(db, name)
        assert row is not None
        sn = get_supernet(db, row.supernet_hash)
        config = SupernetConfig.from_dict(sn.config) if sn else None
        layer_rank = (sn.space or {}).get("layer_rank") if sn else None
        if config is None:
            raise NasError(f"study {name!r}: its supernet {row.supernet_hash} is missing from the database")
        rank = layer_rank or list(range(config.n_layer))
        space = resolve_space(spec, SearchSpace.from_dict(sn.space, config, rank), config, rank)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(db.url))
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        front, hv, reference = front_and_hypervolume(trials, spec, config, space)
        rows = tuple(
            {"trial": t.number, "subnet": t.user_attrs.get("subnet", ""), **dict(zip(spec_metric_names(spec), t.values))}
            for t in sorted(front, key=lambda t: t.values[0])
        )
        return StudyStatus(
            name=name,
            storage=db.safe_url,
            supernet_hash=row.supernet_hash,
            sampler=spec.sampler.name,
            objectives=tuple(spec_metric_names(spec)),
            directions=tuple(o.direction or "maximize" for o in spec.objectives),
            n_trials=_effective_n_trials(spec, space),
            complete=counts.get("COMPLETE", 0),
            running=counts.get("RUNNING", 0),
            waiting=counts.get("WAITING", 0),
            failed=counts.get("FAIL", 0),
            pruned=counts.get("PRUNED", 0),
            infeasible=sum(1 for t in complete if not t.user_attrs.get("feasible", True)),
            top_fidelity=sum(1 for t in complete if t.user_attrs.get("top")),
            low_fidelity_only=sum(1 for t in complete if t.user_attrs.get("promotion") == "rejected"),
            model_calls=sum(int(_scoring(t).get("model_calls", 0)) for t in trials),
            cache_hit_trials=sum(1 for t in complete if t.user_attrs.get("feasible", True) and _scoring(t).get("cache_hits", 0) > 0
                                 and _scoring(t).get("model_calls", 0) == 0),
            front=rows,
            hypervolume=hv,
            reference=tuple(reference),
        )
    finally:
        db.close()


def spec_metric_names(spec: StudySpec) -> list[str]:
    return [o.metric for o in spec.objectives]


__all__ = [
    "Estimate",
    "LmEvalScorer",
    "RunSummary",
    "Search",
    "StudyCosts",
    "StudyStatus",
    "TaskScorer",
    "TrialOutcome",
    "aggregate_estimate",
    "build_scorers",
    "check_task_names",
    "check_feasible_extremes",
    "constraint_violation",
    "dominates",
    "front_and_hypervolume",
    "hypervolume",
    "non_dominated_mask",
    "open_search",
    "param_distributions",
    "optuna_storage",
    "promotion_decision",
    "score_estimate",
    "stored_spec",
    "suggest_subnet",
    "study_status",
    "to_minimization",
]
