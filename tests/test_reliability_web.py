"""Reliability and security of the web API (issue 16, items 1-4).

* exports never replace the exports root or a directory holding other exports, and an
  overwrite replaces exactly one export directory (``nas export --overwrite``);
* a study spec submitted through the API may only name files inside the allowed roots;
* job status and logs need the token; a short token is refused off loopback;
* any body the schema accepts gives a 2xx or 4xx, never a 5xx (a NaN bound was a 500),
  and schemathesis drives every operation of the app's own OpenAPI schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from typer.testing import CliRunner

from nas.cli import app as cli_app
from nas.errors import NasError
from nas.export.format import META_FILE
from nas.model.config import SupernetConfig
from nas.model.directory import save_supernet
from nas.model.supernet import Supernet
from reports.web import WebSettings, create_app
from reports.web.security import EXPORT_MARKER, MIN_TOKEN_CHARS, check_bind, export_target_problem
from storage import open_database

from _synthetic import write_synthetic_study

TOKEN = "reliability-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = SupernetConfig(vocab_size=96, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=64)
#: Examples per API operation for schemathesis (14 operations; ~10 s in all).
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reliable-web")
    torch.manual_seed(0)
    supernet_dir = root / "work" / "supernet"
    digest = save_supernet(Supernet(CONFIG), supernet_dir)
    other = root / "models" / "other-supernet"  # outside the work dir: needs --supernet-dir
    save_supernet(Supernet(CONFIG), other)
    url = f"sqlite:///{root / 'nas.db'}"
    with open_database(url) as db:
        write_synthetic_study(db, name="toy", config=CONFIG, n_trials=10, seed=3, supernet_hash=digest,
                              supernet_path=str(supernet_dir), low_fidelity_fraction=0.2)
    return {"root": root, "url": url, "work": root / "work", "supernet": supernet_dir, "other": other}


@pytest.fixture(scope="module")
def client(site: dict) -> TestClient:
    settings_ = WebSettings(database_url=site["url"], work_dir=site["work"], token=TOKEN, cache_ttl_s=0.0,
                            supernet_dirs=(site["root"] / "models",))
    with TestClient(create_app(settings_)) as c:
        c.app.state.jobs.command = (sys.executable, "-c", "import sys; print('nas', *sys.argv[1:])")  # stand-in
        yield c


def _fake_export(directory: Path, note: str = "old") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPORT_MARKER).write_text("{}")
    (directory / "weights.bin").write_text(note)


# ------------------------------------------------------------------ 1. exports
def test_export_marker_is_the_export_writers_file() -> None:
    assert EXPORT_MARKER == META_FILE


def test_api_export_never_targets_the_root_or_other_exports(client: TestClient, site: dict) -> None:
    exports = site["work"] / "exports"
    _fake_export(exports / "keep-a")
    _fake_export(exports / "group" / "keep-b")
    (exports / "notes").mkdir(parents=True, exist_ok=True)
    (exports / "notes" / "todo.txt").write_text("mine")
    before = sorted(p.relative_to(exports) for p in exports.rglob("*"))
    refused = {
        ".": "exports directory itself",
        "./": "exports directory itself",
        "group": "holds other exports",
        "group/.": "holds other exports",
        "keep-a/inside": "inside the export",
        "notes": "not an export",
    }
    for out, why in refused.items():
        res = client.post("/api/exports", json={"study": "toy", "trial": 1, "out": out, "overwrite": True}, headers=AUTH)
        assert res.status_code == 409, (out, res.status_code, res.text)
        assert why in res.json()["detail"], (out, res.text)
    assert client.app.state.jobs.list() == []  # nothing was started
    # an earlier export may be replaced (as a whole, by `nas export --overwrite`)
    res = client.post("/api/exports", json={"study": "toy", "trial": 1, "out": "keep-a", "overwrite": True}, headers=AUTH)
    assert res.status_code == 202, res.text
    assert sorted(p.relative_to(exports) for p in exports.rglob("*")) == before


def test_export_target_problem_unit(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    _fake_export(root / "a")
    assert export_target_problem(root / "new", overwrite=False, root=root) is None
    assert export_target_problem(root / "a", overwrite=True, root=root) is None
    assert "not empty" in export_target_problem(root / "a", overwrite=False, root=root)
    assert "itself" in export_target_problem(root, overwrite=True, root=root)
    assert "holds other exports" in export_target_problem(tmp_path, overwrite=True)


def test_cli_overwrite_replaces_exactly_one_export(site: dict, tmp_path: Path) -> None:
    """`nas export --overwrite` replaces the one export directory (old files gone, siblings
    untouched, no staging left behind) and refuses a directory that is not an export."""
    runner = CliRunner()
    parent = tmp_path / "exports"
    target, sibling = parent / "best", parent / "second"
    _fake_export(target, "stale")
    (target / "stale-extra.txt").write_text("from the old export")
    _fake_export(sibling, "sibling")
    result = runner.invoke(cli_app, ["export", "toy", "1", "--out", str(target), "--overwrite", "--storage", site["url"]])
    assert result.exit_code == 0, result.output
    assert (target / "model.safetensors").is_file() and not (target / "stale-extra.txt").exists()
    assert json.loads((target / META_FILE).read_text())["lineage"]["trial"] == 1
    assert (sibling / "weights.bin").read_text() == "sibling"
    assert sorted(p.name for p in parent.iterdir()) == ["best", "second"]  # no staging or old copies left

    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "thesis.tex").write_text("irreplaceable")
    result = runner.invoke(cli_app, ["export", "toy", "1", "--out", str(mine), "--overwrite", "--storage", site["url"]])
    assert isinstance(result.exception, NasError) and "not an export" in str(result.exception)
    assert (mine / "thesis.tex").read_text() == "irreplaceable"
    result = runner.invoke(cli_app, ["export", "toy", "1", "--out", str(parent), "--overwrite", "--storage", site["url"]])
    assert isinstance(result.exception, NasError) and "holds other exports" in str(result.exception)
    assert (sibling / "weights.bin").read_text() == "sibling"


# --------------------------------------------------------------- 2. spec paths
def _spec(**over: object) -> dict:
    spec = {"name": "confined", "supernet": "supernet", "tasks": ["heldout_loss"],
            "objectives": ["heldout_loss", "params"], "budget": {"n_trials": 2}, "sampler": "random"}
    spec.update(over)
    return spec


def test_launch_reads_only_inside_the_allowed_roots(client: TestClient, site: dict, tmp_path: Path) -> None:
    outside_text = tmp_path / "secret.txt"
    outside_text.write_text("not for the web " * 200)
    bad = [
        _spec(tasks=[{"name": "heldout_loss", "source": "/etc/passwd"}]),
        _spec(tasks=[{"name": "heldout_loss", "source": str(outside_text)}]),
        _spec(tasks=[{"name": "heldout_loss", "source": "../../secret.txt"}]),
        _spec(supernet=str(tmp_path)),
        _spec(supernet="../.."),
        _spec(space="/etc/hostname"),
    ]
    for spec in bad:
        res = client.post("/api/studies", json={"spec": spec}, headers=AUTH)
        assert res.status_code == 422, (spec, res.text)
        detail = res.json()["detail"]
        assert "outside the directories this server reads" in detail and str(site["work"].resolve()) in detail, detail
    # relative paths are the work dir's; an explicitly allowed supernet dir works too
    (site["work"] / "text.txt").write_text("a held-out text " * 400)
    ok = _spec(name="confined-ok", tasks=[{"name": "heldout_loss", "source": "text.txt"}])
    res = client.post("/api/studies", json={"spec": ok}, headers=AUTH)
    assert res.status_code == 202, res.text
    stored = (site["work"] / "specs" / "confined-ok.yaml").read_text()
    assert str((site["work"] / "text.txt").resolve()) in stored and str(site["supernet"].resolve()) in stored
    res = client.post("/api/studies", json={"spec": _spec(name="confined-other", supernet=str(site["other"]))}, headers=AUTH)
    assert res.status_code == 202, res.text


# ------------------------------------------------------------------ 3. tokens
def test_job_status_and_logs_need_the_token(client: TestClient) -> None:
    for url in ("/api/jobs", "/api/jobs/abc"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            res = client.get(url, headers=headers)
            assert res.status_code == 401, (url, headers, res.text)
    assert client.get("/api/jobs", headers=AUTH).status_code == 200
    assert client.get("/api/jobs/abc", headers=AUTH).status_code == 404


def test_short_tokens_are_refused_off_loopback() -> None:
    for token in ("x", "a-token", "x" * (MIN_TOKEN_CHARS - 1)):
        with pytest.raises(NasError, match=f"at least {MIN_TOKEN_CHARS} characters"):
            check_bind("0.0.0.0", token)
        check_bind("127.0.0.1", token)  # loopback: any token
    check_bind("0.0.0.0", "x" * MIN_TOKEN_CHARS)


def test_nas_serve_refuses_a_short_token_through_the_cli(site: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("nas serve started on 0.0.0.0 with a 1-character token")

    monkeypatch.setattr(uvicorn, "run", never)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--storage", site["url"]], env={"NAS_API_TOKEN": "1"})
    assert isinstance(result.exception, NasError) and "1-character" in str(result.exception)


# ---------------------------------------------------- 4. no 5xx, schemathesis
@pytest.mark.parametrize("bound", [b"NaN", b"Infinity", b"-Infinity", b"1e300000", b"-1e999"])
def test_non_finite_bounds_are_a_422(client: TestClient, bound: bytes) -> None:
    for body in (b'{"study": "toy", "max": {"params": %s}}' % bound, b'{"study": "toy", "trial": %s, "out": "x"}' % bound):
        url = "/api/pick" if b"max" in body else "/api/exports"
        res = client.post(url, content=body, headers={"content-type": "application/json", **AUTH})
        assert res.status_code == 422, (body, res.status_code, res.text)
        assert isinstance(res.json()["detail"], list) and res.json()["detail"][0]["loc"]


def test_every_operation_of_the_openapi_schema(client: TestClient, tmp_path: Path) -> None:
    """schemathesis on the app's own schema, in process (ASGI, no socket): no 5xx, every
    status code and response body as declared, schema-invalid requests rejected. Half the
    cases are pointed at the real study so that the deeper code paths run too.

    Not checked: ``positive_data_acceptance`` (a schema-valid body must be accepted),
    because the spec and export bodies are validated beyond what JSON Schema can say
    (a spec is free-form, "exactly one of trial or pick")."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")  # not ./.hypothesis in the repository
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(), known=st.booleans())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case, known: bool) -> None:
            if known:
                if "name" in (case.path_parameters or {}):
                    case.path_parameters["name"] = "toy"
                if isinstance(case.body, dict) and "study" in case.body:
                    case.body["study"] = "toy"
                    if isinstance(case.body.get("pick"), dict):
                        case.body["pick"]["study"] = "toy"
            case.call_and_validate(headers=AUTH, excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises exception groups
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert operations >= 14
    assert not failures, "\n\n".join(failures)
