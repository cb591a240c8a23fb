"""Trustworthy fronts: nested rungs, paired decisions, racing, held-out confirmation and
cache keys that keep different scoring settings apart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import storage
from evaluators.heldout import HeldOutLoss
from evaluators.types import Fidelity
from nas.cli import app
from nas.errors import NasError
from nas.model.directory import LoadedSupernet, load_supernet
from nas.search.confirm import confirm_study
from nas.search.racing import Contender, confidently_dominates
from nas.search.spec import parse_spec
from nas.search.status import study_status
from nas.search.study import open_search
from nas.stats import mean_stderr, paired_difference
from reports.data import load_study, pick_in_view
from reports.html import write_report
from reports.web import WebSettings, create_app

from _search import (
    TASKS,
    CountingScorer,
    NoisyTwoTasks,
    SyntheticLoss,
    TwoTasks,
    make_spec,
    optimize_together,
    save_tiny_supernet,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls


def _stored_examples(url: str, study: str) -> dict[bool, set[tuple[str, int]]]:
    """(task, document) of every evaluation of the study's sub-networks: confirmation (True) vs search."""
    out: dict[bool, set[tuple[str, int]]] = {True: set(), False: set()}
    with storage.open_database(url) as db:
        for t in storage.list_trials(db, study):
            for e in storage.list_evaluations(db, t.subnet_id):
                scores = storage.get_example_scores(db, e.id)
                ids = scores.example_ids if scores else ()
                out[Fidelity.parse(e.fidelity).confirm].update((e.task, int(i)) for i in ids)
    return out


# ------------------------------------------------------------------------ paired statistics
def test_paired_difference_by_hand() -> None:
    a = {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0, 9: 5.0}
    b = {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0, 7: 5.0}
    mean, se = paired_difference(a, b)  # shared 0..3: diffs 1, 0, 0, 1
    assert mean == 0.5 and se == pytest.approx(math.sqrt((4 * 0.25) / 3 / 4))
    # the paired standard error is smaller than the two independent ones added in quadrature
    independent = math.sqrt(mean_stderr([1.0, 0.0, 1.0, 1.0]) ** 2 + mean_stderr([0.0, 0.0, 1.0, 0.0]) ** 2)
    assert se < independent
    assert paired_difference({0: 1.0}, {0: 0.0}) is None  # one shared document: no error estimate


def test_confident_domination_needs_cheaper_and_better_by_the_paired_bar(tiny: LoadedSupernet) -> None:
    spec = make_spec(tiny.path, "sqlite://", objectives=["heldout_loss", "params"])
    key = ("heldout_loss", "loss")
    good = {key: {i: 1.0 + 0.01 * (i % 3) for i in range(20)}}
    bad = {key: {i: 1.5 + 0.01 * (i % 3) for i in range(20)}}  # worse by 0.5 on every document: se 0
    close = {key: {i: 1.0 + 0.01 * (i % 3) + (0.02 if i % 2 else -0.02) for i in range(20)}}
    assert confidently_dominates(Contender(0, (1.0, 100.0), good), Contender(1, (1.5, 120.0), bad), spec, z=2.0)[0]
    # cheaper but not confidently better: the mean differences straddle zero
    assert not confidently_dominates(Contender(0, (1.0, 100.0), good), Contender(1, (1.0, 120.0), close), spec, z=2.0)[0]
    # better but more expensive: never dominates
    assert not confidently_dominates(Contender(0, (1.0, 130.0), good), Contender(1, (1.5, 120.0), bad), spec, z=2.0)[0]
    # no shared documents: nothing can be said
    other = {key: {i + 100: v for i, v in bad[key].items()}}
    assert not confidently_dominates(Contender(0, (1.0, 100.0), good), Contender(1, (1.5, 120.0), other), spec, z=2.0)[0]


