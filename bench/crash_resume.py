"""SIGKILL a `nas search` at random points, again and again, resuming it each time.

A tiny random supernet, the cheap but real held-out-loss objective with a two-rung
fidelity ladder, SQLite in WAL mode. ``--kills`` times, a `nas search SPEC` process is
started and killed with SIGKILL after a random delay (anywhere: opening the database,
creating the study, mid-trial, mid-commit); after each kill the database file is checked
with ``PRAGMA integrity_check`` and every evaluation row seen so far is remembered. A last
run then finishes the study (a killed worker's trial goes stale and is retried).

The processes run the real CLI entry point (``nas.cli.main`` with ``search SPEC``), forked
from this already-initialised process so that each start costs milliseconds instead of
the seconds of importing torch (``--spawn`` runs ``python -c 'from nas.cli import main;
main()' search SPEC`` instead).

JSON: ``kills``, ``integrity_ok`` (every check after a kill and at the end passed),
``lost`` (evaluation rows seen after some kill but gone at the end, plus complete scored
trials without their evaluation rows), ``duplicates`` (evaluation rows sharing a cache
key), ``complete`` (the study ends with exactly the requested complete trials, in
Optuna's table and ours, and status finished), and details.

    python bench/crash_resume.py                       # 20 kills
    python bench/crash_resume.py --kills 3 --trials 8  # the short version the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nas.search.status  # noqa: E402,F401 - imported before forking: each run starts at once
import nas.search.study  # noqa: E402,F401
from nas.cli import main as nas_main  # noqa: E402
from nas.model.config import SupernetConfig  # noqa: E402
from nas.model.directory import save_supernet  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402

CONFIG = SupernetConfig(vocab_size=256, d_model=64, n_layer=4, n_head=4, n_kv_head=2, d_ff=128)
STUDY = "crash-resume"


def _write_spec(work: Path, trials: int, seed: int) -> Path:
    spec = {
        "name": STUDY, "supernet": str(work / "supernet"), "storage": f"sqlite:///{work / 'nas.db'}", "dtype": "fp32",
        "tasks": [{"name": "heldout_loss", "n_examples": 160, "seq_len": 48}],
        "objectives": ["heldout_loss", "non_embedding_params"], "sampler": "tpe", "seed": seed,
        "budget": {"n_trials": trials}, "fidelities": [24, "full"],
        "fault_tolerance": {"heartbeat_interval_s": 1, "grace_period_s": 2, "max_retry": 10},
    }
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _child(spec: Path, log: Path) -> None:
    """The forked `nas search SPEC` process (never returns)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(1)
    sys.argv = ["nas", "search", str(spec), "--quiet"]
    code = 0
    try:
        nas_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the exit status says it
        code = 1
    os._exit(code)


def _start(spec: Path, log: Path, spawn: bool) -> tuple[int, subprocess.Popen | None]:
    if spawn:
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", "from nas.cli import main; main()", "search", str(spec), "--quiet"],
                                    cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"})
        return proc.pid, proc
    pid = os.fork()
    if pid == 0:
        _child(spec, log)
    return pid, None


