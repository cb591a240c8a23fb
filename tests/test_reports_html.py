"""The static HTML report is one self-contained file: plotly.js inline, no external scripts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.model.config import SupernetConfig
from reports.data import load_study
from reports.html import render_report
from storage import open_database

from _synthetic import write_synthetic_study

CONFIG = SupernetConfig(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, d_ff=128)


@pytest.fixture
def study_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with open_database(url) as db:
        write_synthetic_study(db, name="alpha", config=CONFIG, n_trials=30, seed=1)
        write_synthetic_study(db, name="beta", config=CONFIG, n_trials=20, seed=2, quality_shift=0.05)
    return url


def test_report_is_self_contained(study_db: str) -> None:
    with open_database(study_db) as db:
        view = load_study(db, "alpha")
        other = load_study(db, "beta")
    html = render_report(view, [other])
    # no script is loaded from anywhere: every <script> is inline
    assert re.findall(r"<script[^>]*\bsrc\s*=", html, flags=re.I) == []
    assert re.findall(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", html, flags=re.I) == []
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[-2000:] in html  # the library itself is inline
    assert "Plotly.newPlot" in html
    n_scripts = len(re.findall(r"<script", html))
    assert n_scripts >= 7  # plotly.js + one per figure
    # the front table lists exactly the front members
    table = html[html.index('id="front-table"'):]
    body = table[table.index("<tbody>"): table.index("</tbody>")]
    assert body.count("<tr>") == int(view.frame["on_front"].sum()) > 0
    for section in ("Pareto front", "Hypervolume history", "Per-task scores", "Elastic dims", "Studies compared", "Three objectives"):
        assert section in html


def test_nas_report_writes_under_the_work_dir(study_db: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["report", "alpha", "--storage", study_db, "--compare", "beta"],
                                env={"NAS_WORK_DIR": str(work)})
    assert result.exit_code == 0, result.output
    out = work / "reports" / "alpha.html"
    assert out.is_file() and out.stat().st_size > 1_000_000  # plotly.js is inline
    explicit = tmp_path / "x" / "r.html"
    result = CliRunner().invoke(app, ["report", "alpha", "--storage", study_db, "--out", str(explicit)])
    assert result.exit_code == 0 and explicit.is_file()


def test_report_of_unknown_study_is_a_clear_error(study_db: str) -> None:
    from storage import StorageError

    with open_database(study_db) as db, pytest.raises(StorageError, match="no study named 'nope'.*alpha"):
        load_study(db, "nope")
