"""Concurrent writers on the evaluation cache: do racing workers lose or duplicate results?

Each process stores ``--writes`` evaluation results; a write is ``get_or_create_subnet``
plus ``record_evaluation`` (with 16 per-example scores) for a key drawn from a pool
that every process walks in its own shuffled order, so every key is written by every
process, most of them at nearly the same time. PostgreSQL (a fresh database on
127.0.0.1:5432, dropped afterwards) gets 4 processes, SQLite (a temp file) 2.

Prints one JSON object: ``writes`` (total calls), ``rows`` (evaluation rows stored),
``duplicates`` (rows beyond one per key, plus keys for which processes got different
ids), ``lost`` (keys without a row), ``errors`` (exceptions), ``seconds`` (wall time of
the write phase, summed over engines), ``writes_per_s``, and the same per engine under
``engines``. Goal: duplicates = lost = errors = 0.

    .venv/bin/python bench/storage_concurrency.py [--writes 200] [--pg-procs 4] [--sqlite-procs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402

TASKS = ("piqa", "arc_easy")


def _keys(writes: int) -> list[tuple[int, str]]:
    """``writes`` (subnet, task) keys: writes/2 sub-networks x 2 tasks."""
    return [(k, task) for k in range(max(1, writes // len(TASKS))) for task in TASKS][:writes]


def _worker(url: str, seed: int, writes: int, barrier: Any, out: Any) -> None:
    ids: dict[str, int] = {}
    errors: list[str] = []
    elapsed = 0.0
    try:
        db = storage.open_database(url)
        sn = storage.upsert_supernet(db, content_hash="bench", name="bench", path="-", config={}, space={}, provenance={})
        keys = _keys(writes)
        random.Random(seed).shuffle(keys)
        barrier.wait(timeout=60)
        start = time.perf_counter()
        for k, task in keys:
            try:
                sub = storage.get_or_create_subnet(
                    db, supernet_id=sn, config_json=json.dumps({"layers": list(range(k % 8 + 1)), "k": k}),
                    config_hash=f"cfg{k}", n_layer=k % 8 + 1, params=1000 * k,
                )
                ids[f"{k}/{task}"] = storage.record_evaluation(
                    db, storage.NewEvaluation(subnet_id=sub, task=task, metric="acc", value=random.random(), stderr=0.01,
                    n_examples=16, fidelity="n16-s0", harness_version="bench", task_hash=task, settings='{}', wall_s=0.0,
                    example_ids=list(range(16)), example_scores=[float(seed)] * 16))
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors.append(traceback.format_exc(limit=2))
        elapsed = time.perf_counter() - start
        db.close()
    except Exception:  # noqa: BLE001
        errors.append(traceback.format_exc(limit=3))
    out.put({"ids": ids, "errors": errors, "seconds": elapsed})


def run_engine(url: str, processes: int, writes: int) -> dict[str, Any]:
    storage.open_database(url).close()  # schema first: measure writes, not migrations
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, seed, writes, barrier, out)) for seed in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    expected = {key for key in (f"{k}/{t}" for k, t in _keys(writes))}
    ids_by_key: dict[str, set[int]] = {}
    for r in results:
        for key, value in r["ids"].items():
            ids_by_key.setdefault(key, set()).add(value)
    with storage.open_database(url) as db, db.session_scope() as session:
        from sqlalchemy import func, select

        rows = session.execute(select(func.count()).select_from(storage.EvaluationRecord)).scalar_one()
        stored = {
            f"{h.removeprefix('cfg')}/{t}"
            for h, t in session.execute(
                select(storage.SubnetRecord.config_hash, storage.EvaluationRecord.task).join(
                    storage.SubnetRecord, storage.EvaluationRecord.subnet_id == storage.SubnetRecord.id
                )
            )
        }
        subnets = session.execute(select(func.count()).select_from(storage.SubnetRecord)).scalar_one()
    errors = [e for r in results for e in r["errors"]]
    seconds = max(r["seconds"] for r in results)
    total = processes * writes
    return {
        "processes": processes,
        "writes": total,
        "rows": int(rows),
        "subnet_rows": int(subnets),
        "expected_rows": len(expected),
        "duplicates": max(0, int(rows) - len(expected)) + sum(len(v) > 1 for v in ids_by_key.values()),
        "lost": len(expected - stored),
        "errors": len(errors),
        "first_error": errors[0].strip().splitlines()[-1] if errors else None,
        "seconds": round(seconds, 3),
        "writes_per_s": round(total / seconds, 1) if seconds else None,
    }


def _pg_database() -> tuple[str, Any, str] | None:
    try:
        import psycopg

        admin = psycopg.connect(host="127.0.0.1", port=5432, user="root", dbname="postgres", autocommit=True, connect_timeout=3)
    except Exception:  # noqa: BLE001
        return None
    name = f"nas_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://root@127.0.0.1:5432/{name}", admin, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200, help="writes per process")
    parser.add_argument("--pg-procs", type=int, default=4)
    parser.add_argument("--sqlite-procs", type=int, default=2)
    args = parser.parse_args()

    engines: dict[str, Any] = {}
    pg = _pg_database()
    if pg is None:
        engines["postgresql"] = {"skipped": "PostgreSQL at 127.0.0.1:5432 is unreachable"}
    else:
        url, admin, name = pg
        try:
            engines["postgresql"] = run_engine(url, args.pg_procs, args.writes)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        engines["sqlite"] = run_engine(f"sqlite:///{tmp}/bench.db", args.sqlite_procs, args.writes)

    ran = [e for e in engines.values() if "writes" in e]
    seconds = sum(e["seconds"] for e in ran)
    summary = {key: sum(e[key] for e in ran) for key in ("writes", "rows", "duplicates", "lost", "errors")}
    summary["seconds"] = round(seconds, 3)
    summary["writes_per_s"] = round(summary["writes"] / seconds, 1) if seconds else None
    summary["engines"] = engines
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
