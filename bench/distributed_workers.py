"""Several `nas worker` processes on one study; one is killed with SIGKILL mid-trial.

A tiny random supernet (6 layers, depth elastic: the per-layer parameters of layers a
shallow sub-network drops are still suggested) and the cheap but real objective
(held-out loss vs non-embedding params). The study is created in-process (as `nas
search` would), then ``--workers`` ``nas worker STUDY --storage URL`` processes share it:
3 on PostgreSQL by default, 2 on SQLite (``--backend sqlite``, one WAL file). Once the
victim has completed a trial and is running another, it gets SIGKILL. The others must
finish the study: its stale trials (the one it was scoring and the rest of its batch,
``sampler.batch``) are failed after the heartbeat grace period and re-queued
(``RetryHeartbeatStaleTrialCallback``), and the others run the retries.
``--sampler`` picks the study's sampler (nsga2, nsga3, tpe, gp, random, qmc).

JSON: ``trials_requested``, ``trials_complete``, ``duplicate_evaluations`` (a sub-network
scored by the model more than once at one fidelity, across all workers: read from the
trials' own records of model calls), ``duplicate_rows`` (evaluation rows sharing a cache
key: the unique keys make this 0 by construction), ``lost`` (requested trials that did not
complete, plus killed trials whose retry did not complete), ``crashed_workers`` (workers
other than the victim that exited non-zero), ``unexplained_failures`` (FAIL trials other
than the killed ones: those the victim held RUNNING when it died), ``seconds`` (workers started to study finished), and details.

    python bench/distributed_workers.py --sampler nsga2                    # PostgreSQL, 3 workers
    python bench/distributed_workers.py --sampler tpe --backend sqlite     # SQLite, 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import optuna
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import storage  # noqa: E402
from nas.model.config import SupernetConfig  # noqa: E402
from nas.model.directory import load_supernet, save_supernet  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402
from nas.search.spec import parse_spec  # noqa: E402
from nas.search.study import open_search  # noqa: E402

CONFIG = SupernetConfig(vocab_size=256, d_model=64, n_layer=6, n_head=4, n_kv_head=2, d_ff=128)
SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random", "qmc")


def _fresh_database(host: str, port: int, user: str) -> tuple[str, str]:
    import psycopg

    name = f"nas_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def _drop_database(host: str, port: int, user: str, name: str) -> None:
    import psycopg

    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--workers", type=int, default=None, help="Worker processes (default: 3 on PostgreSQL, 2 on SQLite)")
    parser.add_argument("--storage", default=None, help="Database URL (default: a fresh database, dropped at the end)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the database")
    args = parser.parse_args()
    workers = args.workers or (3 if args.backend == "postgresql" else 2)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    created = None
    url = args.storage
    if url is None and args.backend == "postgresql":
        created, url = _fresh_database(args.pg_host, args.pg_port, args.pg_user)
    elif url is None:
        url = f"sqlite:///{work / 'nas.db'}"
    torch.manual_seed(args.seed)
    save_supernet(Supernet(CONFIG), work / "supernet")
    loaded = load_supernet(work / "supernet", dtype="fp32")
    study = "distributed"
    spec = parse_spec({
        "name": study, "supernet": str(work / "supernet"), "storage": url, "dtype": "fp32",
        "tasks": [{"name": "heldout_loss", "n_examples": 160, "seq_len": 48}],
        "objectives": ["heldout_loss", "non_embedding_params"], "sampler": args.sampler, "seed": args.seed,
        "budget": {"n_trials": args.trials}, "fidelities": [24, "full"],
        "fault_tolerance": {"heartbeat_interval_s": 1, "grace_period_s": 3, "max_retry": 3},
    })
    search = open_search(spec, loaded=loaded)
    search.close()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from nas.cli import main; main()", "worker", study, "--storage", url, "--quiet"]
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(workers)]
    victim = procs[0]
    victim_id = f"{socket.gethostname()}:{victim.pid}"
    killed_trials: list[int] = []
    killed_at = None
    try:
        while not killed_trials and time.monotonic() - start < 600:
            trials = _trials(url, study)
            mine = [t for t in trials if t.user_attrs.get("worker") == victim_id]
            running = [t for t in mine if t.state.name == "RUNNING"]
            if running and any(t.state.name == "COMPLETE" for t in mine):
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_at = round(time.monotonic() - start, 1)
                # what it held when it died (read again: it may have asked more of its batch meanwhile)
                killed_trials = [t.number for t in _trials(url, study)
                                 if t.user_attrs.get("worker") == victim_id and t.state.name == "RUNNING"]
            elif all(p.poll() is not None for p in procs[1:]):
                break
            time.sleep(0.05)
        outputs = []
        for p in procs[1:]:
            out, _ = p.communicate(timeout=900)
            outputs.append((p.returncode, out.decode(errors="replace")[-800:]))
        seconds = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    trials = _trials(url, study)
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    fresh: Counter = Counter()  # (config hash, fidelity) -> trials that ran the model for it
    for t in trials:
        scoring = t.user_attrs.get("scoring") or {}
        if scoring.get("model_calls", 0) > 0 and t.state.name == "COMPLETE":
            fresh[(t.user_attrs.get("config_hash"), t.user_attrs.get("fidelity"))] += 1
    duplicates = sum(n - 1 for n in fresh.values() if n > 1)
    failed = [t for t in trials if t.state.name == "FAIL"]
    retried_ok = {t.system_attrs.get("failed_trial") for t in complete if t.system_attrs.get("failed_trial") is not None}
    lost = max(0, args.trials - len(complete)) + sum(1 for t in failed if t.number not in retried_ok
                                                      and t.system_attrs.get("failed_trial") not in retried_ok)
    unexplained = [t.number for t in failed if t.number not in killed_trials]

    db = storage.open_database(url)
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT subnet_id, task, metric, fidelity, task_hash, "
            "harness_version FROM nas_evaluation) AS keys) FROM nas_evaluation"
        ).scalar()
        n_rows = conn.exec_driver_sql("SELECT COUNT(*) FROM nas_evaluation").scalar()
    our_complete = sum(1 for r in storage.list_trials(db, study) if r.state == "COMPLETE")
    status = storage.get_study(db, study).status
    db.close()
    if created and not args.keep:
        _drop_database(args.pg_host, args.pg_port, args.pg_user, created)

    result = {
        "sampler": args.sampler,
        "backend": args.backend,
        "workers": workers,
        "trials_requested": args.trials,
        "trials_complete": len(complete),
        "duplicate_evaluations": duplicates,
        "duplicate_rows": int(rows),
        "lost": lost,
        "crashed_workers": sum(1 for code, _ in outputs if code != 0),
        "unexplained_failures": len(unexplained),
        "seconds": round(seconds, 1),
        "killed_trials": killed_trials,
        "killed_at_s": killed_at,
        "retry_of_killed_completed": bool(killed_trials) and set(killed_trials) <= retried_ok,
        "trial_states": dict(states),
        "evaluation_rows": int(n_rows),
        "trial_records_complete": our_complete,
        "study_status": status,
        "survivor_exit_codes": [code for code, _ in outputs],
    }
    if any(code != 0 for code, _ in outputs):
        result["survivor_output_tail"] = [out for _, out in outputs]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
