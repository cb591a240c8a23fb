"""Opening a study: create it from a spec or attach to it (resume, workers).

:func:`open_search` loads the supernet, checks the spec against any study of the same name
in the database (same supernet, same identity fields), creates or loads the Optuna study
with a seeded sampler, enqueues a ``grid`` plan and re-queues interrupted trials, and
returns a :class:`~nas.search.driver.Search`. :func:`stored_spec` reads back the spec a
study was created with (``nas worker``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from evaluators.scorer import TaskScorer, build_scorers, check_task_names
from evaluators.tasks import check_task_metrics
from nas.errors import NasError
from nas.model.directory import LoadedSupernet, load_supernet
from nas.model.dtypes import dtype_name
from nas.model.precision import fast_dtype
from nas.model.space import SearchSpace
from nas.search.costs import StudyCosts, check_feasible_extremes
from nas.search.driver import Search, SearchSetup
from nas.search.optuna_storage import optuna_storage
from nas.search.quant import check_quant_space, quant_scorers
from nas.search.spec import StudySpec, spec_from_json
from nas.search.trials import PLAN_ATTR, RETRY_ATTR, TrialAttrs
from storage import create_study, get_study, list_studies, open_database, upsert_supernet

log = logging.getLogger(__name__)


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
    if scorers is None:
        check_task_names([t.name for t in spec.tasks])
        check_task_metrics(spec.tasks, [o.metric for o in spec.objectives])
    db = open_database(spec.storage)
    spec = resolve_study_dtype(spec, db, loaded)
    if loaded is None:
        loaded = load_supernet(spec.supernet, dtype=spec.dtype, device=spec.device)
    config = loaded.config
    space = SearchSpace.resolve(spec.space, config, loaded.model.layer_rank, loaded.space)
    _warn_unranked_channels(space, loaded.provenance, loaded.path)
    spec = _keep_legacy_confirmation(spec, db)
    _check_resumable(spec, db, loaded)
    costs = StudyCosts(config, context_len=spec.context_len, dtype=spec.dtype, model=loaded.model, space=space,
                       needs=spec.cost_metrics, quant_choices=spec.quant_choices)
    check_feasible_extremes(spec, costs, space)
    if spec.quant_choices:  # quantisation as a search axis (nas.search.quant)
        check_quant_space(spec.quant_choices, space)
        if scorers is not None:
            raise NasError("quant_choices scores every format with scorers built from the spec's tasks; do not pass scorers")
    if scorers is None:
        scorers = quant_scorers(spec.quant_choices, loaded, lambda sn: build_scorers(spec, sn, space)) if spec.needs_scores else []
    check_documents(spec, scorers)

    supernet_id = upsert_supernet(
        db, content_hash=loaded.content_hash, name=Path(loaded.path).name, path=str(loaded.path),
        config=config.to_dict(), space=loaded.space.to_dict(), provenance=dict(loaded.provenance),
    )
    storage = optuna_storage(db.url, spec.fault_tolerance)
    n_trials = effective_n_trials(spec, space)
    directions = [o.direction for o in spec.objectives]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = optuna.create_study(study_name=spec.name, storage=storage, directions=directions, load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler())
        wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
                  for d in directions]
        if list(probe.directions) != wanted:
            raise NasError(f"Optuna study {spec.name!r} exists with other objective directions; give the spec a new name")
        n_before = len(probe.get_trials(deepcopy=False))
        if seed is None:
            seed = spec.seed + n_before
            if worker:
                seed = (seed * 1_000_003 + os.getpid() * 7919 + int(time.time() * 1000)) % (2**31)
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, seed, n_trials))
        if study.metric_names is None:
            study.set_metric_names([o.metric for o in spec.objectives])
    scoring = {task: s for scorer in scorers for task, s in scorer.settings.items()}
    stored = {**spec.to_dict(), "supernet_hash": loaded.content_hash, "scoring": scoring}
    study_id = create_study(db, name=spec.name, optuna_study_name=spec.name, spec=stored, supernet_id=supernet_id)
    if not worker:
        enqueue_plan(study, spec, space, n_trials)
        _requeue_interrupted(study)
    log.info("study %s: %d trials already, sampler %s seed %d", spec.name, n_before, spec.sampler.name, seed)
    return Search(SearchSetup(
        spec=spec, db=db, study=study, study_id=study_id, supernet_id=supernet_id, supernet_hash=loaded.content_hash,
        config=config, space=space, scorers=tuple(scorers), costs=costs, n_trials=n_trials, loaded=loaded,
        batch=ask_batch(spec, n_trials),
    ))


def resolve_study_dtype(spec: StudySpec, db: Any, loaded: LoadedSupernet | None = None) -> StudySpec:
    """``dtype: auto`` made concrete: the stored study's dtype when it exists (a resumed study
    and its workers keep scoring in one dtype on any machine), else the given model's, else the
    device's fast dtype. Warns when bf16 is asked for on a CPU that emulates it. ``numerics:
    auto`` likewise: the stored study's (``model`` for one created before the setting), else
    ``mixed``."""
    if spec.numerics == "auto":
        existing = get_study(db, spec.name)
        numerics = "mixed" if existing is None else str(existing.spec.get("numerics", "model"))
        spec = spec.model_copy(update={"numerics": numerics})
    if spec.dtype == "auto":
        existing = get_study(db, spec.name)
        stored = existing.spec.get("dtype") if existing is not None else None
        if stored in ("bf16", "fp32"):
            dtype, why = stored, f"the dtype study {spec.name} was created with"
        elif loaded is not None:
            dtype, why = dtype_name(loaded.model.lm_head_weight.dtype), "the loaded supernet's dtype"
        else:
            dtype, why = fast_dtype(spec.device)
        log.info("dtype auto -> %s (%s)", dtype, why)
        return spec.model_copy(update={"dtype": dtype})
    fast, why = fast_dtype(spec.device)
    if spec.dtype == "bf16" and str(spec.device).startswith("cpu") and fast == "fp32":
        log.warning("dtype bf16 on %s: %s; `dtype: fp32` (or auto) scores the same study faster", spec.device, why)
    return spec


def _warn_unranked_channels(space: SearchSpace, provenance: dict[str, Any], path: Path | str) -> None:
    """A space narrowing ``d_model`` on an import whose channels were never ranked (imported
    before importers ranked them, or with ``--no-reorder``) keeps arbitrary channels: say so."""
    if len(space.d_model_choices) < 2 or "reordered" not in provenance:  # trained supernets learn their order
        return
    if not provenance.get("importance", {}).get("channels_ranked"):
        log.warning("the space narrows d_model (%s) but %s was imported without ranking its embedding channels, so "
                    "narrower sub-networks keep arbitrary ones; re-import it to search d_model",
                    list(space.d_model_choices), path)


def _keep_legacy_confirmation(spec: StudySpec, db: Any) -> StudySpec:
    """A study created before confirmation sets keeps searching all its documents (its
    stored results stay valid); ``nas confirm`` gives it a confirmation set later."""
    existing = get_study(db, spec.name)
    if existing is None or "confirmation" in existing.spec or spec.confirmation is None:
        return spec
    log.warning("study %s predates confirmation sets: it keeps searching every document; run `nas confirm %s` "
                "once its budget is spent", spec.name, spec.name)
    return spec.model_copy(update={"confirmation": existing.spec.get("confirmation")})


def check_documents(spec: StudySpec, scorers: Sequence[TaskScorer]) -> None:
    """Refuse a top fidelity or a confirmation set that a task has too few documents for,
    naming the task, how many documents it has and what would fit."""
    top, problems = spec.top, []
    for scorer in scorers:
        for task, n in scorer.n_docs.items():
            search = n - top.holdout
            if top.holdout and search < max(2, top.limit or 2):
                problems.append(
                    f"{task} has {n} documents: holding out {top.holdout} for confirmation leaves {max(search, 0)} to "
                    f"search{'' if top.limit is None else f', fewer than the top fidelity {top.limit}'}"
                )
    if problems:
        raise NasError(
            "the confirmation set does not fit: " + "; ".join(problems)
            + "; lower confirmation.examples (or the top fidelity), or set confirmation: null"
        )


def _check_resumable(spec: StudySpec, db: Any, loaded: LoadedSupernet) -> None:
    """Refuse to resume a study of the same name on another supernet or with another spec."""
    existing = get_study(db, spec.name)
    if existing is None:
        return
    if existing.supernet_hash != loaded.content_hash:
        raise NasError(
            f"study {spec.name!r} in {db.safe_url} was run on supernet {existing.supernet_hash}, but "
            f"{spec.supernet} has content hash {loaded.content_hash}; refusing to mix sub-networks of two "
            "supernets in one study: give this spec a new name"
        )
    # a study created before recheck_nats existed: off; before numerics: all bf16
    stored = {"recheck_nats": 0.0, "numerics": "model", **dict(existing.spec)}
    mine = spec.identity()
    diff = sorted(k for k in mine if k != "supernet" and _canon(stored.get(k)) != _canon(mine[k]))
    if diff:
        raise NasError(
            f"study {spec.name!r} already exists with different {', '.join(diff)}; resume it with the same spec "
            "(only budget, sampler, seed, storage, batch_size and device may change) or give the new spec a new name"
        )


def stored_spec(study_name: str, storage_url: str | None) -> StudySpec:
    """The spec a study was created with, from the database (for ``nas worker``)."""
    db = open_database(storage_url)
    try:
        row = get_study(db, study_name)
        if row is None:
            known = [s.name for s in list_studies(db)]
            raise NasError(
                f"no study named {study_name!r} in {db.safe_url}; "
                + (f"known studies: {', '.join(known)}" if known else "start one with `nas search SPEC.yaml`")
            )
        data = dict(row.spec)
        data["storage"] = db.url
        return spec_from_json(data)
    finally:
        db.close()


def effective_n_trials(spec: StudySpec, space: SearchSpace) -> int | None:
    """The budget of COMPLETE trials: the spec's, capped at the space's size for ``grid``."""
    n = spec.budget.n_trials
    if spec.sampler.name == "grid":
        size = space.size()
        return size if n is None else min(n, size)
    return n


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def population_size(spec: StudySpec, n_trials: int | None) -> int:
    """NSGA-II/III's generation size: the spec's, else a fifth of the budget within [10, 50]."""
    return spec.sampler.population_size or (min(50, max(10, n_trials // 5)) if n_trials else 50)


def ask_batch(spec: StudySpec, n_trials: int | None) -> int:
    """How many trials a worker asks at once and scores in prefix-reuse order: ``sampler.batch``,
    else a whole generation for ``nsga2``/``nsga3``, 8 for ``random``, ``qmc`` and ``grid``
    (their proposals do not depend on results), 1 for ``tpe`` and ``gp`` (each result
    improves the next proposal)."""
    s = spec.sampler
    if s.batch is not None:
        return s.batch
    if s.name in ("nsga2", "nsga3"):
        return population_size(spec, n_trials)
    return 8 if s.name in ("random", "qmc", "grid") else 1


def make_sampler(spec: StudySpec, seed: int, n_trials: int | None) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if s.name in ("nsga2", "nsga3"):
            pop = population_size(spec, n_trials)
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


def enqueue_plan(study: optuna.Study, spec: StudySpec, space: SearchSpace, total: int | None) -> None:
    """Enqueue the rest of the grid plan (resumable: trials carry their plan index)."""
    if spec.sampler.name != "grid":
        return
    total = space.size() if total is None else total
    done = [TrialAttrs.of(t).plan_index for t in study.get_trials(deepcopy=False)]
    plan = _plan(space, spec.seed, total)
    for i in range(max((d for d in done if d is not None), default=-1) + 1, len(plan)):
        study.enqueue_trial(plan[i], user_attrs={PLAN_ATTR: i})


def _requeue_interrupted(study: optuna.Study) -> None:
    """On resume, queue again the trials an interrupted run left failed (Ctrl-C, a crash), so
    the resumed study runs the sub-networks the sampler had chosen. Trials failed as stale
    are already re-queued by the heartbeat callback; a retry that fails again is not."""
    trials = study.get_trials(deepcopy=False)
    retries = {t.number: TrialAttrs.of(t).retry_of for t in trials}
    handled = set(retries.values()) | {t.system_attrs.get("failed_trial") for t in trials}
    for t in trials:
        if t.state.name != "FAIL" or t.number in handled or retries[t.number] is not None or "failed_trial" in t.system_attrs:
            continue
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={RETRY_ATTR: t.number})


__all__ = ["ask_batch", "check_documents", "effective_n_trials", "enqueue_plan", "make_sampler", "open_search", "stored_spec"]
