"""`nas status`, `nas results`, the HTML report and the web pages show one front, one
aggregate accuracy and one hypervolume: all four are built on nas.search.results / nas.front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import storage
from nas.cli import app as cli
from nas.model.directory import LoadedSupernet
from nas.search.status import study_status
from nas.search.study import open_search
from reports.data import load_study
from reports.html import render_report
from reports.web import WebSettings, create_app

from _search import TASKS, TwoTasks, make_spec, save_tiny_supernet


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("agree")
    tiny: LoadedSupernet = save_tiny_supernet(root / "supernet")
    url = f"sqlite:///{root / 'nas.db'}"
    spec = make_spec(tiny.path, url, name="agree", tasks=list(TASKS), objectives=["accuracy", "params"],
                     fidelities=[20, "full"], budget={"n_trials": 14}, seed=5,
                     constraints=[{"metric": "params", "max": 20_000}])
    search = open_search(spec, scorers=[TwoTasks()], loaded=tiny)
    search.optimize()
    search.close()
    yield url, root


def test_status_results_report_and_web_agree(study: tuple[str, Path]) -> None:
    url, root = study
    status = study_status("agree", url)
    res = CliRunner().invoke(cli, ["results", "agree", "--storage", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    with storage.open_database(url) as db:
        view = load_study(db, "agree")
    with TestClient(create_app(WebSettings(database_url=url, work_dir=root, token="t" * 32))) as client:
        web_front = client.get("/api/studies/agree/front").json()
        web_study = client.get("/api/studies/agree").json()

    front = {r["trial"] for r in status.front}
    assert front, "the study must have a front to compare"
    assert front == {r["trial"] for r in rows if r["pareto"]}
    assert front == set(view.front["trial"]) == {t["trial"] for t in web_front}
    assert web_study["front_size"] == len(front)
    # an infeasible or low-fidelity trial exists, so the agreement is not trivial
    assert any(not r["feasible"] for r in rows) or any(not r["full_fidelity"] for r in rows)

    accuracy = {r["trial"]: r["accuracy"] for r in status.front}
    assert accuracy == {r["trial"]: r["accuracy"] for r in rows if r["pareto"]}
    assert accuracy == {int(t): a for t, a in zip(view.front["trial"], view.front["accuracy"])}
    assert accuracy == {t["trial"]: t["accuracy"] for t in web_front}

    assert status.hypervolume > 0
    assert status.hypervolume == view.hypervolume == web_study["hypervolume"]
    assert f"{status.hypervolume:.4f}" in render_report(view)
