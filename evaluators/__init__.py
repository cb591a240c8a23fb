"""Scoring one sub-network: the lm-eval adapter, the offline task pack and the study-level
evaluator (plus the cost model in ``evaluators.cost``).

Heavy modules (torch, lm_eval) load on first use of their names, so importing
``evaluators.types`` or ``evaluators.errors`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from evaluators.errors import EvaluatorError
from evaluators.types import Costs, CostValue, Fidelity, Metrics, TaskScore

_LAZY = {
    "Evaluator": "evaluators.evaluate",
    "subset_ids": "evaluators.evaluate",
    "ScoringOptions": "evaluators.harness",
    "SubnetLM": "evaluators.harness",
    "resolve_subnet": "evaluators.harness",
    "TaskPack": "evaluators.tasks",
    "resolve_data_dir": "evaluators.tasks",
    "task_hash": "evaluators.tasks",
    "analytic_costs": "evaluators.cost",
    "costs": "evaluators.cost",
    "LatencySetup": "evaluators.latency",
    "LatencyTable": "evaluators.latency_table",
    "device_fingerprint": "evaluators.latency",
    "measure_latency": "evaluators.latency",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluators' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CostValue",
    "Costs",
    "Evaluator",
    "EvaluatorError",
    "Fidelity",
    "LatencySetup",
    "LatencyTable",
    "Metrics",
    "ScoringOptions",
    "SubnetLM",
    "TaskPack",
    "TaskScore",
    "analytic_costs",
    "costs",
    "device_fingerprint",
    "measure_latency",
    "resolve_data_dir",
    "resolve_subnet",
    "subset_ids",
    "task_hash",
]
