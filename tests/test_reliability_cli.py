"""Failures a script can see (issue 16, items 5-7): exit statuses through real `nas`
processes, one-line usage errors, and commands that refuse to damage or create files.

Exit statuses: 0 success, 1 a check that fails, 2 bad input, 130 an interrupt. The slow
processes (a double Ctrl-C in a search, a failing `nas supernet verify`) start together in
one fixture and are awaited by their tests.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from evaluators.errors import EvaluatorError
from evaluators.tasks import check_task_metrics, task_metrics
from nas.cli import app
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import save_supernet
from nas.model.supernet import Supernet
from nas.search.spec import parse_spec
from storage import StorageError, open_database

from _search import make_spec, save_tiny_supernet
from _synthetic import write_synthetic_study
from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

REPO = Path(__file__).resolve().parent.parent
CONFIG = SupernetConfig(vocab_size=96, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=64)
NAS = [sys.executable, "-c", "from nas.cli import main; main()"]
#: A `nas search` whose evaluations hang (and say so in a marker file) until interrupted.
_HANGING_SEARCH = """
import pathlib, sys, time
from evaluators.heldout import HeldOutLoss
marker = pathlib.Path(sys.argv[1])
def hang(self, *args, **kwargs):
    marker.write_text("evaluating")
    time.sleep(120)
