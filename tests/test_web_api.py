"""The web app's pages and JSON API: shapes, auth, validation, confined paths, jobs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from fastapi import HTTPException
from fastapi.testclient import TestClient

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import save_supernet
from nas.model.supernet import Supernet
from reports.web import WebSettings, create_app
from reports.web.security import check_bind, confine, is_loopback
from storage import open_database

from _synthetic import write_synthetic_study

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = SupernetConfig(vocab_size=96, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=64)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("web")
    torch.manual_seed(0)
    supernet_dir = root / "work" / "supernet"
    digest = save_supernet(Supernet(CONFIG), supernet_dir)
    url = f"sqlite:///{root / 'nas.db'}"
    with open_database(url) as db:
        write_synthetic_study(db, name="toy", config=CONFIG, n_trials=14, seed=3, supernet_hash=digest,
                              supernet_path=str(supernet_dir), low_fidelity_fraction=0.2)
        write_synthetic_study(db, name="toy2", config=CONFIG, n_trials=8, seed=4, supernet_hash=digest,
                              supernet_path=str(supernet_dir))
    return {"root": root, "url": url, "work": root / "work", "supernet": supernet_dir}


@pytest.fixture(scope="module")
def client(site: dict) -> TestClient:
    settings = WebSettings(database_url=site["url"], work_dir=site["work"], token=TOKEN, cache_ttl_s=0.0)
    with TestClient(create_app(settings)) as c:
        yield c


def _wait(client: TestClient, job_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=AUTH).json()
        if job["status"] != "running":
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


# ----------------------------------------------------------------------- pages
def test_pages_render(client: TestClient) -> None:
    html = {"accept": "text/html"}
    page = client.get("/", headers=html)
    assert page.status_code == 200 and 'href="/studies/toy"' in page.text and "toy2" in page.text
    study = client.get("/studies/toy", headers=html).text
    assert 'id="pareto"' in study and 'id="x-axis"' in study and 'id="front-table"' in study and 'id="hv"' in study
    front = client.get("/api/studies/toy/front").json()
    assert study.count('class="trial-link"') == len(front) > 0
    cand = client.get(f"/studies/toy/trials/{front[0]['trial']}", headers=html).text
    assert "Lineage" in cand and "harness version" in cand and "analytic" in cand and "with standard error" in cand
    assert client.get("/studies/toy/pick", headers=html).text.count('class="bound-row"') >= 1
    compare = client.get("/compare?study=toy&study=toy2", headers=html).text
    assert 'id="overlay"' in compare
    report = client.get("/studies/toy/report.html")
    assert report.status_code == 200 and "<script src" not in report.text
    assert client.get("/static/plotly.min.js").headers["content-type"].startswith("application/javascript")
    missing = client.get("/studies/nope", headers=html)
    assert missing.status_code == 404 and "no study named" in missing.text


# ------------------------------------------------------------------------- API
def test_api_studies_trials_front_candidate(client: TestClient) -> None:
    studies = {s["name"]: s for s in client.get("/api/studies").json()}
    assert set(studies) == {"toy", "toy2"}
    toy = studies["toy"]
    assert toy["n_trials"] == 14 and toy["n_trials_target"] == 14 and toy["front_size"] > 0 and toy["hypervolume"] > 0
    detail = client.get("/api/studies/toy").json()
    assert detail["top_fidelity"] == "full" and "params" in detail["columns"]["costs"]
    page = client.get("/api/studies/toy/trials", params={"offset": 5, "limit": 5}).json()
    assert page["total"] == 14 and [t["trial"] for t in page["trials"]] == [5, 6, 7, 8, 9]
    front = client.get("/api/studies/toy/front").json()
    assert all(t["on_front"] and t["feasible"] and t["full_fidelity"] for t in front)
    params = [t["costs"]["params"] for t in front]
    assert params == sorted(params)
    cand = client.get(f"/api/studies/toy/trials/{front[0]['trial']}").json()
    assert cand["evaluations"]["full"][0]["stderr"] > 0
    assert {c["method"] for c in cand["cost_rows"]} >= {"analytic", "predicted"}
    assert cand["lineage"]["supernet_hash"] == detail["supernet_hash"] and cand["lineage"]["harness_versions"]
    fig = client.get("/api/studies/toy/figures/pareto", params={"x": "params", "y": "accuracy"}).json()
    assert sum(len(t["x"]) for t in fig["data"] if t["mode"] == "markers") == 14
    for kind in ("pareto3d", "hypervolume", "tasks", "parallel"):
        assert client.get(f"/api/studies/toy/figures/{kind}").status_code == 200
    assert client.get("/api/studies/toy/figures/pie").status_code == 404
    assert client.get("/api/studies/toy/figures/pareto", params={"x": "nope"}).status_code == 422
    assert client.get("/api/studies/nope").status_code == 404
    assert client.get("/api/studies/toy/trials/999").status_code == 404
    assert client.get("/api/compare/figure", params={"study": ["toy", "toy2"]}).status_code == 200
    schema = client.get("/openapi.json").json()
    for path in ("/api/studies", "/api/studies/{name}/front", "/api/pick", "/api/exports", "/api/jobs/{job_id}"):
        assert path in schema["paths"]


def test_page_size_limits(client: TestClient) -> None:
    assert client.get("/api/studies/toy/trials", params={"limit": 501}).status_code == 422
    assert client.get("/api/studies/toy/trials", params={"limit": 0}).status_code == 422
    assert client.get("/api/studies/toy/trials", params={"offset": -1}).status_code == 422
    assert client.get("/api/studies/toy/trials", params={"only": "all;drop"}).status_code == 422
    big = client.post("/api/pick", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_pick_api_ranks_within_bounds(client: TestClient) -> None:
    front = client.get("/api/studies/toy/front").json()
    budget = sorted(t["costs"]["params"] for t in front)[len(front) // 2]
    res = client.post("/api/pick", json={"study": "toy", "max": {"params": budget}, "top": 3})
    assert res.status_code == 200, res.text
    body = res.json()
    cands = body["candidates"]
    assert 1 <= len(cands) <= 3 and [c["rank"] for c in cands] == list(range(1, len(cands) + 1))
    assert all(c["values"]["params"] <= budget for c in cands)
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True)
    best_within = max(t["accuracy"] for t in front if t["costs"]["params"] <= budget)
    assert scores[0] == pytest.approx(best_within)
    none = client.post("/api/pick", json={"study": "toy", "max": {"params": 1}}).json()
    assert none["candidates"] == [] and "loosen" in none["message"]


def test_validation_errors_are_422(client: TestClient) -> None:
    bad = [
        {"study": "toy", "max": {"params": 1}, "typo": 1},
        {"study": "toy", "top": 0},
        {"study": "../etc", "max": {}},
        {"study": "toy", "max": {"params": "lots"}},
        {"study": "toy", "max": {"pa rams": 1}},
    ]
    for body in bad:
        assert client.post("/api/pick", json=body).status_code == 422, body
    assert client.post("/api/pick", json={"study": "toy", "metric": "nope"}).status_code == 422
    assert client.post("/api/pick", json={"study": "toy", "max": {"nope": 3}}).status_code == 422
    exports = [
        {"study": "toy", "out": "x"},  # neither trial nor pick
        {"study": "toy", "trial": 1, "pick": {"study": "toy"}, "out": "x"},  # both
        {"study": "toy", "trial": -1, "out": "x"},
        {"study": "toy", "trial": 1, "out": ""},
        {"study": "toy", "trial": 1, "out": "x", "dtype": "fp16"},
    ]
    for body in exports:
        assert client.post("/api/exports", json=body, headers=AUTH).status_code == 422, body
    spec = client.post("/api/studies", json={"spec": {"name": "s", "supernet": "x", "tasks": ["heldout_loss"],
                                                      "budget": 2, "sampler": "simulated-annealing"}}, headers=AUTH)
    assert spec.status_code == 422 and "sampler" in spec.text
    assert client.post("/api/studies", json={"nospec": {}}, headers=AUTH).status_code == 422


def test_mutating_routes_need_the_token(client: TestClient) -> None:
    routes = [
        ("post", "/api/studies", {"spec": {}}),
        ("post", "/api/exports", {"study": "toy", "trial": 1, "out": "x"}),
        ("delete", "/api/jobs/abc", None),
    ]
    for method, url, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}):
            res = client.request(method, url, json=body, headers=headers)
            assert res.status_code == 401, (method, url, headers, res.text)
            assert res.headers["www-authenticate"] == "Bearer"
    assert client.delete("/api/jobs/abc", headers=AUTH).status_code == 404  # authorised, unknown job


def test_export_paths_are_confined(client: TestClient, site: dict) -> None:
    outside = site["root"] / "outside"
    outside.mkdir(exist_ok=True)
    exports = site["work"] / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    link = exports / "link"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    for out in ("../evil", "/tmp/evil", "a/../../evil", "..", "./../evil", "a/b/../../../evil", "C:/evil", "link/evil",
                "..\\evil", "ok/\x00"):
        res = client.post("/api/exports", json={"study": "toy", "trial": 1, "out": out}, headers=AUTH)
        assert res.status_code in (400, 422), (out, res.status_code, res.text)
    assert list(outside.iterdir()) == []
    assert not (site["root"] / "evil").exists() and not Path("/tmp/evil").exists()


def test_confine_unit(tmp_path: Path) -> None:
    assert confine(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    for bad in ("../x", "/abs", "a/../../x", ""):
        with pytest.raises(HTTPException):
            confine(tmp_path, bad)


def test_bind_requires_token_off_loopback() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.9"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "example.org", "::"):
        assert not is_loopback(host)
        with pytest.raises(NasError, match="NAS_API_TOKEN"):
            check_bind(host, None)
        check_bind(host, "a-token-of-16-chars")


def test_launch_study_runs_search_in_a_worker(client: TestClient, site: dict) -> None:
    jobs = client.app.state.jobs
    jobs.command = (sys.executable, "-c", "import sys; print('nas', *sys.argv[1:])")  # stand-in for `nas`
    spec = {"name": "launched", "supernet": str(site["supernet"]), "tasks": ["heldout_loss"],
            "objectives": ["heldout_loss", "params"], "budget": {"n_trials": 3}, "sampler": "random"}
    res = client.post("/api/studies", json={"spec": spec}, headers=AUTH)
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["study"] == "launched"
    job = _wait(client, body["job"]["id"])
    assert job["status"] == "succeeded"
    spec_file = site["work"] / "specs" / "launched.yaml"
    assert f"nas search {spec_file}" in job["log_tail"]
    text = spec_file.read_text()
    assert "storage: sqlite:///" in text and (spec_file.stat().st_mode & 0o077) == 0
    other_db = dict(spec, storage="sqlite:////tmp/elsewhere.db")
    assert client.post("/api/studies", json={"spec": other_db}, headers=AUTH).status_code == 422
    missing = dict(spec, supernet=str(site["root"] / "no-such-supernet"))
    assert client.post("/api/studies", json={"spec": missing}, headers=AUTH).status_code == 422
    assert any(j["id"] == job["id"] for j in client.get("/api/jobs", headers=AUTH).json())
    from reports.web.jobs import NAS_COMMAND

    jobs.command = NAS_COMMAND


def test_export_job_writes_a_model(client: TestClient, site: dict) -> None:
    front = client.get("/api/studies/toy/front").json()
    # a sub-network with per-layer sizes (nas-dense format: no transformers import in the worker)
    trial = next((t["trial"] for t in front if ".." in t["summary"]), front[0]["trial"])
    res = client.post("/api/exports", json={"study": "toy", "trial": trial, "out": "toy/best"}, headers=AUTH)
    assert res.status_code == 202, res.text
    assert res.json()["out"] == "toy/best"
    job = _wait(client, res.json()["job"]["id"])
    assert job["status"] == "succeeded", job["log_tail"]
    out = site["work"] / "exports" / "toy" / "best"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    again = client.post("/api/exports", json={"study": "toy", "trial": trial, "out": "toy/best"}, headers=AUTH)
    assert again.status_code == 409
    unknown = client.post("/api/exports", json={"study": "toy", "trial": 999, "out": "toy/none"}, headers=AUTH)
    assert unknown.status_code == 404
    # by pick: the export takes the pick's first candidate
    budget = front[-1]["costs"]["params"]
    best = client.post("/api/pick", json={"study": "toy", "max": {"params": budget}}).json()["candidates"][0]
    res = client.post("/api/exports", headers=AUTH,
                      json={"study": "toy", "pick": {"study": "toy", "max": {"params": budget}}, "out": "toy/picked"})
    assert res.status_code == 202 and res.json()["trial"] == best["trial"]
    client.delete(f"/api/jobs/{res.json()['job']['id']}", headers=AUTH).raise_for_status()
    assert _wait(client, res.json()["job"]["id"])["status"] in ("cancelled", "succeeded")


def test_live_view_sees_new_trials(client: TestClient, site: dict) -> None:
    import storage

    before = client.get("/api/studies/toy2").json()["n_trials"]
    with open_database(site["url"]) as db:
        study = storage.get_study(db, "toy2")
        sub = storage.list_trials(db, "toy2")[0].subnet_id
        storage.record_trial(db, study_id=study.id, trial_number=100, subnet_id=sub, fidelity=None, feasible=True, state="RUNNING")
    assert client.get("/api/studies/toy2").json()["n_trials"] == before + 1


def test_nas_serve_refuses_the_network_without_a_token(site: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from nas.cli import app
    from reports.web import settings_from_env

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--storage", site["url"]], env={"NAS_API_TOKEN": ""})
    assert isinstance(result.exception, NasError) and "NAS_API_TOKEN" in str(result.exception)
    monkeypatch.delenv("NAS_API_TOKEN", raising=False)
    settings, generated = settings_from_env(site["url"], site["work"], host="127.0.0.1")
    assert generated and len(settings.token) >= 24
