"""`nas db upgrade` and `nas results`: formats, Pareto membership, bad input."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import storage
from nas.cli import app
from nas.errors import NasError
from storage import StorageError

runner = CliRunner()


def _study(url: str, spec: dict) -> None:
    """Five trials on accuracy (max: mean of piqa/acc and arc_easy/acc) vs params (min)."""
    with storage.open_database(url) as db:
        sn = storage.upsert_supernet(db, content_hash="sn", name="n", path="p", config={}, space={}, provenance={})
        sid = storage.create_study(db, name="s", optuna_study_name="s", spec=spec, supernet_id=sn)
        #        trial: (piqa, arc, params, fidelity, feasible)
        rows = {
            0: (0.6, 0.6, 100, "full", True),  # front
            1: (0.5, 0.5, 200, "full", True),  # dominated by 0
            2: (0.9, 0.9, 50, "n100-s0", True),  # would dominate everything, but low fidelity only
            3: (0.4, 0.4, 10, "full", True),  # front
            4: (0.99, 0.99, 1, "full", False),  # infeasible
        }
        for trial, (piqa, arc, params, fidelity, feasible) in rows.items():
            sub = storage.get_or_create_subnet(
                db, supernet_id=sn, config_json=json.dumps({"layers": list(range(trial + 1))}),
                config_hash=f"h{trial}", n_layer=trial + 1, params=params,
            )
            for task, value in (("piqa", piqa), ("arc_easy", arc)):
                storage.record_evaluation(db, storage.NewEvaluation(
                    subnet_id=sub, task=task, metric="acc", value=value, stderr=0.01, n_examples=100,
                    fidelity=fidelity, harness_version="v", task_hash=task, settings="{}", wall_s=1.0,
                ))
            storage.record_cost(db, subnet_id=sub, device="cpu", metric="params", value=params, method="analytic")
            storage.record_trial(db, study_id=sid, trial_number=trial, subnet_id=sub, fidelity=fidelity, feasible=feasible, state="COMPLETE")


@pytest.fixture
def spec_study(sqlite_url: str) -> str:
    from nas.search.spec import parse_spec

    spec = parse_spec({
        "name": "s", "supernet": "x", "tasks": ["piqa", "arc_easy"], "objectives": ["accuracy", "params"],
        "budget": {"n_trials": 5}, "fidelities": [100, "full"], "confirmation": None,
    })
    _study(sqlite_url, spec.to_dict())
    return sqlite_url


def test_db_upgrade(sqlite_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", sqlite_url])
    assert result.exit_code == 0, result.output
    assert f"schema at revision {storage.head_revision()}" in result.output
    with storage.open_database(sqlite_url) as db:
        assert storage.current_revision(db.engine) == storage.head_revision()


def test_results_csv_marks_pareto_members_from_the_spec(spec_study: str) -> None:
    result = runner.invoke(app, ["results", "s", "--storage", spec_study, "--format", "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame["pareto"].tolist() == [True, False, False, True, False]
    assert frame["pareto_rank"].tolist()[:2] == [0, 1] and pd.isna(frame["pareto_rank"][2])
    assert frame["accuracy"].round(3).tolist() == [0.6, 0.5, 0.9, 0.4, 0.99]
    assert {"piqa/acc", "arc_easy/acc", "params", "config.layers"} <= set(frame.columns)


def test_results_explicit_objectives_json_and_parquet(spec_study: str, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["results", "s", "--storage", spec_study, "--format", "json", "--out", str(out),
                                 "-O", "piqa/acc", "-O", "params:min"])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["pareto"] for r in records] == [True, False, False, True, False]
    assert records[0]["config.layers"] == [0]

    pq = tmp_path / "sub" / "r.parquet"
    result = runner.invoke(app, ["results", "s", "--storage", spec_study, "--format", "parquet", "--out", str(pq)])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(pq)["pareto"].tolist() == [True, False, False, True, False]


def test_results_table(spec_study: str) -> None:
    result = runner.invoke(app, ["results", "s", "--storage", spec_study], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "study s: 5 trials" in result.output and "pareto" in result.output and "accuracy ↑" in result.output


def test_results_without_objectives(sqlite_url: str) -> None:
    _study(sqlite_url, {})
    result = runner.invoke(app, ["results", "s", "--storage", sqlite_url, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "no objectives known" in result.stderr
    assert "pareto" not in pd.read_csv(io.StringIO(result.stdout)).columns


def test_results_bad_input(spec_study: str) -> None:
    result = runner.invoke(app, ["results", "nope", "--storage", spec_study])
    assert isinstance(result.exception, StorageError) and "no study named 'nope'" in str(result.exception)
    result = runner.invoke(app, ["results", "s", "--storage", spec_study, "--format", "parquet"])
    assert isinstance(result.exception, NasError) and "--out FILE.parquet" in str(result.exception)
    result = runner.invoke(app, ["results", "s", "--storage", spec_study, "-O", "latency:min"])
    assert isinstance(result.exception, NasError) and "no column 'latency'" in str(result.exception)
    result = runner.invoke(app, ["results", "s", "--storage", "mysql://x/y"])
    assert isinstance(result.exception, StorageError) and "unknown database URL scheme" in str(result.exception)