# ---------------------------------------------------------------------------- nested rungs
def test_a_merged_heldout_rung_equals_scoring_it_directly(tiny: LoadedSupernet) -> None:
    scorer = HeldOutLoss(tiny.model, n_examples=24, seq_len=12, batch_size=1)
    subnet = tiny.space.smallest()
    low = scorer.evaluate(subnet, Fidelity(8, 1))
    calls = scorer.n_model_calls
    merged = scorer.evaluate(subnet, Fidelity(20, 1), low)
    assert scorer.n_model_calls - calls == 12  # only the 12 documents the low rung lacked
    assert merged.scores == scorer.evaluate(subnet, Fidelity(20, 1)).scores
    assert set(low.scores[0].example_ids) <= set(merged.scores[0].example_ids)


# ------------------------------------------------------------------------------- racing
def test_racing_stops_only_candidates_the_data_shows_dominated(tiny: LoadedSupernet, sqlite_url: str) -> None:
    scorer = CountingScorer(SyntheticLoss(n_examples=60, noise=0.05))
    spec = make_spec(tiny.path, sqlite_url, budget={"n_trials": 14}, seed=4,
                     promotion={"mode": "racing", "chunk": 10, "z": 2.0, "min_top_trials": 2})
    summary = open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    trials = [t for t in optuna.load_study(study_name="s", storage=sqlite_url).get_trials() if t.state.name == "COMPLETE"]
    rejected = [t for t in trials if t.user_attrs["promotion"] == "rejected"]
    top = [t for t in trials if t.user_attrs["top"]]
    assert rejected and summary.low_fidelity_only == len(rejected)
    # chunks: every call scored 10 new documents (nested), never a document twice
    assert {label for _, label in scorer.calls} <= {"n10-s0", "n20-s0", "n30-s0", "n40-s0", "n50-s0", "full"}
    oracle = SyntheticLoss(n_examples=60, noise=0.05)  # the same seeded noise: the loss on every document
    truth = {s.hash: oracle.evaluate(s, Fidelity()).scores[0].value for s in scorer.subnets}
    for t in rejected:
        loss, params = truth[t.user_attrs["config_hash"]], t.values[1]
        assert any(truth[m.user_attrs["config_hash"]] < loss and m.values[1] <= params for m in top), t.number