HeldOutLoss.evaluate = hang
from nas.cli import main
sys.argv = ["nas", "search", sys.argv[2], "--quiet"]
main()
"""
runner = CliRunner()


def _spawn(args: list[str], **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A finished synthetic study, a tiny supernet and the slow processes, all started at once."""
    root = tmp_path_factory.mktemp("reliable-cli")
    url = f"sqlite:///{root / 'nas.db'}"
    torch.manual_seed(0)
    digest = save_supernet(Supernet(CONFIG), root / "supernet")
    with open_database(url) as db:
        write_synthetic_study(db, name="toy", config=CONFIG, n_trials=10, seed=3, supernet_hash=digest,
                              supernet_path=str(root / "supernet"))
    # `nas supernet verify` against a transformers model the supernet no longer matches
    tokenizer = tiny_tokenizer()
    hf = tiny_llama(tokenizer)
    hf.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    drifted = tiny_supernet(hf)
    with torch.no_grad():
        next(drifted.parameters()).add_(0.05)
    save_supernet(drifted, root / "drifted", tokenizer=tokenizer)
    # a search to interrupt twice
    tiny = save_tiny_supernet(root / "tiny")
    spec = make_spec(tiny.path, f"sqlite:///{root / 'search.db'}", name="interrupted").to_dict()
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    procs = {
        "verify": _spawn([*NAS, "supernet", "verify", str(root / "drifted"), "--against", f"hf:{root / 'hf'}", "--tokens", "48"]),
        "search": _spawn([sys.executable, "-c", _HANGING_SEARCH, str(root / "marker"), str(root / "spec.yaml")]),
    }
    yield {"root": root, "url": url, "procs": procs}
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.run([*NAS, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------ 5. exit statuses
def test_pick_without_a_match_exits_1(site: dict) -> None:
    out = _run(["pick", "toy", "--max", "params=1", "--storage", site["url"]])
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "loosen" in out.stdout + out.stderr


def test_a_failing_supernet_verify_exits_1(site: dict) -> None:
    proc = site["procs"]["verify"]
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, (proc.returncode, stdout, stderr[-2000:])
    line = [json_line for json_line in stdout.splitlines() if json_line.startswith("{")][-1]
    assert '"ok": false' in line and "Traceback" not in stderr


def test_a_double_ctrl_c_exits_130(site: dict) -> None:
    proc, marker = site["procs"]["search"], site["root"] / "marker"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the search never started a trial"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # stop after this trial ...
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # ... no: abort it
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stdout[-1000:], stderr[-2000:])
    assert "Traceback" not in stderr


# -------------------------------------------------------------- 6. usage errors
@pytest.mark.parametrize("args", [
    ["pick"],                                    # missing argument
    ["pick", "toy", "--bogus"],                  # unknown option
    ["serach", "spec.yaml"],                     # unknown command
    ["pick", "toy", "--top", "0"],               # out of range
    ["results", "toy", "--format", "xml"],       # not a choice
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    out = _run(args)
    assert out.returncode == 2, (args, out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert "Traceback" not in out.stderr and len(lines) <= 4, out.stderr
    assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "), out.stderr
    assert "--help" in out.stderr


def test_user_errors_are_one_line_and_exit_2(site: dict, tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "nas.db"
    out = _run(["status", "toy", "--storage", f"sqlite:///{typo}"])
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("error: no database at") and out.stderr.count("\n") == 1, out.stderr
    assert not typo.parent.exists()  # nothing created
    out = _run(["pick", "toy", "--max", "params=1e9", "--max", "params=2e9", "--storage", site["url"]])
    assert out.returncode == 2 and "already bounded" in out.stderr and "params" in out.stderr, out.stderr


# -------------------------------------------------------- 7. files and inputs
def test_report_into_an_existing_directory(site: dict, tmp_path: Path) -> None:
    target = tmp_path / "reports"
    target.mkdir()
    result = runner.invoke(app, ["report", "toy", "--out", str(target), "--storage", site["url"]])
    assert result.exit_code == 0, result.output
    assert (target / "toy.html").stat().st_size > 100_000
    assert sorted(p.name for p in target.iterdir()) == ["toy.html"]  # no temporary file left
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = runner.invoke(app, ["report", "toy", "--out", str(blocker / "r.html"), "--storage", site["url"]])
    assert isinstance(result.exception, NasError) and "is a file" in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "reports"]


@pytest.mark.parametrize("command", [["status", "toy"], ["results", "toy"], ["report", "toy"], ["pick", "toy"],
                                     ["export", "toy", "1", "--out", "x"]])
def test_read_commands_never_create_a_database(command: list[str], tmp_path: Path) -> None:
    typo = tmp_path / "wokr" / "nas.db"
    result = runner.invoke(app, [*command, "--storage", f"sqlite:///{typo}"])
    assert isinstance(result.exception, StorageError) and "no database at" in str(result.exception), result.output
    assert list(tmp_path.iterdir()) == []


def test_read_commands_refuse_a_database_without_our_tables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = runner.invoke(app, ["status", "toy", "--storage", f"sqlite:///{empty}"])
    assert isinstance(result.exception, StorageError) and "holds no NAS results" in str(result.exception)
    with closing(sqlite3.connect(empty)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def _foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.commit()


def _tables(path: Path) -> tuple[set[str], str]:
    with closing(sqlite3.connect(path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return names, conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_search_refuses_a_sqlite_file_that_is_not_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "accounts.db"
    _foreign(foreign)
    tiny = save_tiny_supernet(tmp_path / "supernet")
    spec = make_spec(tiny.path, f"sqlite:///{foreign}", name="f", budget={"n_trials": 1}).to_dict()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["search", str(tmp_path / "spec.yaml"), "--quiet"])
    assert isinstance(result.exception, StorageError), result.output
    assert "belongs to something else" in str(result.exception) and "--init" in str(result.exception)
    assert _tables(foreign) == ({"invoices"}, "delete")  # untouched, not even switched to WAL
    result = runner.invoke(app, ["search", str(tmp_path / "spec.yaml"), "--quiet", "--init"])
    assert result.exit_code == 0, result.output
    names, _ = _tables(foreign)
    assert "invoices" in names and "nas_study" in names and "trials" in names
    with open_database(f"sqlite:///{foreign}") as db:  # ours now: opens without --init
        assert db.dialect == "sqlite"


def test_an_empty_file_or_an_optuna_database_is_fine(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    open_database(f"sqlite:///{empty}").close()
    assert "nas_study" in _tables(empty)[0]


def test_task_metrics_are_checked_before_anything_runs(tmp_path: Path) -> None:
    tiny = save_tiny_supernet(tmp_path / "supernet")
    db = tmp_path / "nas.db"
    bad = [
        ({"tasks": [{"name": "arc_easy", "metric": "acc_nrom"}], "objectives": ["accuracy", "params"]}, "did you mean acc_norm"),
        ({"tasks": ["piqa", "arc_easy"], "objectives": ["piqa/accuracy", "params"]}, "task piqa has no metric 'accuracy'"),
        ({"tasks": [{"name": "heldout_loss", "metric": "ppl"}], "objectives": ["heldout_loss", "params"]}, "reports loss"),
    ]
    for over, message in bad:
        spec = make_spec(tiny.path, f"sqlite:///{db}", name="m", **over).to_dict()
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        result = runner.invoke(app, ["search", str(tmp_path / "spec.yaml"), "--quiet"])
        assert isinstance(result.exception, EvaluatorError), (over, result.output)
        assert message in str(result.exception), str(result.exception)
        assert not db.exists()  # refused before the database was even opened


def test_task_metrics_of_the_offline_pack() -> None:
    assert task_metrics("hellaswag") == ("acc", "acc_norm")
    assert "word_perplexity" in task_metrics("wikitext") and task_metrics("blimp") == ("acc",)
    assert task_metrics("some_online_task") is None
    spec = parse_spec({"name": "s", "supernet": "x", "tasks": ["hellaswag", {"name": "wikitext"}, "blimp", "some_online_task"],
                       "objectives": ["hellaswag/acc", "wikitext/bits_per_byte", "params"], "budget": 1})
    check_task_metrics(spec.tasks, [o.metric for o in spec.objectives])  # all known, or not checkable offline
    with pytest.raises(EvaluatorError, match="objectives"):
        check_task_metrics(spec.tasks, ["wikitext/perplexity"])
