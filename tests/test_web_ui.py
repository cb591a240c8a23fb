"""The web UI in a real browser (Debian's Chromium driven by playwright), with every request
that leaves the server refused: the pages must work offline."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nas.model.config import SupernetConfig
from reports.numbers import cell_html
from reports.web import WebSettings, assets, create_app
from reports.web.views import glance_svg
from storage import open_database

from _browser import chromium, serve
from _synthetic import write_synthetic_study

pytestmark = pytest.mark.browser

TOKEN = "ui-token-0123456789abcdef"
N_TRIALS = 30
CONFIG = SupernetConfig(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, d_ff=128)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{root / 'nas.db'}"
    supernet = root / "work" / "supernets" / "tiny"
    supernet.mkdir(parents=True)
    (supernet / "config.json").write_text(json.dumps(CONFIG.to_dict()))  # a directory the launch form may name
    with open_database(url) as db:
        write_synthetic_study(db, name="demo", config=CONFIG, n_trials=N_TRIALS, seed=5, supernet_path=str(supernet))
    app = create_app(WebSettings(database_url=url, work_dir=root / "work", token=TOKEN))
    with serve(app) as base:
        yield {"base": base, "root": root, "url": url, "app": app}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser, site: dict):  # noqa: ANN001
    """A page that may reach only the server, and records console errors and failed requests."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.errors = []
    base = site["base"]

    def only_local(route) -> None:  # noqa: ANN001
        if route.request.url.startswith(base):
            route.continue_()
        else:
            page.errors.append(f"off-site request {route.request.url}")
            route.abort()

    page.route("**/*", only_local)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()


