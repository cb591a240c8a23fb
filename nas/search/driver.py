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
* **Batches in reuse order.** A worker asks ``batch`` trials at once (``sampler.batch``; by
  default an NSGA-II generation), scores them in the order that shares the most first
  layers between neighbours (:func:`evaluators.prefix.reuse_order`, so the evaluator's
  prefix cache starts each from the deepest stored boundary), and tells each as it
  finishes, so racing sees the front grow within the batch. Every asked trial sends
  heartbeats until it is told. A batch cut short (wall time, stop) tells its unstarted
  trials FAIL (user attr ``unstarted``) and queues their parameters again, so the next run
  or another worker scores them first.
* **Reproducibility.** Samplers are seeded with ``seed`` (+ the number of trials already in
  the study when resuming), parameters are asked in a fixed order and every scorer is
  deterministic, so one worker with the same spec and seed runs the same trials.

Scoring is behind :class:`evaluators.scorer.TaskScorer` (``evaluate(subnet, fidelity) ->
Metrics`` plus the task hashes and harness version the cache needs), so tests and benchmarks
can plug in a cheap but real scorer (:class:`evaluators.heldout.HeldOutLoss`) and count model
calls. :func:`nas.search.study.open_search` builds a :class:`Search` from a spec.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from evaluators.prefix import reuse_order
from evaluators.scorer import TaskScorer
from evaluators.types import CostValue, Fidelity, TaskScore
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import LoadedSupernet
from nas.model.params import count_params
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.pareto import as_minimization, non_dominated_mask
from nas.search.batches import Heartbeats, requeue_unstarted
from nas.search.costs import StudyCosts, constraint_violation
from nas.search.optuna_storage import fail_stale, trial_lock
from nas.search.outcomes import LadderResult, RunSummary, TrialOutcome
from nas.search.params import suggest_subnet
from nas.search.promotion import Estimate, Promotion, aggregate_estimate, promotion_decision, score_estimate
from nas.search.quant import suggest_quant
from nas.search.racing import Contender, dominating_member, examples_of
from nas.search.scoring import Scores, ScoringCounts, StudyScoring
from nas.search.spec import StudySpec
from nas.search.trials import LIVE_STATES, QUEUED_ATTR, TOP_FIDELITY_CONSTRAINT, TrialAttrs
from storage import (
    Database,
    find_costs,
    get_or_create_subnet,
    list_trials,
    record_cost,
    record_trial,
    set_study_status,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSetup:
    """Everything one worker needs to run a study (built by :func:`nas.search.study.open_search`)."""

    spec: StudySpec
    db: Database
    study: optuna.Study
    study_id: int
    supernet_id: int
    supernet_hash: str
    config: SupernetConfig
    space: SearchSpace
    scorers: tuple[TaskScorer, ...]
    costs: StudyCosts
    n_trials: int | None  # the budget of COMPLETE trials (a grid is capped at the space's size)
    loaded: LoadedSupernet | None = None  # the supernet the scorers run (reused by confirmation)
    batch: int = 1  # trials asked from the sampler at once (nas.search.study.ask_batch)


# ============================================================================== search
class Search:
    """One worker's handle on a study: call :meth:`optimize` to run trials until the budget is met."""

    def __init__(self, setup: SearchSetup) -> None:
        self.setup = setup
        self.spec = setup.spec
        self.db = setup.db
        self.study = setup.study
        self.config = setup.config
        self.space = setup.space
        self.scorers = list(setup.scorers)
        self.costs = setup.costs
        self.n_trials = setup.n_trials
        self.batch = setup.batch
        self.directions = [o.direction or "maximize" for o in self.spec.objectives]
        self._stop = threading.Event()
        self._summary = RunSummary(study=self.spec.name)
        self._task_scorer = {t: s for s in self.scorers for t in s.tasks}
        self.scoring = StudyScoring(setup.db, setup.supernet_hash, setup.spec, self.scorers)
        self._costs_recorded: set[int] = set()
        self._subnet_ids: dict[int, int] = {}
        self._front_key: tuple[int, ...] = ()
        self._front: list[Contender] = []
        self._on_trial: Callable[[TrialOutcome], None] | None = None
        missing = [t.name for t in self.spec.tasks if t.name not in self._task_scorer] if self.spec.needs_scores else []
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
        summary = self._summary = RunSummary(study=self.name, n_trials=self.n_trials)
        self.scoring.counts = ScoringCounts()
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
                    fail_stale(self.study)
                    continue
                n = self.batch
                if self.n_trials is not None:  # the queued trials, and the budget's free places
                    n = min(n, max(1, counts["WAITING"] + self.n_trials - live))
                if max_trials is not None:
                    n = min(n, max_trials - summary.trials_run)
                summary.trials_run += self._run_batch(n, deadline)
        finally:
            summary.seconds = time.monotonic() - start
            counts = self.scoring.counts
            summary.evaluations, summary.model_calls, summary.cache_hits = counts.evaluations, counts.model_calls, counts.cache_hits
            self._sync_trial_records()
            counts = self.state_counts()
            summary.complete = counts["COMPLETE"]
            done = self.n_trials is not None and counts["COMPLETE"] >= self.n_trials
            running = counts["RUNNING"] > 0  # another worker's trial (queued WAITING ones wait for a run)
            set_study_status(self.db, self.name, "finished" if done else ("running" if running else "stopped"))
        return summary

    def state_counts(self) -> dict[str, int]:
        """Trials of the study by Optuna state name (all workers)."""
        counts = dict.fromkeys(("COMPLETE", "RUNNING", "WAITING", "FAIL", "PRUNED"), 0)
        for t in self.study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    # ----------------------------------------------------------------- a batch
    def _run_batch(self, n: int, deadline: float) -> int:
        """Ask ``n`` trials, score them in prefix-reuse order and tell each as it finishes.
        Returns how many were told (scored, infeasible or pruned over budget)."""
        fail_stale(self.study)  # as study.optimize does before each trial
        pending: dict[int, tuple[optuna.Trial, SubnetConfig]] = {}
        told = 0
        with Heartbeats(self.study._storage) as beats:
            try:
                for _ in range(n):
                    trial = self._ask()
                    beats.add(trial._trial_id)  # Optuna's id of the trial (no public accessor)
                    try:
                        pending[trial.number] = (trial, self._propose(trial))
                    except optuna.TrialPruned:  # over budget: so would the rest of the batch be
                        beats.discard(trial._trial_id)
                        self._tell(trial, state=TrialState.PRUNED)
                        told += 1
                        break
                    except BaseException:
                        beats.discard(trial._trial_id)
                        self._tell(trial, state=TrialState.FAIL)
                        raise
                batch = frozenset(pending)
                if len(batch) > 1:
                    for trial, _ in pending.values():
                        trial.set_user_attr(QUEUED_ATTR, True)  # until its turn (see _await_twin)
                numbers = list(pending)
                order = [numbers[i] for i in reuse_order([subnet for _, subnet in pending.values()])]
                for number in order:
                    if self._stop.is_set() or time.monotonic() >= deadline:
                        break
                    trial, subnet = pending.pop(number)
                    try:
                        values = self._score(trial, subnet, batch=batch)
                    except BaseException:
                        beats.discard(trial._trial_id)
                        self._tell(trial, state=TrialState.FAIL)
                        raise
                    beats.discard(trial._trial_id)
                    self._tell(trial, values=values)
                    told += 1
            finally:
                for trial, _ in pending.values():  # cut short: score them next (this run, a worker, a resume)
                    beats.discard(trial._trial_id)
                    self._requeue_unstarted(trial)
        return told

    def _ask(self) -> optuna.Trial:
        """A new trial, or the first queued one; never in the gap between another worker
        failing a stale trial and queueing its retry (:func:`trial_lock`)."""
        with trial_lock(self.study), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat ... used with Study.optimize": Heartbeats beats
            return self.study.ask()

    def _tell(self, trial: optuna.Trial, *, values: list[float] | None = None, state: TrialState | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = self.study.tell(trial, values, state=state)
        self._after_trial(self.study, frozen)

    def _requeue_unstarted(self, trial: optuna.Trial) -> None:
        requeue_unstarted(self.study, trial)
        subnet_id = self._subnet_ids.pop(trial.number, None)
        if subnet_id is not None:
            record_trial(self.db, study_id=self.setup.study_id, trial_number=trial.number, subnet_id=subnet_id,
                         fidelity=None, feasible=True, state="FAIL")

    # --------------------------------------------------------------- one trial
    def _propose(self, trial: optuna.Trial) -> SubnetConfig:
        """The trial's sub-network (and weight format), recorded as a RUNNING trial."""
        self._budget_guard(trial)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        subnet = suggest_quant(trial, self.spec.quant_choices, suggest_subnet(self.space, trial))  # + its weight format
        subnet_id = get_or_create_subnet(
            self.db, supernet_id=self.setup.supernet_id, config_json=subnet.to_json(), config_hash=subnet.hash,
            n_layer=subnet.n_layer, params=count_params(self.config, subnet).params,
        )
        self._subnet_ids[trial.number] = subnet_id
        trial.set_user_attr("config_hash", subnet.hash)
        trial.set_user_attr("subnet", subnet.summary())
        record_trial(self.db, study_id=self.setup.study_id, trial_number=trial.number, subnet_id=subnet_id,
                     fidelity=None, feasible=True, state="RUNNING")
        return subnet

    def _score(self, trial: optuna.Trial, subnet: SubnetConfig, *, batch: Collection[int]) -> list[float]:
        """Costs, constraints and (for a feasible candidate) the racing or ladder climb:
        the values to tell Optuna. ``batch``: the trial numbers asked with this one (marked
        queued when there are several)."""
        subnet_id = self._subnet_ids[trial.number]
        if len(batch) > 1:
            trial.set_user_attr(QUEUED_ATTR, False)  # its turn
        cost_values = self._analytic_costs(subnet, subnet_id)
        violations = self._violations(cost_values)
        feasible = all(v <= 0 for v in violations.values())
        if feasible and "latency_ms" in self.spec.cost_metrics:
            cost_values.update(self._measured_costs(subnet, subnet_id))
            violations = self._violations(cost_values)
            feasible = all(v <= 0 for v in violations.values())
        trial.set_user_attr("costs", {k: v.value for k, v in cost_values.items()})
        trial.set_user_attr("feasible", feasible)

        ladder: LadderResult | None = None
        if not feasible:
            values = self._infeasible_values(cost_values)
            self._summary.infeasible += 1
        elif not self.spec.needs_scores:
            values = [self.costs.value(o.metric, cost_values) for o in self.spec.objectives]
        else:
            self._await_twin(trial, subnet.hash, batch)
            ladder = self._ladder(subnet, subnet_id, cost_values)
            values = [e.value for e in ladder.estimates]
            if not ladder.reached_top:
                self._summary.low_fidelity_only += 1
                self._summary.full_evaluations_saved += 1
        promotion = Promotion.INFEASIBLE if not feasible else (ladder.promotion if ladder else Promotion.NONE)
        reached_top = ladder.reached_top if ladder else True
        trial.set_user_attr("fidelity", ladder.fidelity if ladder else None)
        trial.set_user_attr("top", bool(feasible and reached_top))
        trial.set_user_attr("promotion", promotion.value)
        trial.set_user_attr("scoring", {
            "subnet_id": subnet_id,
            "model_calls": ladder.model_calls if ladder else 0,
            "cache_hits": ladder.cache_hits if ladder else 0,
            "stderr": [e.stderr for e in ladder.estimates] if ladder else [],
        })
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, value in violations.items():
                trial.set_constraint(key, value)
            if len(self.spec.fidelities) > 1:
                gap = 0.0 if (reached_top or not feasible) else max(ladder.margin if ladder else 0.0, 1e-6)
                trial.set_constraint(TOP_FIDELITY_CONSTRAINT, min(gap, 1e6))
        return values

    def _await_twin(self, trial: optuna.Trial, config_hash: str, batch: Collection[int] = (), poll_s: float = 0.5) -> None:
        """Wait while an earlier RUNNING trial of another worker scores the same sub-network
        (workers asking at one moment get one proposal from a GP sampler): its scores then
        come from the cache instead of a second evaluation. A twin still queued in its
        worker's batch (``QUEUED_ATTR``) is not waited for: it may be many trials from its
        turn, and this worker would sit idle that long. A twin in this worker's own
        ``batch`` runs before or after this one here, and the later one is a cache hit. A
        twin whose worker died goes stale, ending the wait."""
        while not self._stop.is_set():
            twins = [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t.number < trial.number and t.number not in batch and not t.user_attrs.get(QUEUED_ATTR)
                     and t.user_attrs.get("config_hash") == config_hash]
            if not twins:
                return
            log.info("trial %d: waiting for trial %d, which scores the same sub-network", trial.number, twins[0])
            time.sleep(poll_s)
            fail_stale(self.study)

    def _budget_guard(self, trial: optuna.Trial) -> None:
        """Prune a trial that another worker's trials already pushed past the budget."""
        if self.n_trials is None:
            return
        ahead = sum(
            1 for t in self.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state.name in LIVE_STATES
        )
        if ahead >= self.n_trials:
            trial.set_user_attr("over_budget", True)
            self._summary.pruned_over_budget += 1
            raise optuna.TrialPruned(f"budget of {self.n_trials} trials already taken by earlier trials")

    def _after_trial(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        attrs = TrialAttrs.of(frozen)
        subnet_id = self._subnet_ids.pop(frozen.number, None)
        if subnet_id is not None:
            record_trial(self.db, study_id=self.setup.study_id, trial_number=frozen.number, subnet_id=int(subnet_id),
                         fidelity=attrs.fidelity, feasible=attrs.feasible, state=frozen.state.name)
        if frozen.state.name == "COMPLETE":
            self._summary.complete += 1
        outcome = TrialOutcome(
            number=frozen.number,
            state=frozen.state.name,
            config_hash=attrs.config_hash,
            summary=attrs.subnet,
            feasible=attrs.feasible,
            fidelity=attrs.fidelity,
            values=tuple(frozen.values) if frozen.values else None,
            model_calls=attrs.model_calls,
            cache_hits=attrs.cache_hits,
            promotion=attrs.promotion,
            complete=self._summary.complete,
            n_trials=self.n_trials,
        )
        self._summary.outcomes.append(outcome)
        if self._on_trial is not None:
            self._on_trial(outcome)

    def _sync_trial_records(self) -> None:
        """Bring our trial rows in line with Optuna's states (e.g. trials failed as stale)."""
        states = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False)}
        for row in list_trials(self.db, self.name):
            state = states.get(row.trial_number)
            if state is not None and state != row.state and state != "RUNNING":
                record_trial(self.db, study_id=self.setup.study_id, trial_number=row.trial_number, subnet_id=row.subnet_id,
                             fidelity=row.fidelity, feasible=row.feasible, state=state)

    # ------------------------------------------------------------------- costs
    def _analytic_costs(self, subnet: SubnetConfig, subnet_id: int) -> dict[str, CostValue]:
        """Analytic (and predicted) costs, recorded once per sub-network and worker."""
        values = self.costs.before_scoring(subnet)
        if subnet_id not in self._costs_recorded:
            self._costs_recorded.add(subnet_id)
            for name, cv in values.items():
                record_cost(self.db, subnet_id=subnet_id, device=self.costs.device_of(cv, name), metric=name, value=cv.value,
                            method=cv.method)
        return values

    def _measured_costs(self, subnet: SubnetConfig, subnet_id: int) -> dict[str, CostValue]:
        """The measured prefill latency: from storage when this device measured it before."""
        device = self.costs.measured_device or "cpu"
        rows = find_costs(self.db, supernet_hash=self.setup.supernet_hash, config_hash=subnet.hash, device=device,
                          metrics=["prefill_latency_ms"], method="measured")
        if rows:
            return {"prefill_latency_ms": CostValue(rows[0].value, "measured", "ms")}
        values = self.costs.measured(subnet)
        for name, cv in values.items():
            record_cost(self.db, subnet_id=subnet_id, device=device, metric=name, value=cv.value, method="measured")
        return values

    def _violations(self, values: Mapping[str, CostValue]) -> dict[str, float]:
        out: dict[str, float] = {}
        for con in self.spec.constraints:
            if con.metric == "latency_ms" and "prefill_latency_ms" not in values:
                continue
            out[con.metric] = constraint_violation(self.costs.value(con.metric, values), lower=con.min, upper=con.max)
        return out

    def _infeasible_values(self, cost_values: Mapping[str, CostValue]) -> list[float]:
        """Exact costs; for scored objectives the worst value any complete trial reported."""
        worst: dict[int, float] = {}
        scored = [i for i, o in enumerate(self.spec.objectives) if self.spec.objective_kind(o) != "cost"]
        if scored:
            for t in self.study.get_trials(deepcopy=False):
                if t.state.name != "COMPLETE" or not t.values or not TrialAttrs.of(t).feasible:
                    continue
                for i in scored:
                    v = t.values[i]
                    if i not in worst or (v < worst[i] if self.directions[i] == "maximize" else v > worst[i]):
                        worst[i] = v
        out = []
        for i, obj in enumerate(self.spec.objectives):
            if self.spec.objective_kind(obj) == "cost":
                out.append(self.costs.value(obj.metric, cost_values))
            else:
                chance_loss = math.log(self.config.vocab_size)
                out.append(worst.get(i, 0.0 if self.directions[i] == "maximize" else chance_loss))
        return out

    # ----------------------------------------------------------------- scoring
    def rungs(self) -> list[Fidelity]:
        """The fidelities a candidate climbs: racing's chunks up to the top fidelity, or the
        ladder's rungs (all within the search documents: the confirmation set is held out)."""
        top = self.spec.top
        if self.spec.promotion.mode == "ladder":
            return [self.spec.fidelity(r) for r in self.spec.fidelities]
        chunk = self.spec.promotion.chunk
        cap = top.limit if top.limit is not None else min(
            n - top.holdout for s in self.scorers for n in s.n_docs.values()
        )
        return [Fidelity(k, top.seed, holdout=top.holdout) for k in range(chunk, cap, chunk)] + [top]

    def _ladder(self, subnet: SubnetConfig, subnet_id: int, cost_values: Mapping[str, CostValue]) -> LadderResult:
        """Climb the rungs: each rung scores only the documents the last one lacked (nested
        rungs), and the candidate stops as soon as it cannot be on the front — by the paired
        test against each front member (racing) or the optimistic bound (ladder)."""
        rungs = self.rungs()
        top = rungs[-1]
        cached_top = self.scoring.cached(subnet, top)
        if cached_top is not None:
            return LadderResult(self._estimates(cached_top, cost_values), top.label, True, 0.0, 0, len(self.scorers),
                                Promotion.CACHED)
        calls = hits = 0
        promotion = Promotion.SINGLE if len(rungs) == 1 else Promotion.NONE
        prior: tuple[Fidelity, Scores] | None = None
        for i, rung in enumerate(rungs):
            scored = self.scoring.score(subnet, subnet_id, rung, prior)
            scores = scored.scores
            prior = (rung, scores)
            calls, hits = calls + scored.model_calls, hits + scored.cache_hits
            estimates = self._estimates(scores, cost_values)
            if i == len(rungs) - 1:
                final = Promotion.PROMOTED if promotion is Promotion.NONE else promotion
                return LadderResult(estimates, rung.label, True, 0.0, calls, hits, final)
            front = self._top_front()
            if len(front) < self.spec.promotion.min_top_trials:
                promotion = Promotion.BOOTSTRAP
                continue
            if self.spec.promotion.mode == "ladder":
                promote, margin = promotion_decision(estimates, [v for _, v in front], self.directions,
                                                     z=self.spec.promotion.z)
            else:
                candidate = Contender(-1, tuple(e.value for e in estimates), examples_of(list(scores.values())))
                member, margin = dominating_member(self._contenders(front), candidate, self.spec, z=self.spec.promotion.z)
                promote = member is None
            if not promote:
                return LadderResult(estimates, rung.label, False, margin, calls, hits, Promotion.REJECTED)
            promotion = Promotion.PROMOTED
        raise AssertionError("unreachable")

    def _contenders(self, front: list[tuple[TrialAttrs, list[float]]]) -> list[Contender]:
        """The front's members with their per-example scores at the top fidelity."""
        key = tuple(sorted(a.subnet_id or -1 for a, _ in front))
        if key != self._front_key:
            examples = self.scoring.examples_of([a.subnet_id for a, _ in front if a.subnet_id is not None], self.spec.top)
            self._front_key = key
            self._front = [Contender(a.subnet_id or -1, tuple(v), examples.get(a.subnet_id or -1, {})) for a, v in front]
        return self._front

    def _estimates(self, scores: Mapping[tuple[str, str], TaskScore], cost_values: Mapping[str, CostValue]) -> tuple[Estimate, ...]:
        out = []
        for obj in self.spec.objectives:
            kind = self.spec.objective_kind(obj)
            if kind == "cost":
                out.append(Estimate(self.costs.value(obj.metric, cost_values)))
            elif kind == "metric":
                task, _, metric = obj.metric.partition("/")
                out.append(score_estimate(_get_score(scores, task, metric)))
            else:
                parts = [score_estimate(_get_score(scores, t.name, t.main_metric)) for t in self.spec.tasks]
                weights = [t.weight if self.spec.aggregation == "weighted" else 1.0 for t in self.spec.tasks]
                out.append(aggregate_estimate(parts, weights))
        return tuple(out)

    def _top_front(self) -> list[tuple[TrialAttrs, list[float]]]:
        """This study's feasible top-fidelity trials on the front: (attrs, values in raw units)."""
        points = [
            (TrialAttrs.of(t), list(t.values)) for t in self.study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and t.values and TrialAttrs.of(t).top
        ]
        if not points:
            return []
        mask = non_dominated_mask(as_minimization([v for _, v in points], self.directions))
        return [p for p, keep in zip(points, mask) if keep]


def _get_score(scores: Mapping[tuple[str, str], TaskScore], task: str, metric: str) -> TaskScore:
    try:
        return scores[(task, metric)]
    except KeyError:
        have = sorted(f"{t}/{m}" for t, m in scores if t == task)
        raise NasError(
            f"task {task} produced no metric {metric!r} (it has {have}); set tasks[].metric in the spec to one of them"
        ) from None


__all__ = ["LadderResult", "RunSummary", "Search", "SearchSetup", "TrialOutcome"]
