"""Concurrent writers racing on the same unique keys: one row per key, same ids, no errors.

The processes also race on the first open of an empty database (schema creation).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import traceback
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import storage
from storage.database import _sqlite_engine

N_SUBNETS = 24
TASKS = ("piqa", "arc_easy")


def _writer(url: str, seed: int, barrier: Any, results: Any) -> None:
    ids: dict[str, int] = {}
    errors: list[str] = []
    try:
        barrier.wait(timeout=30)
        db = storage.open_database(url)  # every process races to create the schema
        sn = storage.upsert_supernet(db, content_hash="race", name="r", path="p", config={}, space={}, provenance={})
        ids["supernet"] = sn
        study = storage.create_study(db, name="race", optuna_study_name="race", spec={}, supernet_id=sn)
        ids["study"] = study
        order = list(range(N_SUBNETS))
        random.Random(seed).shuffle(order)
        for k in order:
            config = {"layers": list(range(k % 4 + 1)), "d_ff": [64 + k]}
            sub = storage.get_or_create_subnet(
                db, supernet_id=sn, config_json=json.dumps(config), config_hash=f"c{k}", n_layer=k % 4 + 1, params=k
            )
            ids[f"subnet/{k}"] = sub
            for task in TASKS:
                ids[f"eval/{k}/{task}"] = storage.record_evaluation(
                    db, storage.NewEvaluation(subnet_id=sub, task=task, metric="acc", value=k / 100, stderr=0.01, n_examples=10,
                    fidelity="n10", harness_version="v", task_hash=task, settings='{}', wall_s=0.1,
                    example_ids=list(range(10)), example_scores=[float(seed)] * 10))
            ids[f"cost/{k}"] = storage.record_cost(db, subnet_id=sub, device="cpu", metric="params", value=k, method="analytic")
            storage.record_trial(db, study_id=study, trial_number=k, subnet_id=sub, fidelity="n10", feasible=True, state="COMPLETE")
        db.close()
    except BaseException:  # noqa: BLE001 - report every failure to the parent
        errors.append(traceback.format_exc())
    results.put((ids, errors))


def _race(url: str, n_procs: int) -> None:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n_procs)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, seed, barrier, results)) for seed in range(n_procs)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [e for _, errs in outcomes for e in errs]
    assert errors == [], "\n".join(errors)
    first = outcomes[0][0]
    for ids, _ in outcomes[1:]:
        assert ids == first  # every process got the same id for every key

    with storage.open_database(url) as db:
        with db.session_scope() as session:
            counts = {
                rec.__tablename__: session.query(rec).count()
                for rec in (
                    storage.SupernetRecord, storage.StudyRecord, storage.SubnetRecord, storage.EvaluationRecord,
                    storage.ExampleScoresRecord, storage.CostRecord, storage.TrialRecord,
                )
            }
        assert counts == {
            "nas_supernet": 1,
            "nas_study": 1,
            "nas_subnet": N_SUBNETS,
            "nas_evaluation": N_SUBNETS * len(TASKS),
            "nas_example_scores": N_SUBNETS * len(TASKS),
            "nas_cost": N_SUBNETS,
            "nas_trial": N_SUBNETS,
        }
        # The per-example scores of each evaluation come whole from exactly one writer.
        scores = storage.get_example_scores(db, first["eval/0/piqa"])
        assert scores is not None and len(set(scores.scores)) == 1


@pytest.mark.postgres
def test_three_writers_on_postgresql(pg_url_factory: Any) -> None:
    _race(pg_url_factory(), 3)


def test_two_writers_on_sqlite(sqlite_url: str) -> None:
    _race(sqlite_url, 2)


def _connect_new(url: str, barrier: Any, results: Any) -> None:
    try:
        engine = _sqlite_engine(make_url(url))  # set up before the barrier: the connects collide
        barrier.wait(timeout=30)
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (i INTEGER)")
        engine.dispose()
        results.put("")
    except BaseException:  # noqa: BLE001 - report every failure to the parent
        results.put(traceback.format_exc())


def test_processes_connecting_to_one_new_sqlite_file_together(tmp_path: Any) -> None:
    """Switching a new file to WAL needs an exclusive lock, which SQLite refuses at once
    (no busy wait) while another process holds the file: every opener must still succeed.
    Without the retry this failed within the first 10 rounds in every run we tried."""
    ctx = mp.get_context("fork")
    for round_ in range(30):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_connect_new, args=(url, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        errors = [e for e in (results.get(timeout=60) for _ in procs) if e]
        for p in procs:
            p.join(timeout=30)
        assert errors == [], f"round {round_}:\n" + "\n".join(errors)
