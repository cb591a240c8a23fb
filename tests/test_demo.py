"""`nas demo --quick`: the main job end to end on a tiny supernet (real lm-eval tasks, SQLite, report)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.paths import data_dir

pytestmark = pytest.mark.skipif(data_dir() is None, reason="needs the offline benchmark data (NAS_DATA_DIR)")


def test_quick_demo_end_to_end_and_resume(tmp_path):
    env_cmd = [sys.executable, "-c", "from nas.cli import main; main()", "demo", "--quick", "--work", str(tmp_path)]
    first = subprocess.run(env_cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    timings = json.loads(out.strip().splitlines()[-1])
    assert set(timings["wall_time"]) == {"import_s", "search_s", "confirm_s", "report_s", "total_s"}
    assert "kendall_tau_search_vs_confirm" in timings
    assert timings["complete"] == 4 and 1 <= timings["front_size"] <= timings["rows_shown"]
    assert "Pareto front of demo-quick" in out
    assert "picks with params <=" in out and "nas serve" in out and "nas export demo-quick" in out

    # the database holds every trial, linked to sub-networks and scored on the three tasks
    from storage import open_database, study_results

    db = open_database(f"sqlite:///{tmp_path / 'nas.db'}")
    try:
        frame = study_results(db, "demo-quick")
    finally:
        db.close()
    assert len(frame) == 4
    for task in ("hellaswag", "arc_easy", "piqa"):
        assert frame[f"{task}/acc_norm"].notna().all()
        assert frame[f"{task}/acc_norm"].between(0, 1).all()

    # a self-contained HTML report (plotly inline, no script from the network)
    report = (tmp_path / "reports" / "demo-quick.html").read_text()
    assert "Plotly" in report and "<script src=\"http" not in report

    # re-running continues the same study: nothing new to evaluate
    second = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["complete"] == 4
    assert again["evaluations"] == 0
    assert "already there" in second.stdout

    # a capped run stops the search at its time cap, says so, and still confirms and reports
    capped = subprocess.run(env_cmd + ["--trials", "40", "--search-time", "1s"], capture_output=True, text=True, timeout=600)
    assert capped.returncode == 0, capped.stderr[-2000:]
    result = json.loads(capped.stdout.strip().splitlines()[-1])
    assert result["search_capped"] is True and result["n_trials"] == 40
    assert 4 <= result["complete"] < 40  # the earlier trials stay; 36 more never fit in a second
    text = " ".join(capped.stdout.split())  # the console wraps long lines
    assert "stopped at its" in text and "run the demo again to continue the study" in text

    bad = subprocess.run(env_cmd + ["--search-time", "soon"], capture_output=True, text=True, timeout=120)
    message = " ".join(bad.stderr.replace("│", " ").split())
    assert bad.returncode == 2 and "--search-time 'soon' is not a duration" in message and "0 for no cap" in message


def test_quick_demo_with_heal_searches_the_healed_supernet(tmp_path):
    """`--heal`: the supernet is healed first and searched as its own study; with no unhealed
    study yet to compare with, the demo says how to make one before the compare command."""
    cmd = [sys.executable, "-c", "from nas.cli import main; main()", "demo", "--quick", "--heal", "--trials", "2",
           "--work", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["study"] == "demo-quick-healed" and result["complete"] == 2 and result["wall_time"]["heal_s"] > 0
    text = " ".join(run.stdout.split())  # the console wraps long lines
    assert f"unhealed: .venv/bin/nas demo --work {tmp_path} --quick" in text
    assert "nas report demo-quick-healed --compare demo-quick" in text

    from nas.model.directory import load_supernet

    healed = load_supernet(tmp_path / "demo-quick-supernet-healed", verify=False)
    assert healed.provenance["heal"]["parent_hash"] == load_supernet(tmp_path / "demo-quick-supernet").content_hash
