"""`nas status`, `nas results`, the HTML report and the web pages show one front, one
aggregate accuracy and one hypervolume: all four are built on nas.search.results / nas.front."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import storage
from evaluators.heldout import subset_indices
from evaluators.types import Fidelity, Metrics, TaskScore
from nas.cli import app as cli
from nas.model.directory import LoadedSupernet
from nas.model.subnet import SubnetConfig
from nas.search.status import study_status
from nas.search.study import open_search
from reports.data import load_study
from reports.html import render_report
from reports.web import WebSettings, create_app

from _search import make_spec, save_tiny_supernet

TASKS = ("piqa", "arc_easy")


class TwoTasks:
    """Deterministic 0/1 per-example scores on two tasks: deeper and wider sub-networks get
    more examples right (with a seeded pattern), so accuracy trades off against size."""

    tasks = TASKS
    harness_version = "synthetic-two-1"
    task_hashes = {t: f"{t}-synthetic" for t in TASKS}

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity) -> Metrics:
        size = subnet.n_layer + sum(subnet.d_ff) / 64 / len(subnet.d_ff) + sum(subnet.n_head) / 4 / len(subnet.n_head)
        scores = []
        for k, task in enumerate(TASKS):
            ids = subset_indices(40, fidelity)
            right = [1.0 if ((i * 7 + 3 * k) % 10) < 2 * size else 0.0 for i in ids]
            mean = sum(right) / len(right)
            sd = math.sqrt(sum((r - mean) ** 2 for r in right) / (len(right) - 1))
            scores.append(TaskScore(task, "acc", mean, sd / math.sqrt(len(right)), len(right), tuple(ids), tuple(right)))
        return Metrics(scores=tuple(scores), fidelity=fidelity.label, harness_version=self.harness_version,
                       task_hashes=dict(self.task_hashes), n_model_calls=1)


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
