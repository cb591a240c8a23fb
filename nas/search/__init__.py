"""The search: multi-objective Optuna studies over the sub-networks of a supernet.

* :mod:`nas.search.spec` — the study spec (YAML), validated at the edge;
* :mod:`nas.search.params` — Optuna distributions and the parameters of one trial;
* :mod:`nas.search.costs` — the costs a study uses and its constraints;
* :mod:`nas.search.promotion` — estimates and multi-fidelity promotion;
* :mod:`nas.search.trials` — what each Optuna trial stores, read back typed;
* :mod:`nas.search.driver` — :class:`~nas.search.driver.Search`, one worker's trial loop;
* :mod:`nas.search.batches` — heartbeats and re-queues for a worker's batch of trials;
* :mod:`nas.search.outcomes` — what a run reports (trial outcomes, run summary);
* :mod:`nas.search.study` — :func:`~nas.search.study.open_search`: create, resume or join a study;
* :mod:`nas.search.optuna_storage` — Optuna's storage on our database;
* :mod:`nas.search.results` — a study's annotated results, shared by every view;
* :mod:`nas.search.status` — ``nas status``.

``nas.search.spec`` and ``nas.search.results`` import neither optuna nor torch (the web
app uses them); the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# Deferred: the driver imports optuna and torch; the spec and results modules must stay light.
_LAZY = {
    "RunSummary": "nas.search.driver",
    "Search": "nas.search.driver",
    "TrialOutcome": "nas.search.driver",
    "StudyStatus": "nas.search.status",
    "study_status": "nas.search.status",
    "open_search": "nas.search.study",
    "stored_spec": "nas.search.study",
    "StudySpec": "nas.search.spec",
    "load_spec": "nas.search.spec",
    "parse_spec": "nas.search.spec",
    "TOP_FIDELITY_CONSTRAINT": "nas.search.trials",
    "param_distributions": "nas.search.params",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
