"""The search driver on SQLite with a tiny real supernet: constraints before scoring, the
evaluation cache across studies, multi-fidelity promotion, resume, reproducibility, bad input."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest

import storage
from nas.errors import NasError
from nas.model.directory import LoadedSupernet
from nas.search.params import param_distributions
from nas.search.status import study_status
from nas.search.study import open_search
from nas.search.trials import QUEUED_ATTR, TOP_FIDELITY_CONSTRAINT, UNSTARTED_ATTR
from storage import StorageError

from _search import CountingScorer, SyntheticLoss, heldout_scorer, make_spec, save_tiny_supernet

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_constraints_reject_before_any_scoring(tiny: LoadedSupernet, sqlite_url: str) -> None:
    limit = 20_000  # params; roughly half of the tiny space is above it
    spec = make_spec(tiny.path, sqlite_url, constraints=[{"metric": "params", "max": limit}], budget={"n_trials": 10})
    scorer = heldout_scorer(tiny)
    search = open_search(spec, scorers=[scorer], loaded=tiny)
    summary = search.optimize()
    trials = _trials(search.db.url, "s")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 10 and summary.complete == 10
    infeasible = [t for t in complete if not t.user_attrs["feasible"]]
    feasible = [t for t in complete if t.user_attrs["feasible"]]
    assert infeasible and feasible, "the test needs both kinds of trial"
    for t in infeasible:
        assert t.user_attrs["costs"]["params"] > limit
        assert t.constraints["params"] > 0  # told to Optuna through its constraint mechanism
        assert t.user_attrs["scoring"]["model_calls"] == 0 and t.user_attrs["fidelity"] is None
    for t in feasible:
        assert t.constraints["params"] <= 0
    # the scorer never saw an infeasible sub-network; every call was for a feasible one
    from evaluators.cost import analytic_costs

    assert scorer.subnets and all(analytic_costs(tiny.config, s)["params"] <= limit for s in scorer.subnets)
    assert summary.infeasible == len(infeasible)
    # Optuna's own Pareto front skips infeasible trials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = optuna.load_study(study_name="s", storage=search.db.url).best_trials
    assert best and all(t.user_attrs["feasible"] for t in best)


def test_contradictory_constraints_are_refused_up_front(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, constraints=[{"metric": "non_embedding_params", "max": 100}])
    with pytest.raises(NasError, match=r"no sub-network .* even the smallest sub-network .* raise max to at least"):
        open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    spec = make_spec(tiny.path, sqlite_url, constraints=[{"metric": "flops_per_token", "min": 1e12}])
    with pytest.raises(NasError, match="even the largest sub-network .* lower min to at most"):
        open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)


def test_cache_answers_a_second_study_with_zero_model_calls(tiny: LoadedSupernet, sqlite_url: str) -> None:
    first = heldout_scorer(tiny)
    spec_a = make_spec(tiny.path, sqlite_url, name="a", sampler="grid", budget={"n_trials": 5}, seed=1)
    open_search(spec_a, scorers=[first], loaded=tiny).optimize()
    assert len(first.calls) == 5
    # same sub-networks (grid with the same seed) in another study: everything from storage
    second = heldout_scorer(tiny)
    spec_b = spec_a.model_copy(update={"name": "b"})
    summary = open_search(spec_b, scorers=[second], loaded=tiny).optimize()
    assert second.calls == [] and summary.evaluations == 0 and summary.cache_hits == 5
    a = {t.user_attrs["config_hash"]: t.values for t in _trials(sqlite_url, "a")}
    b = {t.user_attrs["config_hash"]: t.values for t in _trials(sqlite_url, "b")}
    assert a == b and all(t.user_attrs["promotion"] == "cached" for t in _trials(sqlite_url, "b"))


def test_promotion_scores_low_first_and_builds_the_front_from_the_top_rung(tiny: LoadedSupernet, sqlite_url: str) -> None:
    scorer = CountingScorer(SyntheticLoss())
    spec = make_spec(tiny.path, sqlite_url, fidelities=[10, "full"], budget={"n_trials": 12}, seed=3,
                     promotion={"mode": "ladder", "z": 2.0, "min_top_trials": 2})
    search = open_search(spec, scorers=[scorer], loaded=tiny)
    summary = search.optimize()
    trials = [t for t in _trials(sqlite_url, "s") if t.state.name == "COMPLETE"]
    rejected = [t for t in trials if t.user_attrs["promotion"] == "rejected"]
    top = [t for t in trials if t.user_attrs["top"]]
    assert rejected, "width never helps the synthetic loss, so some wide candidates must be rejected"
    assert summary.full_evaluations_saved == len(rejected) == summary.low_fidelity_only
    for t in rejected:
        assert t.user_attrs["fidelity"] == "n10-s3" and t.constraints[TOP_FIDELITY_CONSTRAINT] > 0
    for t in top:
        assert t.user_attrs["fidelity"] == "full" and t.constraints[TOP_FIDELITY_CONSTRAINT] == 0
    # every scored trial was scored at the low rung; only promoted ones at the top
    labels = [label for _, label in scorer.calls]
    fresh_top = [t for t in top if t.user_attrs["promotion"] != "cached"]
    assert labels.count("full") == len(fresh_top)
    # both fidelities are recorded in storage for promoted sub-networks
    db = storage.open_database(sqlite_url)
    some = fresh_top[-1].user_attrs["scoring"]["subnet_id"]
    assert {e.fidelity for e in storage.list_evaluations(db, some)} == {"n10-s3", "full"}
    # Optuna's front and ours contain top-fidelity trials only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = optuna.load_study(study_name="s", storage=sqlite_url).best_trials
    assert best and all(t.user_attrs["top"] for t in best)
    status = study_status("s", sqlite_url)
    assert status.low_fidelity_only == len(rejected) and status.full_evaluations_saved == len(rejected)
    assert {row["trial"] for row in status.front} <= {t.number for t in top}
    assert 0 < status.hypervolume <= 1


def test_resume_after_an_interrupted_run_finishes_the_budget(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, budget={"n_trials": 7}, seed=5)
    scorer = heldout_scorer(tiny)
    scorer.fail_on_call = 4  # Ctrl-C twice during the 4th evaluation
    with pytest.raises(KeyboardInterrupt):
        open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    done_before = {h for h, _ in scorer.calls}
    trials = _trials(sqlite_url, "s")
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and "RUNNING" not in states
    # the batch's trial being scored failed; the three not yet started were queued again
    interrupted = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get(UNSTARTED_ATTR)]
    assert len(interrupted) == 1 and states.count("WAITING") == 3 == len(trials) - 4 - 3
    again = heldout_scorer(tiny)
    search = open_search(spec, scorers=[again], loaded=tiny)  # as `nas search SPEC` run again
    summary = search.optimize()
    trials = _trials(sqlite_url, "s")
    assert [t.state.name for t in trials].count("COMPLETE") == 7 == summary.complete
    assert not done_before & {h for h, _ in again.calls}, "nothing scored before was scored again"
    failed = interrupted[0]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.state.name == "COMPLETE" and retry.params == failed.params  # the interrupted choice is run
    rows = storage.list_trials(search.db, "s")
    assert [r.state for r in rows].count("COMPLETE") == 7
    assert storage.get_study(search.db, "s").status == "finished"
    # a third run has nothing left to do
    assert open_search(spec, scorers=[again], loaded=tiny).optimize().trials_run == 0


def test_a_worker_that_died_mid_suggestion_is_retried_with_its_stored_choices(tiny: LoadedSupernet,
                                                                               sqlite_url: str) -> None:
    """A worker killed after storing its trial's depth but before the widths: the trial goes
    stale, is failed, and its retry keeps the depth and completes (a race CI once hit)."""
    spec = make_spec(tiny.path, sqlite_url, budget={"n_trials": 4}, seed=3)
    search = open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    depth = param_distributions(search.space)["n_layer"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna: heartbeats are meant for optimize(), as ours are
        dead = search.study.ask(fixed_distributions={"n_layer": depth})
    search.study._storage.record_heartbeat(dead._trial_id)  # its last heartbeat, then silence
    time.sleep(spec.fault_tolerance.grace_period_s + 0.5)
    summary = search.optimize()
    trials = _trials(sqlite_url, "s")
    assert trials[dead.number].state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state.name == "COMPLETE"
    assert retry.params["n_layer"] == dead.params["n_layer"] and len(retry.params) > 1
    assert [t.state.name for t in trials].count("COMPLETE") == 4 == summary.complete
    assert "RUNNING" not in {t.state.name for t in trials}


def test_same_spec_and_seed_give_the_same_trials(tiny: LoadedSupernet, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        url = f"sqlite:///{tmp_path / f'run{i}.db'}"
        spec = make_spec(tiny.path, url, sampler={"name": "tpe", "n_startup_trials": 3}, budget={"n_trials": 7}, seed=11)
        open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny).optimize()
        runs.append([(t.params, t.values) for t in _trials(url, "s")])
    assert runs[0] == runs[1]


def test_study_lives_in_our_database_for_optuna_and_the_dashboard(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, budget={"n_trials": 3}, sampler="nsga2")
    open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny).optimize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(study_name="s", storage=sqlite_url)
    assert study.metric_names == ["heldout_loss/loss", "non_embedding_params"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    params = set(study.trials[0].params)
    assert "n_layer" in params and "layer_0.d_ff" in params
    row = storage.get_study(storage.open_database(sqlite_url), "s")
    assert row.optuna_study_name == "s" and row.spec["supernet_hash"] == tiny.content_hash


def test_refuses_to_mix_supernets_or_change_the_spec(tiny: LoadedSupernet, sqlite_url: str, tmp_path: Path) -> None:
    spec = make_spec(tiny.path, sqlite_url, budget={"n_trials": 2})
    open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny).optimize()
    other = save_tiny_supernet(tmp_path / "other", seed=1)
    with pytest.raises(NasError, match=r"was run on supernet .* refusing to mix sub-networks of two supernets"):
        open_search(make_spec(other.path, sqlite_url), scorers=[heldout_scorer(other)], loaded=other)
    changed = make_spec(tiny.path, sqlite_url, objectives=["heldout_loss", "params"])
    with pytest.raises(NasError, match="already exists with different objectives"):
        open_search(changed, scorers=[heldout_scorer(tiny)], loaded=tiny)
    with pytest.raises(NasError, match="already exists with different recheck_nats"):  # scores that would not compare
        open_search(make_spec(tiny.path, sqlite_url, recheck_nats=0.5), scorers=[heldout_scorer(tiny)], loaded=tiny)
    # a study stored before recheck_nats existed (no such key) resumes with it off
    db = storage.open_database(sqlite_url)
    older = {k: v for k, v in storage.get_study(db, "s").spec.items() if k != "recheck_nats"}
    storage.update_study_spec(db, "s", older)
    assert "recheck_nats" not in storage.get_study(db, "s").spec
    # a bigger budget is a resume, not a change
    more = make_spec(tiny.path, sqlite_url, budget={"n_trials": 4})
    assert open_search(more, scorers=[heldout_scorer(tiny)], loaded=tiny).optimize().complete == 4


def test_unknown_task_is_refused_before_anything_is_created(tiny: LoadedSupernet, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluators.tasks
    from evaluators.errors import EvaluatorError

    monkeypatch.setattr(evaluators.tasks, "_all_builtin_names", lambda: [])  # skip indexing lm-eval's ~10 s
    db_file = tmp_path / "never.db"
    spec = make_spec(tiny.path, f"sqlite:///{db_file}", tasks=["arc_eassy"], objectives=["accuracy", "params"])
    with pytest.raises(EvaluatorError, match="unknown task 'arc_eassy'; did you mean arc_easy"):
        open_search(spec, loaded=tiny)
    assert not db_file.exists()


def test_unreachable_storage_is_a_clear_error(tiny: LoadedSupernet) -> None:
    spec = make_spec(tiny.path, "postgresql+psycopg://root@127.0.0.1:1/nas")
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL at 127.0.0.1:1"):
        open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from nas.cli import main

    monkeypatch.setattr(sys, "argv", ["nas", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_search_status_and_bad_input(tiny: LoadedSupernet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: cli\nsupernet: {tiny.path}\nspace: {{n_layer_choices: [2, 3], d_ff_choices: [32, 64]}}\n"
        "tasks: [{name: heldout_loss, n_examples: 16, seq_len: 16}]\n"
        "objectives: [heldout_loss, non_embedding_params]\nsampler: random\nbudget: {n_trials: 3}\n"
        f"dtype: fp32\nstorage: {url}\nconfirmation: null\n"
    )
    code, out, err = _cli(monkeypatch, capsys, "search", str(path), "--quiet", "--batch", "1")
    assert code == 0, err
    assert "3/3 trials complete" in out and "Pareto front:" in out
    # --batch 1 overrides random's batch of 8: no trial waited its turn in a batch
    assert not any(QUEUED_ATTR in t.user_attrs for t in _trials(url, "cli"))
    code, _, err = _cli(monkeypatch, capsys, "search", str(path), "--batch", "0")
    assert code == 2 and "--batch" in err
    code, out, _ = _cli(monkeypatch, capsys, "status", "cli", "--storage", url)
    assert code == 0 and "trials: 3/3 complete" in out and "hypervolume" in out
    code, _, err = _cli(monkeypatch, capsys, "status", "nope", "--storage", url)
    assert code == 2 and err.startswith("error: no study named 'nope'") and "known studies: cli" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("sampler: random", "sampler: annealing"))
    code, _, err = _cli(monkeypatch, capsys, "search", str(bad))
    assert code == 2 and "sampler.name: unknown sampler 'annealing'" in err and "Traceback" not in err


def test_latency_objectives_are_measured_or_predicted_and_recorded(tiny: LoadedSupernet, sqlite_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluators.latency_table import LatencyTable
    from nas.model.space import SearchSpace

    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    one_variant = {"n_layer_choices": [2, 3], "n_head_choices": [4], "d_ff_choices": [64]}
    # the search builds the device's table on first use; a quick one saved beforehand is loaded instead
    space = SearchSpace.from_dict(one_variant, tiny.config, tiny.model.layer_rank)
    LatencyTable.build(tiny.model, space, dtype="fp32", prompt_len=16, calibrate_on=[]).save(
        tmp_path / "work" / "latency_tables.json")
    spec = make_spec(tiny.path, sqlite_url, objectives=["heldout_loss", "predicted_latency_ms"], budget={"n_trials": 2},
                     constraints=[{"metric": "latency_ms", "max": 10_000}], space=one_variant)
    search = open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    search.optimize()
    trial = _trials(sqlite_url, "s")[0]
    rows = storage.find_costs(search.db, supernet_hash=tiny.content_hash, config_hash=trial.user_attrs["config_hash"])
    methods = {r.metric: r.method for r in rows}
    assert methods["predicted_latency_ms"] == "predicted" and methods["prefill_latency_ms"] == "measured"
    assert methods["params"] == "analytic"
    assert trial.values[1] == pytest.approx(trial.user_attrs["costs"]["predicted_latency_ms"])
    assert trial.constraints["latency_ms"] <= 0
