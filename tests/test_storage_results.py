"""A study's results as a DataFrame: columns, fidelity choice, cost choice, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest

import storage
from storage import Database, StorageError


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = storage.open_database(sqlite_url)
    yield database
    database.close()


def _ev(db: Database, subnet: int, task: str, metric: str, value: float, fidelity: str, n: int, **over: object) -> int:
    fields = {
        "subnet_id": subnet, "task": task, "metric": metric, "value": value, "stderr": 0.01,
        "n_examples": n, "fidelity": fidelity, "harness_version": "0.4.8", "task_hash": f"th-{task}", "settings": "{}", "wall_s": 1.0,
    }
    fields.update(over)
    return storage.record_evaluation(db, storage.NewEvaluation(**fields))  # type: ignore[arg-type]


@pytest.fixture
def study(db: Database) -> dict[str, int]:
    """Three trials: one promoted to full fidelity, one low-fidelity only, one infeasible and unevaluated."""
    sn = storage.upsert_supernet(db, content_hash="sn", name="n", path="p", config={}, space={}, provenance={})
    subs = {}
    for name, layers, d_ff in (("big", [0, 1, 2, 3], 256), ("small", [0, 3], 128), ("huge", [0, 1, 2, 3], 512)):
        config = {"d_ff": [d_ff] * len(layers), "d_model": 64, "layers": layers}
        subs[name] = storage.get_or_create_subnet(
            db, supernet_id=sn, config_json=json.dumps(config, sort_keys=True), config_hash=f"h-{name}",
            n_layer=len(layers), params=1000 * len(layers) * d_ff,
        )
    sid = storage.create_study(db, name="s", optuna_study_name="s", spec={}, supernet_id=sn)
    big, small, huge = subs["big"], subs["small"], subs["huge"]
    _ev(db, big, "piqa", "acc", 0.60, "n100-s0", 100)
    _ev(db, big, "piqa", "acc", 0.64, "full", 1838)
    _ev(db, big, "piqa", "acc_norm", 0.66, "full", 1838)
    _ev(db, big, "arc_easy", "acc", 0.41, "full", 2376, stderr=None)
    _ev(db, big, "piqa", "acc", 0.99, "full", 1838, harness_version="0.4.9")  # newer harness wins
    _ev(db, small, "piqa", "acc", 0.55, "n100-s0", 100)
    dev, other = "cpu|bf16", "cuda|bf16"
    for sub, params in ((big, 4e5), (small, 1e5), (huge, 8e5)):
        storage.record_cost(db, subnet_id=sub, device=dev, metric="params", value=params, method="analytic")
    storage.record_cost(db, subnet_id=big, device=dev, metric="latency_ms", value=9.0, method="predicted")
    storage.record_cost(db, subnet_id=big, device=dev, metric="latency_ms", value=10.0, method="measured")
    storage.record_cost(db, subnet_id=big, device=other, metric="latency_ms", value=1.0, method="measured")
    storage.record_trial(db, study_id=sid, trial_number=1, subnet_id=small, fidelity="n100-s0", feasible=True, state="COMPLETE")
    storage.record_trial(db, study_id=sid, trial_number=0, subnet_id=big, fidelity="full", feasible=True, state="COMPLETE")
    storage.record_trial(db, study_id=sid, trial_number=2, subnet_id=huge, fidelity=None, feasible=False, state="COMPLETE")
    return {**subs, "study": sid}


def test_columns_and_values(db: Database, study: dict[str, int]) -> None:
    frame = storage.study_results(db, "s", device="cpu|bf16")
    assert list(frame.columns) == [
        *storage.BASE_COLUMNS,
        "config.d_ff", "config.d_model", "config.layers",
        "arc_easy/acc", "arc_easy/acc_stderr", "piqa/acc", "piqa/acc_stderr", "piqa/acc_norm", "piqa/acc_norm_stderr",
        "latency_ms", "params",
    ]
    assert frame["trial"].tolist() == [0, 1, 2]  # ordered by trial number
    assert frame["trial"].dtype == "int64" and frame["feasible"].dtype == bool
    big, small, huge = frame.iloc[0], frame.iloc[1], frame.iloc[2]
    assert (big["state"], big["fidelity"], big["subnet_id"], big["config_hash"]) == ("COMPLETE", "full", study["big"], "h-big")
    assert big["config.layers"] == (0, 1, 2, 3) and big["config.d_model"] == 64
    # Metrics at the trial's own (highest) fidelity; the newest of duplicates wins.
    assert big["piqa/acc"] == 0.99 and big["piqa/acc_norm"] == 0.66 and big["arc_easy/acc"] == 0.41
    assert pd.isna(big["arc_easy/acc_stderr"]) and big["piqa/acc_stderr"] == 0.01
    assert small["fidelity"] == "n100-s0" and small["piqa/acc"] == 0.55 and pd.isna(small["piqa/acc_norm"])
    assert not huge["feasible"] and pd.isna(huge["fidelity"]) and pd.isna(huge["piqa/acc"])
    # Costs: measured beats predicted; only the requested device.
    assert big["latency_ms"] == 10.0 and pd.isna(small["latency_ms"])
    assert frame["params"].tolist() == [4e5, 1e5, 8e5]


def test_costs_of_any_device_and_all_fidelities(db: Database, study: dict[str, int]) -> None:
    frame = storage.study_results(db, "s", all_fidelities=True)
    assert frame.loc[0, "latency_ms"] == 1.0  # the newest measured row, from any device
    assert frame.loc[0, "piqa/acc@n100-s0"] == 0.60 and frame.loc[0, "piqa/acc@full"] == 0.99
    assert frame.loc[1, "piqa/acc@n100-s0"] == 0.55 and pd.isna(frame.loc[1, "piqa/acc@full"])


def test_trial_without_fidelity_uses_the_largest_evaluation(db: Database, study: dict[str, int]) -> None:
    storage.record_trial(db, study_id=study["study"], trial_number=0, subnet_id=study["big"], fidelity=None, feasible=True, state="RUNNING")
    frame = storage.study_results(db, "s")
    assert frame.loc[0, "piqa/acc"] == 0.99  # "full" has 1838 examples, "n100-s0" 100
    assert pd.isna(frame.loc[0, "fidelity"])


def test_custom_config_flattening(db: Database, study: dict[str, int]) -> None:
    def per_layer(config: dict) -> dict:
        return {f"layer_{i}.d_ff": d for i, d in zip(config["layers"], config["d_ff"])}

    frame = storage.study_results(db, "s", flatten_config=per_layer)
    assert [c for c in frame.columns if c.startswith("config.")] == [f"config.layer_{i}.d_ff" for i in range(4)]
    assert frame.loc[1, "config.layer_3.d_ff"] == 128 and pd.isna(frame.loc[1, "config.layer_1.d_ff"])


def test_empty_study_has_base_columns(db: Database) -> None:
    sn = storage.upsert_supernet(db, content_hash="sn", name="n", path="p", config={}, space={}, provenance={})
    storage.create_study(db, name="empty", optuna_study_name="empty", spec={}, supernet_id=sn)
    frame = storage.study_results(db, "empty")
    assert list(frame.columns) == list(storage.BASE_COLUMNS) and len(frame) == 0


def test_unknown_study(db: Database, study: dict[str, int]) -> None:
    with pytest.raises(StorageError, match="no study named 'nope' in sqlite:///.*known studies: s"):
        storage.study_results(db, "nope")
