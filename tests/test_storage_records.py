"""Round trips of every record type, unique-key behaviour and the evaluation cache, on both engines."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

import storage
from storage import Database, StorageError


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = storage.open_database(db_url)
    yield database
    database.close()


def _supernet(db: Database, content_hash: str = "sn-a", **over: Any) -> int:
    fields: dict[str, Any] = {
        "content_hash": content_hash,
        "name": "tiny",
        "path": "/models/tiny",
        "config": {"n_layer": 4, "d_model": 64, "vocab": 256},
        "space": {"n_layer_choices": [2, 3, 4]},
        "provenance": {"imported_from": "SmolLM2-135M", "train_tokens": 0, "wall_s": 1.5},
    }
    fields.update(over)
    return storage.upsert_supernet(db, **fields)


def _subnet(db: Database, supernet_id: int, layers: tuple[int, ...] = (0, 1, 3), params: int = 3_000_000_000) -> int:
    config_json = json.dumps({"d_ff": [128] * len(layers), "layers": list(layers)}, sort_keys=True)
    return storage.get_or_create_subnet(
        db,
        supernet_id=supernet_id,
        config_json=config_json,
        config_hash="cfg-" + "-".join(map(str, layers)),
        n_layer=len(layers),
        params=params,
    )


SETTINGS = '{"dtype":"bf16","max_length":2048,"softmax":"bf16"}'
EVAL: dict[str, Any] = {
    "task": "piqa",
    "metric": "acc",
    "value": 0.625,
    "stderr": 0.0125,
    "n_examples": 100,
    "fidelity": "n100-s0",
    "harness_version": "0.4.8",
    "task_hash": "th-piqa",
    "settings": SETTINGS,
    "wall_s": 2.5,
}


def _eval(db: Database, subnet_id: int, **over: Any) -> int:
    return storage.record_evaluation(db, storage.NewEvaluation(subnet_id=subnet_id, **{**EVAL, **over}))


def _is_utc(ts: dt.datetime) -> bool:
    return ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)


def test_supernet_round_trip_and_upsert_keeps_id(db: Database) -> None:
    sid = _supernet(db)
    row = storage.get_supernet(db, "sn-a")
    assert row is not None and row.id == sid
    assert row.config == {"n_layer": 4, "d_model": 64, "vocab": 256}
    assert row.space == {"n_layer_choices": [2, 3, 4]}
    assert row.provenance["imported_from"] == "SmolLM2-135M"
    assert _is_utc(row.created_at)
    # Same content hash: same id, descriptive fields replaced (the checkpoint moved).
    assert _supernet(db, path="/moved/tiny", name="tiny-v2") == sid
    moved = storage.get_supernet(db, "sn-a")
    assert moved is not None and (moved.path, moved.name) == ("/moved/tiny", "tiny-v2")
    assert _supernet(db, "sn-b") != sid
    assert [r.content_hash for r in storage.list_supernets(db)] == ["sn-a", "sn-b"]
    assert storage.get_supernet(db, "missing") is None


def test_subnet_unique_per_supernet(db: Database) -> None:
    a, b = _supernet(db, "sn-a"), _supernet(db, "sn-b")
    sub = _subnet(db, a)
    assert _subnet(db, a) == sub  # get, not create
    assert _subnet(db, b) != sub  # same config hash on another supernet is another row
    row = storage.get_subnet(db, sub)
    assert row is not None
    assert (row.supernet_id, row.config_hash, row.n_layer) == (a, "cfg-0-1-3", 3)
    assert row.params == 3_000_000_000  # above 2**31: stored as BIGINT
    assert json.loads(row.config_json)["layers"] == [0, 1, 3]
    found = storage.find_subnet(db, supernet_hash="sn-a", config_hash="cfg-0-1-3")
    assert found == row
    assert storage.find_subnet(db, supernet_hash="sn-a", config_hash="nope") is None
    with pytest.raises(StorageError, match="supernet id 999 does not exist"):
        _subnet(db, 999)


def test_evaluation_round_trip_with_example_scores(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    ids = [f"piqa-{i}" for i in range(5)]
    scores = [1.0, 0.0, 1.0, 0.25, -3.5]
    eid = _eval(db, sub, example_ids=ids, example_scores=scores)
    rows = storage.find_evaluations(
        db, supernet_hash="sn-a", config_hash="cfg-0-1-3", fidelity="n100-s0",
        harness_version="0.4.8", task_hashes={"piqa": "th-piqa"}, settings={"piqa": SETTINGS},
    )
    assert len(rows) == 1
    row = rows[0]
    assert row.id == eid and row.subnet_id == sub and row.config_hash == "cfg-0-1-3"
    assert (row.task, row.metric, row.value, row.stderr, row.n_examples) == ("piqa", "acc", 0.625, 0.0125, 100)
    assert (row.fidelity, row.harness_version, row.task_hash, row.wall_s) == ("n100-s0", "0.4.8", "th-piqa", 2.5)
    assert row.has_example_scores and _is_utc(row.created_at)
    stored = storage.get_example_scores(db, eid)
    assert stored is not None
    assert stored.example_ids == tuple(ids)
    assert stored.scores == tuple(scores)  # exactly representable in float32
    # A metric without stderr and without per-example scores.
    eid2 = _eval(db, sub, metric="acc_norm", stderr=None)
    assert storage.get_example_scores(db, eid2) is None
    listed = storage.list_evaluations(db, sub)
    assert [(r.metric, r.stderr, r.has_example_scores) for r in listed] == [
        ("acc", 0.0125, True),
        ("acc_norm", None, False),
    ]


def test_example_scores_pack_float32_and_integer_ids(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    values = [0.1 * i for i in range(1000)]
    eid = _eval(db, sub, example_ids=list(range(1000)), example_scores=values)
    stored = storage.get_example_scores(db, eid)
    assert stored is not None and stored.example_ids == tuple(range(1000))
    assert max(abs(a - b) for a, b in zip(stored.scores, values)) < 1e-4


@pytest.mark.parametrize(
    "change",
    [
        {"task": "arc_easy"},
        {"metric": "acc_norm"},
        {"fidelity": "full"},
        {"task_hash": "th-piqa-v2"},
        {"harness_version": "0.4.9"},
        {"settings": '{"dtype":"fp32","max_length":2048,"softmax":"fp32"}'},
    ],
    ids=lambda c: next(iter(c)),
)
def test_evaluation_unique_key(db: Database, change: dict[str, str]) -> None:
    sub = _subnet(db, _supernet(db))
    first = _eval(db, sub)
    # Same key, other value: insert-or-get returns the first row and keeps its value.
    assert _eval(db, sub, value=0.99, wall_s=9.0) == first
    [row] = storage.list_evaluations(db, sub)
    assert row.value == 0.625 and row.wall_s == 2.5
    # Any key component differs: a new row.
    assert _eval(db, sub, **change) != first
    assert len(storage.list_evaluations(db, sub)) == 2


def test_example_scores_added_to_existing_evaluation_once(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    eid = _eval(db, sub)
    assert storage.get_example_scores(db, eid) is None
    assert _eval(db, sub, example_ids=["a", "b"], example_scores=[1.0, 0.0]) == eid
    assert _eval(db, sub, example_ids=["x"], example_scores=[0.5]) == eid  # first scores kept
    stored = storage.get_example_scores(db, eid)
    assert stored is not None and stored.example_ids == ("a", "b")


def test_evaluation_bad_input(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    with pytest.raises(StorageError, match="2 example ids but 3 example scores"):
        _eval(db, sub, example_ids=["a", "b"], example_scores=[1.0, 0.0, 1.0])
    with pytest.raises(StorageError, match="give both example_ids and example_scores"):
        _eval(db, sub, example_ids=["a"])
    with pytest.raises(StorageError, match="fidelity must be a non-empty string"):
        _eval(db, sub, fidelity="")
    with pytest.raises(StorageError, match="sub-network id 12345 does not exist"):
        _eval(db, 12345)
    assert storage.list_evaluations(db, sub) == []


def test_find_evaluations_matches_every_key(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    _eval(db, sub)
    _eval(db, sub, metric="acc_norm", value=0.7)
    _eval(db, sub, task="arc_easy", task_hash="th-arc", value=0.4)
    query = {
        "supernet_hash": "sn-a",
        "config_hash": "cfg-0-1-3",
        "fidelity": "n100-s0",
        "harness_version": "0.4.8",
        "task_hashes": {"piqa": "th-piqa", "arc_easy": "th-arc"},
        "settings": {"piqa": SETTINGS, "arc_easy": SETTINGS},
    }
    hits = storage.find_evaluations(db, **query)
    assert [(r.task, r.metric) for r in hits] == [("arc_easy", "acc"), ("piqa", "acc"), ("piqa", "acc_norm")]
    # Each key component that differs is a miss.
    assert storage.find_evaluations(db, **{**query, "fidelity": "full"}) == []
    assert storage.find_evaluations(db, **{**query, "harness_version": "0.5"}) == []
    assert storage.find_evaluations(db, **{**query, "supernet_hash": "sn-other"}) == []
    assert storage.find_evaluations(db, **{**query, "config_hash": "cfg-other"}) == []
    changed = storage.find_evaluations(db, **{**query, "task_hashes": {"piqa": "th-changed", "arc_easy": "th-arc"}})
    assert [r.task for r in changed] == ["arc_easy"]  # piqa's task config changed: a miss for piqa only
    assert storage.find_evaluations(db, **{**query, "task_hashes": {}}) == []
    fp32 = storage.find_evaluations(db, **{**query, "settings": {"piqa": '{"dtype":"fp32"}', "arc_easy": SETTINGS}})
    assert [r.task for r in fp32] == ["arc_easy"]  # piqa was scored in bf16: an fp32 study misses it


def test_cost_round_trip_and_unique_key(db: Database) -> None:
    sub = _subnet(db, _supernet(db))
    device = "cpu:AMD EPYC|torch 2.13.0|bf16"
    cid = storage.record_cost(db, subnet_id=sub, device=device, metric="params", value=1.5e6, method="analytic")
    assert storage.record_cost(db, subnet_id=sub, device=device, metric="params", value=2e6, method="analytic") == cid
    storage.record_cost(db, subnet_id=sub, device=device, metric="decode_latency_ms", value=12.5, method="measured")
    storage.record_cost(db, subnet_id=sub, device=device, metric="decode_latency_ms", value=11.0, method="predicted")
    storage.record_cost(db, subnet_id=sub, device="cuda:H100", metric="decode_latency_ms", value=1.0, method="measured")
    costs = storage.find_costs(db, supernet_hash="sn-a", config_hash="cfg-0-1-3", device=device)
    assert [(c.metric, c.method, c.value) for c in costs] == [
        ("decode_latency_ms", "measured", 12.5),
        ("decode_latency_ms", "predicted", 11.0),
        ("params", "analytic", 1.5e6),
    ]
    assert costs[2].id == cid and costs[2].subnet_id == sub and _is_utc(costs[2].created_at)
    assert len(storage.find_costs(db, supernet_hash="sn-a", config_hash="cfg-0-1-3")) == 4
    only = storage.find_costs(db, supernet_hash="sn-a", config_hash="cfg-0-1-3", metrics=["params"], method="analytic")
    assert [c.value for c in only] == [1.5e6]
    with pytest.raises(StorageError, match="unknown method 'guessed'"):
        storage.record_cost(db, subnet_id=sub, device=device, metric="params", value=1, method="guessed")
    with pytest.raises(StorageError, match="sub-network id 777 does not exist"):
        storage.record_cost(db, subnet_id=777, device=device, metric="params", value=1, method="analytic")


def test_study_round_trip_status_and_conflicts(db: Database) -> None:
    a, b = _supernet(db, "sn-a"), _supernet(db, "sn-b")
    spec = {"name": "s1", "objectives": [{"name": "piqa/acc", "direction": "maximize"}], "seed": 0}
    sid = storage.create_study(db, name="s1", optuna_study_name="nas-s1", spec=spec, supernet_id=a)
    # Resume: same name, supernet and Optuna study -> same id, spec unchanged.
    assert storage.create_study(db, name="s1", optuna_study_name="nas-s1", spec={"other": 1}, supernet_id=a) == sid
    row = storage.get_study(db, "s1")
    assert row is not None
    assert (row.id, row.optuna_study_name, row.spec, row.supernet_id, row.supernet_hash) == (sid, "nas-s1", spec, a, "sn-a")
    assert (row.status, row.finished_at, row.n_trials) == ("created", None, 0) and _is_utc(row.created_at)
    with pytest.raises(StorageError, match="already exists on supernet sn-a, not on supernet sn-b"):
        storage.create_study(db, name="s1", optuna_study_name="nas-s1", spec=spec, supernet_id=b)
    with pytest.raises(StorageError, match="linked to Optuna study 'nas-s1'"):
        storage.create_study(db, name="s1", optuna_study_name="other", spec=spec, supernet_id=a)
    with pytest.raises(StorageError, match="supernet id 404 does not exist"):
        storage.create_study(db, name="s2", optuna_study_name="s2", spec=spec, supernet_id=404)

    storage.set_study_status(db, "s1", "running")
    assert storage.get_study(db, "s1").status == "running"  # type: ignore[union-attr]
    storage.set_study_status(db, "s1", "finished")
    done = storage.get_study(db, "s1")
    assert done is not None and done.status == "finished" and done.finished_at is not None
    assert _is_utc(done.finished_at) and done.finished_at >= done.created_at
    with pytest.raises(StorageError, match="unknown study status 'done'"):
        storage.set_study_status(db, "s1", "done")
    with pytest.raises(StorageError, match="no study named 'nope'.*known studies: s1"):
        storage.set_study_status(db, "nope", "running")
    storage.create_study(db, name="s0", optuna_study_name="s0", spec={}, supernet_id=b)
    assert [s.name for s in storage.list_studies(db)] == ["s1", "s0"]  # oldest first
    assert storage.get_study(db, "missing") is None


def test_trial_round_trip_and_update(db: Database) -> None:
    sn = _supernet(db)
    sub, sub2 = _subnet(db, sn), _subnet(db, sn, (0, 3))
    sid = storage.create_study(db, name="s1", optuna_study_name="s1", spec={}, supernet_id=sn)
    tid = storage.record_trial(db, study_id=sid, trial_number=0, subnet_id=sub, fidelity=None, feasible=True, state="RUNNING")
    storage.record_trial(db, study_id=sid, trial_number=1, subnet_id=sub2, fidelity=None, feasible=False, state="COMPLETE")
    first = storage.list_trials(db, "s1")[0]
    # The trial moves on: same row, new fidelity and state.
    again = storage.record_trial(db, study_id=sid, trial_number=0, subnet_id=sub, fidelity="full", feasible=True, state="COMPLETE")
    assert again == tid
    trials = storage.list_trials(db, "s1")
    assert [(t.trial_number, t.subnet_id, t.config_hash, t.fidelity, t.feasible, t.state) for t in trials] == [
        (0, sub, "cfg-0-1-3", "full", True, "COMPLETE"),
        (1, sub2, "cfg-0-3", None, False, "COMPLETE"),
    ]
    assert trials[0].updated_at >= first.updated_at and _is_utc(trials[0].updated_at)
    assert storage.get_study(db, "s1").n_trials == 2  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="study id 99 or sub-network id"):
        storage.record_trial(db, study_id=99, trial_number=0, subnet_id=sub, fidelity=None, feasible=True, state="RUNNING")
    with pytest.raises(StorageError, match="no study named 'zz'"):
        storage.list_trials(db, "zz")


def test_cache_hit_across_two_studies(db: Database) -> None:
    """A second study on the same supernet meets a known sub-network and finds its results."""
    sn = _supernet(db)
    first = storage.create_study(db, name="first", optuna_study_name="first", spec={}, supernet_id=sn)
    sub = _subnet(db, sn)
    eid = _eval(db, sub)
    storage.record_cost(db, subnet_id=sub, device="cpu", metric="params", value=42.0, method="analytic")
    storage.record_trial(db, study_id=first, trial_number=0, subnet_id=sub, fidelity="n100-s0", feasible=True, state="COMPLETE")

    second = storage.create_study(db, name="second", optuna_study_name="second", spec={}, supernet_id=sn)
    # The second study's worker only knows the supernet hash, the config and its task hashes.
    hits = storage.find_evaluations(
        db, supernet_hash="sn-a", config_hash="cfg-0-1-3", fidelity="n100-s0",
        harness_version="0.4.8", task_hashes={"piqa": "th-piqa"}, settings={"piqa": SETTINGS},
    )
    assert [h.id for h in hits] == [eid]
    assert [c.value for c in storage.find_costs(db, supernet_hash="sn-a", config_hash="cfg-0-1-3")] == [42.0]
    assert _subnet(db, sn) == sub  # its get_or_create reuses the sub-network
    storage.record_trial(db, study_id=second, trial_number=0, subnet_id=sub, fidelity="n100-s0", feasible=True, state="COMPLETE")
    # Both studies show the same (single) evaluation.
    for name in ("first", "second"):
        frame = storage.study_results(db, name)
        assert frame["piqa/acc"].tolist() == [0.625]
    assert len(storage.list_evaluations(db, sub)) == 1


def test_session_scope_rolls_back_on_error(db: Database) -> None:
    sn = _supernet(db)
    with pytest.raises(RuntimeError):
        with db.session_scope() as session:
            rec = session.get(storage.SupernetRecord, sn)
            assert rec is not None
            rec.name = "changed"
            session.flush()
            raise RuntimeError("boom")
    assert storage.get_supernet(db, "sn-a").name == "tiny"  # type: ignore[union-attr]