def test_racing_with_two_workers_on_one_study(tiny: LoadedSupernet, tmp_path: Path) -> None:
    """Each worker races against the front the study has stored so far: the budget is met
    exactly and still only data-dominated candidates stop."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    spec = make_spec(tiny.path, url, name="r2", budget={"n_trials": 16}, seed=5,
                     promotion={"mode": "racing", "chunk": 10, "z": 2.0, "min_top_trials": 2})
    scorers = [CountingScorer(SyntheticLoss(n_examples=60, noise=0.05)) for _ in range(2)]
    searches = [open_search(spec, scorers=[scorers[0]], loaded=tiny),
                open_search(spec, scorers=[scorers[1]], loaded=tiny, worker=True)]
    optimize_together(searches)
    trials = [t for t in optuna.load_study(study_name="r2", storage=url).get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 16 and all(s.calls for s in scorers)  # both workers scored
    oracle = SyntheticLoss(n_examples=60, noise=0.05)
    truth = {s.hash: oracle.evaluate(s, Fidelity()).scores[0].value for c in scorers for s in c.subnets}
    top = [t for t in trials if t.user_attrs["top"]]
    rejected = [t for t in trials if t.user_attrs["promotion"] == "rejected"]
    assert rejected  # racing stopped some candidates early
    for t in rejected:
        loss, params = truth[t.user_attrs["config_hash"]], t.values[1]
        assert any(truth[m.user_attrs["config_hash"]] < loss and m.values[1] <= params for m in top), t.number


# --------------------------------------------------------------------------- confirmation
def test_confirmation_documents_are_never_searched_across_resume_and_workers(tiny: LoadedSupernet, sqlite_url: str) -> None:
    tasks = [{"name": "heldout_loss", "n_examples": 60, "seq_len": 12}]
    spec = make_spec(tiny.path, sqlite_url, name="c", tasks=tasks, confirmation={"examples": 15}, budget={"n_trials": 8},
                     promotion={"mode": "racing", "chunk": 9})
    scorer = HeldOutLoss(tiny.model, n_examples=60, seq_len=12)
    first = open_search(spec, scorers=[scorer], loaded=tiny)
    first.optimize(max_trials=3)
    first.close()
    worker = open_search(spec, scorers=[scorer], loaded=tiny, worker=True)  # joins with the stored spec's partition
    worker.optimize(max_trials=2)
    worker.close()
    resumed = open_search(spec, scorers=[scorer], loaded=tiny)
    resumed.optimize()
    resumed.close()
    done = confirm_study("c", sqlite_url, loaded=tiny, scorers=[scorer])
    assert done.front and done.fidelity == "call-h15-s0" and done.evaluations == len(done.trials)
    seen = _stored_examples(sqlite_url, "c")
    assert len(seen[True]) == 15 and len(seen[False]) == 45 and not seen[True] & seen[False]
    status = study_status("c", sqlite_url)
    assert "15 documents per task held out" in status.confirmation and status.confirmed == len(done.trials)
    # confirming again is answered from the cache; too many examples is refused with the count
    assert confirm_study("c", sqlite_url, loaded=tiny, scorers=[scorer]).evaluations == 0
    with pytest.raises(NasError, match="holds out 15 confirmation documents per task; ask for 2 to 15"):
        confirm_study("c", sqlite_url, examples=40, loaded=tiny, scorers=[scorer])


def test_a_study_older_than_confirmation_sets_gets_one_from_documents_it_never_searched(
    tiny: LoadedSupernet, sqlite_url: str
) -> None:
    spec = make_spec(tiny.path, sqlite_url, name="old", tasks=list(TASKS), objectives=["accuracy", "params"],
                     fidelities=[20], budget={"n_trials": 4})
    scorer = TwoTasks(n_docs=40)
    open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    with storage.open_database(sqlite_url) as db:  # as written before this change: no confirmation key at all
        row = storage.get_study(db, "old")
        storage.update_study_spec(db, "old", {k: v for k, v in row.spec.items() if k != "confirmation"})
    assert "predates confirmation sets" in study_status("old", sqlite_url).confirmation
    with pytest.raises(NasError, match="at most 20 remain unseen: pass --examples 20 or fewer"):
        confirm_study("old", sqlite_url, examples=25, loaded=tiny, scorers=[scorer])
    done = confirm_study("old", sqlite_url, examples=15, loaded=tiny, scorers=[scorer])
    assert done.added_split and done.fidelity == "call-h15-s0"
    seen = _stored_examples(sqlite_url, "old")
    assert seen[True] and not seen[True] & seen[False]
    assert "15 documents per task held out" in study_status("old", sqlite_url).confirmation


def test_confirm_cli_without_a_front_says_so(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, name="empty", confirmation={"examples": 4}, budget={"n_trials": 1})
    search = open_search(spec, scorers=[CountingScorer(SyntheticLoss(n_examples=40))], loaded=tiny)
    search.close()  # created, never run
    result = CliRunner().invoke(app, ["confirm", "empty", "--storage", sqlite_url])
    assert isinstance(result.exception, NasError) and "has no front yet" in str(result.exception)


# ------------------------------------------------------------------------ bad input
def test_bad_racing_and_confirmation_settings_are_refused(tiny: LoadedSupernet, sqlite_url: str) -> None:
    with pytest.raises(NasError, match="chunk 1 is too small: a paired test needs at least 2 documents"):
        make_spec(tiny.path, sqlite_url, promotion={"mode": "racing", "chunk": 1})
    spec = make_spec(tiny.path, sqlite_url, confirmation={"examples": 30}, fidelities=[20])
    with pytest.raises(NasError, match="heldout_loss has 40 documents: holding out 30 for confirmation leaves 10 to "
                                       "search, fewer than the top fidelity 20"):
        open_search(spec, scorers=[CountingScorer(SyntheticLoss(n_examples=40))], loaded=tiny)
    with pytest.raises(NasError, match="every rung must draw from the same seeded order"):
        parse_spec({"name": "x", "supernet": "s", "tasks": ["piqa"], "budget": 3, "fidelities": ["n10-s1", "n20-s2"]})


# ----------------------------------------------------------------------------- cache keys
def test_fp32_and_bf16_scores_are_cached_under_different_keys(tmp_path: Path, sqlite_url: str) -> None:
    save_tiny_supernet(tmp_path / "sn")
    tasks = [{"name": "heldout_loss", "n_examples": 16, "seq_len": 12}]
    counts = {}
    for dtype in ("bf16", "fp32", "bf16"):
        loaded = load_supernet(tmp_path / "sn", dtype=dtype)
        spec = make_spec(loaded.path, sqlite_url, name=f"s-{dtype}-{len(counts)}", tasks=tasks, dtype=dtype,
                         sampler="grid", budget={"n_trials": 4}, space={"n_layer_choices": [3], "n_head_choices": [4],
                                                                        "d_ff_choices": [32, 64]})
        summary = open_search(spec, loaded=loaded).optimize()
        counts[f"{dtype}-{len(counts)}"] = (summary.evaluations, summary.cache_hits)
    # the fp32 study scores everything again; the second bf16 study is answered from the first's rows
    assert counts == {"bf16-0": (4, 0), "fp32-1": (4, 0), "bf16-2": (0, 4)}
    with storage.open_database(sqlite_url) as db:
        settings = {e.settings for t in storage.list_trials(db, "s-fp32-1") for e in storage.list_evaluations(db, t.subnet_id)}
    assert settings == {'{"dtype":"bf16"}', '{"dtype":"fp32"}'}


# --------------------------------------------------------------- the confirmed decision
def test_a_confirmed_study_is_ranked_and_shown_by_its_confirmed_scores(
    tiny: LoadedSupernet, sqlite_url: str, tmp_path: Path
) -> None:
    spec = make_spec(tiny.path, sqlite_url, name="dec", tasks=list(TASKS), objectives=["accuracy", "params"],
                     confirmation={"examples": 20}, promotion={"mode": "racing", "chunk": 10}, budget={"n_trials": 8})
    scorer = TwoTasks(n_docs=60)
    open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    done = confirm_study("dec", sqlite_url, loaded=tiny, scorers=[scorer])
    with storage.open_database(sqlite_url) as db:
        view = load_study(db, "dec")
        result = pick_in_view(view, "accuracy", top=None, db=db)
    frame = view.frame
    confirmed = frame[frame["accuracy@confirmed"].notna()]
    assert set(confirmed["trial"]) == set(done.trials) and result.confirmed
    # ranked by the confirmed accuracy, best first; the search score and its interval beside it
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    by_trial = frame.set_index("trial")
    for c in result.candidates:
        assert c.score == pytest.approx(by_trial.loc[c.trial, "accuracy@confirmed"])
        assert c.search_score == pytest.approx(by_trial.loc[c.trial, "accuracy"])
        assert c.interval == pytest.approx(1.96 * c.stderr)
        assert (c.tied_with is not None) == bool(by_trial.loc[c.trial, "tied"])
        assert c.tied_with in (None, 1) and (c.rank != 1 or c.tied_with is None)

    cli = CliRunner().invoke(app, ["pick", "dec", "--json", "--storage", sqlite_url])
    assert cli.exit_code == 0, cli.output
    picked = json.loads(cli.output)
    assert picked["confirmed"] and picked["candidates"][0]["trial"] == result.candidates[0].trial
    table = CliRunner().invoke(app, ["pick", "dec", "--storage", sqlite_url])
    assert "confirmed on held-out documents" in table.output and "±" in table.output

    exported = CliRunner().invoke(app, ["export", "dec", "--pick", "--out", str(tmp_path / "exp"), "--storage", sqlite_url])
    assert exported.exit_code == 0, exported.output
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "Confirmed on held-out documents" in card and "run `nas confirm`" not in card
    meta = json.loads((tmp_path / "exp" / "nas_export.json").read_text())
    assert {m["fidelity"] for m in meta["confirmed_metrics"]} == {"call-h20-s0"} and len(meta["confirmed_metrics"]) == 2

    report = write_report(view, tmp_path / "dec.html")
    assert "confirmed ±" in report.read_text()
    settings = WebSettings(database_url=sqlite_url, work_dir=tmp_path / "work", token="t", cache_ttl_s=0.0)
    with TestClient(create_app(settings)) as client:
        page = client.get("/studies/dec", headers={"accept": "text/html"}).text
        assert "confirmed ± 1.96 se" in page and "tied with best" in page
        api = client.post("/api/pick", json={"study": "dec", "top": 3}).json()
        assert api["confirmed"] and [c["trial"] for c in api["candidates"]] == [c.trial for c in result.candidates[:3]]
        front = client.get("/api/studies/dec/front").json()
        assert front and all(r["accuracy_confirmed"] is not None for r in front)


def test_ties_with_the_best_are_exactly_the_paired_intervals_that_cover_zero(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, name="tie", tasks=list(TASKS), objectives=["accuracy", "params"],
                     confirmation={"examples": 60}, promotion={"mode": "racing", "chunk": 10}, budget={"n_trials": 12},
                     seed=2)
    scorer = NoisyTwoTasks(n_docs=120)
    open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    confirm_study("tie", sqlite_url, loaded=tiny, scorers=[scorer])
    with storage.open_database(sqlite_url) as db:
        view = load_study(db, "tie")
        result = pick_in_view(view, "accuracy", top=None, db=db, efficient_only=False)
        subnet_of = dict(zip(view.frame["trial"], view.frame["subnet_id"]))

        def per_doc(trial: int) -> dict[tuple[str, str], dict[int, float]]:
            rows = storage.subnet_example_scores(db, [int(subnet_of[trial])], fidelity=view.confirmed_fidelity)
            return {(r.task, r.metric): dict(zip(r.example_ids, r.example_scores)) for r in rows}

        best = per_doc(result.candidates[0].trial)
        flags = []
        for c in result.candidates[1:]:
            diffs = [paired_difference(best[k], doc) for k, doc in per_doc(c.trial).items()]
            mean = sum(d[0] for d in diffs) / len(diffs)  # equal task weights: independent parts
            se = math.sqrt(sum(d[1] ** 2 for d in diffs)) / len(diffs)
            flags.append(c.tied_with is not None)
            assert (c.tied_with is not None) == (abs(mean) <= 1.96 * se), (c.trial, mean, se)
    assert True in flags and False in flags  # the seed gives both: a tie and a clear loss


def test_max_tied_confirms_the_front_and_only_the_closest_ties(tiny: LoadedSupernet, sqlite_url: str) -> None:
    spec = make_spec(tiny.path, sqlite_url, name="cap", tasks=list(TASKS), objectives=["accuracy", "params"],
                     confirmation={"examples": 20, "max_tied": 1}, promotion={"mode": "racing", "chunk": 10},
                     budget={"n_trials": 12}, seed=2)
    scorer = NoisyTwoTasks(n_docs=80)
    open_search(spec, scorers=[scorer], loaded=tiny).optimize()
    capped = confirm_study("cap", sqlite_url, loaded=tiny, scorers=[scorer])
    assert capped.front and len(capped.tied) == 1 and capped.unconfirmed  # the seed gives several ties
    everything = confirm_study("cap", sqlite_url, max_tied=None, loaded=tiny, scorers=[scorer])
    # the spec's cap holds unless the call overrides it; an override of None keeps the spec's
    assert everything.tied == capped.tied
    uncapped = confirm_study("cap", sqlite_url, max_tied=100, loaded=tiny, scorers=[scorer])
    assert uncapped.front == capped.front and not uncapped.unconfirmed
    assert set(uncapped.tied) == set(capped.tied) | set(capped.unconfirmed)
    assert uncapped.evaluations == len(capped.unconfirmed)  # the front and the first tie come from the cache
    with storage.open_database(sqlite_url) as db:
        frame = load_study(db, "cap").frame
    subnet_of = dict(zip(frame["trial"], frame["subnet_id"]))  # trials of one sub-network share its scores
    assert set(frame[frame["accuracy@confirmed"].notna()]["subnet_id"]) == {subnet_of[t] for t in uncapped.trials}
