"""The pick page's export button in a real Chromium now that job status needs the token:
the page sends it when it polls the job, so a started export reports how it ended."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from nas.model.config import SupernetConfig
from reports.web import WebSettings, create_app
from storage import open_database

from _browser import chromium, serve
from _synthetic import write_synthetic_study

TOKEN = "browser-reliability-token"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser-jobs")
    url = f"sqlite:///{root / 'nas.db'}"
    config = SupernetConfig(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, d_ff=128)
    with open_database(url) as db:
        write_synthetic_study(db, name="demo", config=config, n_trials=12, seed=5)
    app = create_app(WebSettings(database_url=url, work_dir=root / "work", token=TOKEN))
    app.state.jobs.command = (sys.executable, "-c", "import sys; print('exported', *sys.argv[1:])")  # stand-in for `nas`
    with serve(app) as base:
        yield base


def test_export_button_polls_the_job_with_the_token(server: str) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{server}/studies/demo/pick")
        page.fill("#export-token", TOKEN)
        page.click("#pick-submit")
        page.wait_for_selector("#pick-results .export-btn", timeout=20_000)
        page.locator("#pick-results .export-btn").first.click()  # chooses the candidate for the export panel
        page.click("#export-start")
        page.wait_for_selector('#jobs .job:not([data-status="running"])', timeout=20_000)  # the jobs panel polls with the token
        job = page.locator("#jobs .job").first
        status, log = job.get_attribute("data-status"), job.locator("pre.log").text_content()
    assert status == "succeeded" and "exported export demo" in log, (status, log)
