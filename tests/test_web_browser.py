"""A real browser (Debian's Chromium driven by playwright) clicks through a finished study:
study page -> Pareto plot with every trial -> a front member's candidate page -> pick form."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nas.model.config import SupernetConfig
from reports.web import WebSettings, create_app
from storage import open_database

from _browser import chromium, serve
from _synthetic import write_synthetic_study

N_TRIALS = 24

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{root / 'nas.db'}"
    config = SupernetConfig(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, d_ff=128)
    with open_database(url) as db:
        write_synthetic_study(db, name="demo", config=config, n_trials=N_TRIALS, seed=5)
    with serve(create_app(WebSettings(database_url=url, work_dir=root / "work", token="browser-token"))) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


def test_click_through_study_candidate_and_pick(server: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # study page: the Pareto plot holds every trial, drawn as SVG points
    page.goto(f"{server}/studies/demo")
    page.wait_for_selector('#pareto[data-ready="1"]', timeout=30_000)
    n_points = page.evaluate(
        "() => document.getElementById('pareto').data.filter(t => t.mode === 'markers')"
        ".reduce((n, t) => n + t.x.length, 0)"
    )
    assert n_points == N_TRIALS
    drawn = page.evaluate("() => document.querySelectorAll('#pareto .scatterlayer .point').length")
    assert drawn == N_TRIALS
    front = httpx.get(f"{server}/api/studies/demo/front").json()
    front_trace = page.evaluate(
        "() => document.getElementById('pareto').data.find(t => t.meta && t.meta.category === 'front').customdata"
    )
    assert sorted(front_trace) == sorted(t["trial"] for t in front)
    assert page.locator("#front-table tbody tr").count() == len(front)
    page.wait_for_selector("#hv .main-svg", timeout=20_000)
    # the objective selectors redraw the plot
    page.select_option("#x-axis", "flops_per_token")
    page.wait_for_function(
        "() => (document.getElementById('pareto').layout.xaxis.title.text || '').startsWith('FLOPs')", timeout=20_000
    )
    page.select_option("#x-axis", "params")
    page.screenshot(path=str(tmp_path / "study.png"), full_page=True)

    # a front member's candidate page
    first = page.locator("#front-table a.trial-link").first
    trial = int(first.inner_text().lstrip("#"))
    first.click()
    page.wait_for_url(f"**/studies/demo/trials/{trial}")
    page.wait_for_selector("#layers .main-svg", timeout=20_000)
    assert f"Trial #{trial}" in page.locator("h1").inner_text()
    assert page.locator("#costs-table tbody tr").count() >= 3
    assert "analytic" in page.locator("#costs-table").inner_text()
    page.screenshot(path=str(tmp_path / "candidate.png"), full_page=True)

    # pick under a parameter budget: the ranked table matches the API
    budget = sorted(t["costs"]["params"] for t in front)[len(front) // 2]
    page.goto(f"{server}/studies/demo/pick")
    page.locator("#bounds .bound-row .bound-col").first.select_option("params")
    page.locator("#bounds .bound-row .bound-max").first.fill(str(budget))
    page.click("#pick-submit")
    page.wait_for_selector("#pick-results tbody tr.pick-row", timeout=20_000)
    api = httpx.post(f"{server}/api/pick", json={"study": "demo", "max": {"params": budget}, "top": 5}).json()
    rows = page.locator("#pick-results tbody tr.pick-row")
    assert rows.count() == len(api["candidates"]) >= 1
    first_row = rows.first.inner_text()
    assert f"#{api['candidates'][0]['trial']}" in first_row
    assert page.locator("#pick-results .export-btn").count() == rows.count()
    page.screenshot(path=str(tmp_path / "pick.png"), full_page=True)

    # export without a token explains what is missing instead of failing silently
    page.evaluate("() => sessionStorage.removeItem('nasToken')")
    page.locator("#pick-results .export-btn").first.click()
    page.click("#export-start")
    page.wait_for_function("() => document.getElementById('export-status').textContent.includes('token')", timeout=10_000)
    assert errors == []
    for name in ("study.png", "candidate.png", "pick.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    shots = os.environ.get("NAS_SCREENSHOT_DIR")
    if shots:  # keep them for a human to look at
        import shutil

        for name in ("study.png", "candidate.png", "pick.png"):
            shutil.copy(tmp_path / name, Path(shots) / name)