def _wait(pid: int, proc: subprocess.Popen | None, timeout: float | None = None) -> int | None:
    """The exit status, or None if still running after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if proc is not None:
            code = proc.poll()
            if code is not None:
                return code
        else:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _snapshot(db: Path) -> tuple[bool, set[tuple], dict[str, int]]:
    """(integrity ok, evaluation keys, trial states) read with a plain sqlite3 connection."""
    if not db.exists():
        return True, set(), {}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        ok = [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys: set[tuple] = set()
        if "nas_evaluation" in tables:
            keys = {tuple(r) for r in conn.execute(
                "SELECT s.config_hash, e.task, e.metric, e.fidelity, e.task_hash, e.harness_version, e.id "
                "FROM nas_evaluation e JOIN nas_subnet s ON s.id = e.subnet_id")}
        states: dict[str, int] = {}
        if "trials" in tables:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    return ok, keys, states


def _final_checks(db: Path, trials: int) -> dict:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        ok = [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        unique = [r for r in conn.execute("PRAGMA index_list('nas_evaluation')") if r[2]]  # (seq, name, unique, ...)
        key_columns: list[str] = []
        for index in unique:
            columns = [r[2] for r in conn.execute(f"PRAGMA index_info('{index[1]}')")]
            if len(columns) > len(key_columns):
                key_columns = columns
        cols = ", ".join(key_columns)
        duplicates = conn.execute(
            f"SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM nas_evaluation GROUP BY {cols})"
        ).fetchone()[0]
        optuna_complete = conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        ours = conn.execute(
            "SELECT t.state, t.feasible, t.fidelity, t.subnet_id FROM nas_trial t JOIN nas_study s ON s.id = t.study_id "
            "WHERE s.name = ?", (STUDY,)).fetchall()
        unscored = 0
        for state, feasible, fidelity, subnet_id in ours:
            if state == "COMPLETE" and feasible and fidelity:
                n = conn.execute("SELECT COUNT(*) FROM nas_evaluation WHERE subnet_id = ? AND fidelity = ?",
                                 (subnet_id, fidelity)).fetchone()[0]
                unscored += n == 0
        status = conn.execute("SELECT status FROM nas_study WHERE name = ?", (STUDY,)).fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    ours_complete = sum(1 for r in ours if r[0] == "COMPLETE")
    return {"integrity_ok": ok, "duplicates": int(duplicates), "unscored_complete_trials": unscored,
            "optuna_complete": optuna_complete, "our_complete": ours_complete, "status": status, "journal_mode": journal,
            "complete": optuna_complete == trials and ours_complete == trials and status == "finished"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-delay", type=float, default=0.1, help="Earliest kill, seconds after the start")
    parser.add_argument("--max-delay", type=float, default=2.5, help="Latest kill, seconds after the start")
    parser.add_argument("--spawn", action="store_true", help="Exec a fresh `nas search` process each time (slow: imports)")
    parser.add_argument("--work", type=Path, default=None, help="Directory for the database and logs (default: a temp dir)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    save_supernet(Supernet(CONFIG), work / "supernet")
    spec = _write_spec(work, args.trials, args.seed)
    db = work / "nas.db"
    log = work / "search.log"

    start = time.monotonic()
    seen: set[tuple] = set()
    integrity = True
    kills = mid_trial = finished_early = 0
    runs = []
    for _ in range(args.kills):
        delay = rng.uniform(args.min_delay, args.max_delay)
        pid, proc = _start(spec, log, args.spawn)
        code = _wait(pid, proc, timeout=delay)
        if code is None:
            _, _, states = _snapshot(db)
            os.kill(pid, signal.SIGKILL)
            _wait(pid, proc)
            kills += 1
            mid_trial += states.get("RUNNING", 0) > 0
            runs.append({"killed_after_s": round(delay, 2)})
        else:
            finished_early += 1
            runs.append({"exit": code})
        ok, keys, _ = _snapshot(db)
        integrity &= ok
        seen |= keys
    pid, proc = _start(spec, log, args.spawn)
    final_exit = _wait(pid, proc, timeout=600)
    if final_exit is None:
        os.kill(pid, signal.SIGKILL)
        _wait(pid, proc)
    seconds = time.monotonic() - start

    ok, keys, states = _snapshot(db)
    final = _final_checks(db, args.trials)
    lost_rows = len(seen - keys)
    result = {
        "kills": kills,
        "integrity_ok": bool(integrity and ok and final["integrity_ok"]),
        "lost": lost_rows + final["unscored_complete_trials"],
        "duplicates": final["duplicates"],
        "complete": bool(final["complete"] and final_exit == 0),
        "trials_requested": args.trials,
        "trials_complete": final["optuna_complete"],
        "our_trials_complete": final["our_complete"],
        "kills_with_a_trial_running": mid_trial,
        "runs_that_finished_before_their_kill": finished_early,
        "final_exit_code": final_exit,
        "study_status": final["status"],
        "journal_mode": final["journal_mode"],
        "evaluation_rows": len(keys),
        "trial_states": states,
        "seconds": round(seconds, 1),
        "mode": "spawn" if args.spawn else "fork",
    }
    if final_exit != 0:
        result["log_tail"] = log.read_text(errors="replace")[-1500:]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
