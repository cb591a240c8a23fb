"""Hand-made study frames (the shape of ``storage.study_results``) with known answers.

Eight trials over (accuracy up, params down):

======  ========  ===========  =====  ========  ===========================
trial   feasible  fidelity     acc    params    role
======  ========  ===========  =====  ========  ===========================
0       yes       full         0.30   100       front
1       yes       full         0.40   200       front
2       yes       full         0.35   300       dominated by 1
3       yes       full         0.60   400       front
4       yes       n50-s0       0.70   150       low fidelity only
5       no        –            –      900       infeasible (never scored)
6       yes       full         0.60   500       dominated by 3
7       yes       full         0.50   350       front
======  ========  ===========  =====  ========  ===========================
"""

from __future__ import annotations

import json

import pandas as pd

from reports.data import StudyView, build_view

ROWS = [
    # trial, feasible, fidelity, hellaswag acc_norm, arc_easy acc, params, latency
    (0, True, "full", 0.30, 0.30, 100, 1.0),
    (1, True, "full", 0.40, 0.40, 200, 2.0),
    (2, True, "full", 0.35, 0.35, 300, 3.0),
    (3, True, "full", 0.60, 0.60, 400, 4.0),
    (4, True, "n50-s0", 0.70, 0.70, 150, 1.5),
    (5, False, None, None, None, 900, 9.0),
    (6, True, "full", 0.60, 0.60, 500, 5.0),
    (7, True, "full", 0.50, 0.50, 350, 3.5),
]
FRONT = {0, 1, 3, 7}
SPEC = {
    "tasks": [{"name": "hellaswag", "metric": None, "weight": 1.0}, {"name": "arc_easy", "metric": None, "weight": 1.0}],
    "aggregation": "mean",
    "objectives": [{"metric": "accuracy", "direction": "maximize", "reference": None},
                   {"metric": "params", "direction": "minimize", "reference": None}],
    "fidelities": [{"limit": 50, "seed": 0}, {"limit": None, "seed": 0}],
    "budget": {"n_trials": 10},
}


def config_json(trial: int) -> str:
    n = 2 + trial % 3
    return json.dumps({"layers": list(range(n)), "n_head": [4] * n, "d_ff": [32 * (1 + trial % 4)] * n, "d_model": 64},
                      sort_keys=True, separators=(",", ":"))


def frame() -> pd.DataFrame:
    records = []
    for trial, feasible, fid, hs, arc, params, latency in ROWS:
        cfg = json.loads(config_json(trial))
        row = {
            "trial": trial, "state": "COMPLETE", "feasible": feasible, "fidelity": fid, "subnet_id": trial + 1,
            "config_hash": f"h{trial:015d}", "config_json": config_json(trial),
            "config.n_layer": len(cfg["layers"]), "config.d_model": 64,
            "config.d_ff_mean": float(cfg["d_ff"][0]), "config.n_head_mean": 4.0,
            "arc_easy/acc": arc, "arc_easy/acc_stderr": None if arc is None else 0.01,
            "hellaswag/acc_norm": hs, "hellaswag/acc_norm_stderr": None if hs is None else 0.02,
            "params": float(params), "prefill_latency_ms": latency,
        }
        records.append(row)
    out = pd.DataFrame.from_records(records)
    for col in ("arc_easy/acc", "arc_easy/acc_stderr", "hellaswag/acc_norm", "hellaswag/acc_norm_stderr"):
        out[col] = out[col].astype("float64")
    return out


def view(name: str = "toy", shift: float = 0.0, cost_reference: dict[str, float] | None = None) -> StudyView:
    f = frame()
    for col in ("arc_easy/acc", "hellaswag/acc_norm"):
        f[col] = f[col] + shift
    return build_view(f, name=name, status="finished", supernet_hash="abc", spec=SPEC, cost_reference=cost_reference)