def test_docs_render_offline(page, site: dict) -> None:  # noqa: ANN001
    page.goto(f"{site['base']}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    paths = httpx.get(f"{site['base']}/openapi.json").json()["paths"]
    n_ops = sum(len(ops) for ops in paths.values())
    assert page.locator(".swagger-ui .opblock").count() == n_ops
    assert page.errors == []


def test_one_number_renderer_in_python_and_javascript(page, site: dict) -> None:  # noqa: ANN001
    cases = [("params", 75_123_456, None), ("params", 74_048, None), ("params", 999_700, None), ("params", 512, None),
             ("flops_per_token", 1.9e8, None), ("kv_cache_bytes", 12_345_678, None), ("memory", 2.32e8, None), ("prefill_latency_ms", 12.345, None),
             ("prefill_latency_ms", 0.4123, None), ("decode_tokens_per_s", 1234.5, None), ("accuracy", 0.512345, 0.0123),
             ("hellaswag/acc_norm", 0.5, 0.01), ("other", 5000, None), ("other", 123_456, None), ("other", 1.5, None),
             ("other", -123_456, None), ("params", None, None), ("accuracy", 0.61, 0.0)]
    page.goto(f"{site['base']}/studies/demo")
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    js = page.evaluate("cases => cases.map(([c, v, se]) => numHTML(c, v, se, 1.96))", [list(c) for c in cases])
    assert js == [cell_html(v, c, se, 1.96) for c, v, se in cases]
    # the server-rendered front table and its live refresh read the same
    served = page.inner_html("#front-table tbody")
    page.evaluate("() => refreshFront()")
    refreshed = page.inner_html("#front-table tbody")
    norm = lambda h: " ".join(h.replace('"', "'").split()).replace("> <", "><")  # noqa: E731
    assert norm(refreshed) == norm(served)
    assert "e+" not in page.inner_text("#front-table")
    assert page.locator("#front-table tbody svg.glance").count() == page.locator("#front-table tbody tr").count()
    glances = [([0, 2, 3], [128, 64, 0], 6, 128), ([0, 1, 2, 3, 4, 5], [128, 96, 64, 32, 16, 1], 0, 0), ([], [], 0, 0)]
    js = page.evaluate("cases => cases.map(([l, f, n, d]) => glanceSVG({layers: l, d_ff: f}, n, d))", [list(g) for g in glances])
    assert js == [glance_svg(*g) for g in glances]
    assert page.errors == []


def test_study_page_parses_the_basic_bundle_and_fetches_the_full_one_only_for_parallel_coordinates(page, site: dict) -> None:  # noqa: ANN001
    if assets.basic_bundle_path() is None:
        if os.environ.get("CI"):
            pytest.fail("plotly.js's basic bundle is not installed: run python -m reports.web.fetch_assets (.ci/run does)")
        pytest.skip("plotly.js's basic bundle is not installed (python -m reports.web.fetch_assets)")
    scripts: list[str] = []
    page.on("request", lambda r: scripts.append(r.url.removeprefix(site["base"])) if "plotly" in r.url else None)
    page.goto(f"{site['base']}/studies/demo")
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    page.wait_for_selector("#parallel .parcoords .axis", timeout=30_000)
    # the page's own bundle is the basic one; the full one came afterwards, for the parcoords alone
    assert scripts == [assets.basic_bundle_url(), assets.PLOTLY_URL]
    assert page.locator("#pareto .scatterlayer .point").count() >= N_TRIALS // 2
    assert page.locator("#parallel .parcoords .axis").count() >= 3
    assert page.evaluate("() => Plotly === window.Plotly && fullPlotly !== null")
    # later redraws of the Pareto plot keep the instance that drew it: change the x axis
    before = page.evaluate("() => JSON.stringify(document.getElementById('pareto').layout.xaxis.title)")
    page.select_option("#x-axis", index=1)
    page.wait_for_function("t => JSON.stringify(document.getElementById('pareto').layout.xaxis.title) !== t", arg=before,
                           timeout=10_000)
    assert page.errors == []


def test_hovering_a_point_fetches_its_details(page, site: dict) -> None:  # noqa: ANN001
    page.goto(f"{site['base']}/studies/demo")
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    index = page.evaluate("() => document.getElementById('pareto').data.findIndex(t => t.meta && t.meta.category === 'front')")
    box = page.locator("#pareto .scatterlayer .trace").nth(index).locator(".point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # plotly listens on its drag layer
    page.wait_for_function("() => document.getElementById('point-details').dataset.trial !== undefined", timeout=10_000)
    trial = int(page.get_attribute("#point-details", "data-trial"))
    plotted = page.evaluate("() => document.getElementById('pareto').data.flatMap(t => t.customdata || [])")
    assert trial in plotted
    text = page.inner_text("#point-details")
    assert f"trial {trial}" in text and "params" in text
    assert page.locator("#point-details svg.glance rect").count() >= 1
    assert page.errors == []


def test_box_selection_on_the_plot_filters_the_table(page, site: dict) -> None:  # noqa: ANN001
    page.goto(f"{site['base']}/studies/demo")
    page.wait_for_selector('#trials-card[data-ready="1"]', timeout=30_000)
    assert page.get_attribute("#trials-card", "data-total") == str(N_TRIALS)
    area = page.locator("#pareto .nsewdrag").bounding_box()
    page.mouse.move(area["x"] + 2, area["y"] + 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.6, area["y"] + area["height"] - 2, steps=6)
    page.mouse.up()
    page.wait_for_selector("#selection-info:not([hidden])", timeout=10_000)
    chosen = page.evaluate(
        "() => Array.from(new Set(document.getElementById('pareto').data.flatMap(t => (t.mode === 'markers' && t.selectedpoints)"
        " ? t.selectedpoints.map(i => t.customdata[i]) : [])))"
    )
    assert 0 < len(chosen) < N_TRIALS
    page.wait_for_function(f"() => document.getElementById('trials-card').dataset.total === '{len(chosen)}'", timeout=10_000)
    shown = [int(t) for t in page.eval_on_selector_all("#trials-table tbody tr", "rows => rows.map(r => r.dataset.trial)")]
    assert sorted(shown) == sorted(chosen)
    assert "sel=" in page.url
    page.click("#clear-selection")
    page.wait_for_function(f"() => document.getElementById('trials-card').dataset.total === '{N_TRIALS}'", timeout=10_000)
    assert "sel=" not in page.url
    assert page.errors == []


def test_a_shared_url_restores_axes_filters_and_selection(page, site: dict) -> None:  # noqa: ANN001
    trials = httpx.get(f"{site['base']}/api/studies/demo/trials", params={"limit": 100}).json()["trials"]
    chosen = [t["trial"] for t in trials if t["fidelity"] == "full"][:6]
    sel = ",".join(str(t) for t in chosen)
    page.goto(f"{site['base']}/studies/demo?x=flops_per_token&y=accuracy&fid=full&feas=yes&sort=params&desc=1&sel={sel}")
    page.wait_for_selector('#trials-card[data-ready="1"]', timeout=30_000)
    assert page.input_value("#x-axis") == "flops_per_token" and page.input_value("#f-fidelity") == "full"
    assert page.input_value("#f-feasible") == "yes"
    title = page.evaluate("() => document.getElementById('pareto').layout.xaxis.title.text")
    assert title.startswith("FLOPs")
    shown = [int(t) for t in page.eval_on_selector_all("#trials-table tbody tr", "rows => rows.map(r => r.dataset.trial)")]
    params = {t["trial"]: t["costs"]["params"] for t in trials}
    assert shown == sorted(chosen, key=lambda t: (-params[t], t))
    # the plot highlights exactly the table's trials
    lit = page.evaluate(
        "() => document.getElementById('pareto').data.flatMap(t => (t.mode === 'markers' && t.selectedpoints)"
        " ? t.selectedpoints.map(i => t.customdata[i]) : [])"
    )
    assert sorted(lit) == sorted(chosen)
    # the front table follows the restored axes
    front = httpx.get(f"{site['base']}/api/studies/demo/front", params={"x": "flops_per_token", "y": "accuracy"}).json()
    page.wait_for_function(f"() => document.getElementById('front-count').textContent === '{len(front)}'", timeout=10_000)
    _shots(page, "web_study.png")
    assert page.errors == []


def test_compare_two_candidates_from_the_pick_results(page, site: dict) -> None:  # noqa: ANN001
    page.goto(f"{site['base']}/studies/demo/pick")
    page.click("#pick-submit")
    page.wait_for_selector("#pick-results tbody tr.pick-row", timeout=20_000)
    boxes = page.locator("#pick-results .cmp")
    assert boxes.count() >= 2
    chosen = [int(boxes.nth(i).get_attribute("value")) for i in (0, 1)]
    boxes.nth(0).check()
    assert page.locator("#compare-link").is_hidden()  # one is not a comparison
    boxes.nth(1).check()
    page.click("#compare-link")
    page.wait_for_url(f"**/studies/demo/compare?trials={chosen[0]},{chosen[1]}")
    heads = page.locator("#compare-summary thead th").all_inner_texts()
    assert [h.split()[0] for h in heads[1:]] == [f"#{t}" for t in chosen]
    assert page.locator("#layer-diff tbody tr").count() == CONFIG.n_layer
    assert "difference to" in page.inner_text("#compare-summary") and "±" in page.inner_text("#compare-summary")
    _shots(page, "web_compare.png")
    assert page.errors == []


#: Stands in for `nas search SPEC` in the job worker: records the spec's study as running.
FAKE_SEARCH = (
    "import sys, yaml; sys.path.insert(0, {tests!r}); from _synthetic import write_synthetic_study; "
    "from nas.model.config import SupernetConfig; from storage import open_database; "
    "spec = yaml.safe_load(open(sys.argv[2])); print('nas', *sys.argv[1:]); "
    "db = open_database(spec['storage']); "
    "write_synthetic_study(db, name=spec['name'], config=SupernetConfig(**{config!r}), n_trials=4, seed=1, status='running')"
)


def test_launch_form_creates_a_running_study(page, site: dict) -> None:  # noqa: ANN001
    jobs = site["app"].state.jobs
    config = {k: v for k, v in CONFIG.to_dict().items() if k in ("vocab_size", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff")}
    jobs.command = (sys.executable, "-c", FAKE_SEARCH.format(tests=str(Path(__file__).parent), config=config))
    try:
        page.goto(f"{site['base']}/launch")
        assert page.locator("#l-supernet option").first.inner_text().startswith("synthetic-")
        page.fill("#l-name", "launched-ui")
        page.fill("#l-token", TOKEN)
        page.fill("#l-objectives", "accuracy, nope")
        page.click("#l-submit")
        page.wait_for_selector("#launch-error", timeout=10_000)
        assert "unknown objective 'nope'" in page.inner_text("#launch-error")  # the spec parser's own message
        page.fill("#l-objectives", "accuracy, params")
        page.click("#l-add-constraint")
        page.fill(".constraint-row .c-max", "40k")
        page.click("#l-submit")
        page.wait_for_selector("#launched-link", timeout=10_000)
        spec = (site["root"] / "work" / "specs" / "launched-ui.yaml").read_text()
        assert "max: 40000.0" in spec and "sampler:" in spec
        deadline = time.monotonic() + 60
        while httpx.get(f"{site['base']}/api/studies/launched-ui").status_code == 404:
            job = jobs.list()[0]
            assert job.status == "running" and time.monotonic() < deadline, job.log_tail()
            time.sleep(0.3)
        page.click("#launched-link")
        page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
        # the study exists before its first trial runs: the page may open on "created" and its
        # live poll (every 3 s) then shows "running"
        page.wait_for_function("document.getElementById('status').textContent === 'running'", timeout=30_000)
        assert page.locator("#live").is_visible()
        assert page.errors == []
    finally:
        from reports.web.jobs import NAS_COMMAND

        jobs.command = NAS_COMMAND


def test_a_study_page_opened_before_its_first_trial_draws_then_fills(page, site: dict) -> None:  # noqa: ANN001
    """The launch page links a study as soon as it exists: its page must draw with no trial
    (no axes to choose yet) and fill in once trials arrive, without a reload by hand."""
    import storage

    with open_database(site["url"]) as db:
        demo = storage.get_study(db, "demo")
        storage.create_study(db, name="early", optuna_study_name="early", spec={**demo.spec, "name": "early"},
                             supernet_id=demo.supernet_id)
    page.goto(f"{site['base']}/studies/early")
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    assert page.locator("#x-axis option").count() == 0
    with open_database(site["url"]) as db:  # the search records its first trials
        write_synthetic_study(db, name="early", config=CONFIG, n_trials=6, seed=7, status="running",
                              supernet_path=str(site["root"] / "work" / "supernets" / "tiny"))
    page.wait_for_function("document.querySelectorAll('#x-axis option').length > 0", timeout=30_000)
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    points = page.evaluate("document.getElementById('pareto').data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)")
    assert points > 0
    assert page.errors == []


def test_pick_draws_its_budget_on_the_plot(page, site: dict) -> None:  # noqa: ANN001
    front = httpx.get(f"{site['base']}/api/studies/demo/front").json()
    budget = sorted(t["costs"]["params"] for t in front)[len(front) // 2]
    page.goto(f"{site['base']}/studies/demo/pick")
    page.locator("#bounds .bound-max").first.fill(f"{budget / 1e3:.3f}k")
    page.click("#pick-submit")
    page.wait_for_selector('#pick-plot[data-ready="1"]', timeout=20_000)
    picked = httpx.post(f"{site['base']}/api/pick", json={"study": "demo", "max": {"params": round(budget)}, "top": 5}).json()
    plot = page.evaluate("() => { const d = document.getElementById('pick-plot'); return {shapes: d.layout.shapes,"
                         " ranked: d.data.find(t => t.meta && t.meta.category === 'ranked').customdata}; }")
    assert [s["x0"] for s in plot["shapes"]] == [pytest.approx(budget, abs=1)]
    assert plot["ranked"] == [c["trial"] for c in picked["candidates"]]
    assert page.errors == []


def test_infeasible_page(page, site: dict) -> None:  # noqa: ANN001
    trials = httpx.get(f"{site['base']}/api/studies/demo/trials", params={"limit": 100}).json()["trials"]
    bad = next(t for t in trials if not t["feasible"])
    page.goto(f"{site['base']}/studies/demo/trials/{bad['trial']}")
    page.wait_for_selector("#layers .main-svg", timeout=20_000)
    text = page.inner_text("#violations")
    assert "params" in text and "exceeds the bound" in text and "%" in text
    assert page.locator("#export-card, #export-btn, #metrics").count() == 0
    assert "infeasible" in page.inner_text("h1")
    _shots(page, "web_infeasible.png")
    assert page.errors == []


#: Stands in for `nas export` in the job worker: writes an export's marker where --out says.
FAKE_EXPORT = (
    "import json, pathlib, sys; a = sys.argv[1:]; out = pathlib.Path(a[a.index('--out') + 1]); "
    "out.mkdir(parents=True, exist_ok=True); (out / 'nas_export.json').write_text(json.dumps({'format': 'hf-llama'})); "
    "(out / 'model.safetensors').write_bytes(b''); print('nas', *a); print('exported to', out)"
)


def test_pick_export_with_a_name_then_overwrite(page, site: dict) -> None:  # noqa: ANN001
    jobs = site["app"].state.jobs
    jobs.command = (sys.executable, "-c", FAKE_EXPORT)
    try:
        page.goto(f"{site['base']}/studies/demo/pick")
        page.click("#pick-submit")
        page.wait_for_selector("#pick-results tbody tr.pick-row", timeout=20_000)
        # decision first: rank, trial, config, score ± interval, tie and the action fit at 1440 px
        button = page.locator("#pick-results .export-btn").nth(1)
        box, card = button.bounding_box(), page.locator(".pick-grid > .card").first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= card["x"] + card["width"] <= 1440
        trial = int(button.get_attribute("data-trial"))
        button.click()
        assert page.input_value("#export-out") == f"demo-trial{trial}"
        page.fill("#export-out", "mine/first")
        page.fill("#export-token", TOKEN)
        page.click("#export-start")
        job = page.locator("#jobs .job").first
        page.wait_for_selector('#jobs .job[data-status="succeeded"]', timeout=30_000)
        directory = site["root"] / "work" / "exports" / "mine" / "first"
        assert (directory / "nas_export.json").is_file()
        assert job.locator(".job-dir").inner_text() == str(directory.resolve())
        snippet = job.locator("pre.load").inner_text()
        assert f"AutoModelForCausalLM.from_pretrained({str(directory.resolve())!r})" in snippet
        assert f"nas.load_exported({str(directory.resolve())!r})" in snippet
        # the same name again: the page offers to replace it instead of a dead end
        page.click("#export-start")
        page.wait_for_selector("#export-replace:not([hidden])", timeout=10_000)
        assert "overwrite" in page.inner_text("#export-status")
        page.click("#export-replace")
        page.wait_for_function("() => document.querySelectorAll('#jobs .job[data-status=\"succeeded\"]').length === 2",
                               timeout=30_000)
        logs = [j["log_tail"] for j in httpx.get(f"{site['base']}/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).json()]
        assert sum("--overwrite" in log for log in logs) == 1
        assert page.errors == []
    finally:
        from reports.web.jobs import NAS_COMMAND

        jobs.command = NAS_COMMAND


def test_cancel_a_running_export_from_the_jobs_panel(page, site: dict) -> None:  # noqa: ANN001
    jobs = site["app"].state.jobs
    jobs.command = (sys.executable, "-c", "import time; print('exporting', flush=True); time.sleep(60)")
    try:
        page.goto(f"{site['base']}/studies/demo/pick")
        page.fill("#export-token", TOKEN)
        page.click("#pick-submit")
        page.wait_for_selector("#pick-results .export-btn", timeout=20_000)
        page.fill("#export-out", "slow/one")
        page.click("#export-start")
        page.wait_for_selector('#jobs .job[data-status="running"] .cancel-job', timeout=10_000)
        page.wait_for_function(  # progress: the running job shows its last log line
            "() => ((document.querySelector('#jobs .job[data-status=\"running\"]') || {}).textContent || '').includes('exporting')",
            timeout=10_000)
        page.click('#jobs .job[data-status="running"] .cancel-job')
        page.wait_for_selector('#jobs .job[data-status="cancelled"]', timeout=15_000)
        assert all(j.status != "running" for j in jobs.list())
        assert page.errors == []
    finally:
        from reports.web.jobs import NAS_COMMAND

        jobs.command = NAS_COMMAND


def _shots(page, name: str) -> None:  # noqa: ANN001
    """Keep a screenshot for the README when NAS_SCREENSHOT_DIR is set."""
    out = os.environ.get("NAS_SCREENSHOT_DIR")
    if out:
        page.screenshot(path=str(Path(out) / name), full_page=True)
