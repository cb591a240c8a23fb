"""Two to four candidates of one study side by side (``/studies/{name}/compare?trials=a,b``):
the per-layer difference of their configs, metrics with intervals, the paired difference of
each to the first on the documents both were scored on, and their costs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import storage
from nas.errors import NasError
from nas.metrics import ACCURACY
from nas.stats import paired_weighted_difference
from reports.data import StudyView, finite
from reports.figures import interval_z
from reports.web.views import shape_of_trials, trial_row

MIN_CANDIDATES, MAX_CANDIDATES = 2, 4


def parse_candidates(text: str | None) -> list[int]:
    """``"12,40,7"`` -> [12, 40, 7] (2 to 4 distinct trial numbers, in the given order)."""
    try:
        trials = list(dict.fromkeys(int(t) for t in (text or "").split(",") if t.strip()))
    except ValueError:
        raise NasError(f"trials={text!r}: give 2 to 4 trial numbers separated by commas, e.g. trials=12,40") from None
    if not MIN_CANDIDATES <= len(trials) <= MAX_CANDIDATES:
        raise NasError(f"compare takes 2 to 4 trials (got {len(trials)}); e.g. trials=12,40")
    return trials


def layer_diff(configs: Sequence[Mapping[str, Any]], n_layer: int) -> list[dict[str, Any]]:
    """Per supernet layer: each candidate's ``(n_head, d_ff)`` (None where dropped) and
    whether they differ from the first candidate's."""
    rows = []
    kept = []
    for cfg in configs:
        layers = [int(v) for v in cfg.get("layers", [])]
        heads, widths = cfg.get("n_head", []), cfg.get("d_ff", [])
        kept.append({layer: (int(heads[i]), int(widths[i])) for i, layer in enumerate(layers)})
    n = max([n_layer, *(max(k, default=-1) + 1 for k in kept)])
    for layer in range(n):
        cells = [k.get(layer) for k in kept]
        rows.append({"layer": layer, "cells": cells, "differs": [c != cells[0] for c in cells]})
    return rows


def paired_accuracy(db: storage.Database, view: StudyView, trials: Sequence[int], fidelity: str | None) -> list[dict[str, Any] | None]:
    """For each trial after the first: the difference of its aggregate accuracy to the
    first's, paired on the per-example scores both have at ``fidelity`` (``paired``: True),
    else from the two independent standard errors (``paired``: False); None when unknown."""
    rows = {t: view.trial(t) for t in trials}
    subnet = {t: int(r["subnet_id"]) for t, r in rows.items()}
    weights = dict(view.axes.weights) if view.axes is not None else {}
    parts = {tuple(c.rsplit("/", 1)): w for c, w in weights.items()}
    examples: dict[int, dict[tuple[str, str], dict[int, float]]] = {}
    if fidelity is not None and parts:
        scoring = view.spec.get("scoring") if isinstance(view.spec.get("scoring"), Mapping) else None
        for row in storage.subnet_example_scores(db, list(subnet.values()), fidelity=fidelity, settings=scoring):
            per_doc = dict(zip((int(i) for i in row.example_ids or ()), row.example_scores or ()))
            examples.setdefault(row.subnet_id, {})[(row.task, row.metric)] = per_doc
    first = trials[0]
    out: list[dict[str, Any] | None] = []
    for t in trials[1:]:
        diff = paired_weighted_difference(examples.get(subnet[t], {}), examples.get(subnet[first], {}), parts) if parts else None
        if diff is not None:
            out.append({"mean": diff[0], "stderr": diff[1], "paired": True})
            continue
        a, b = finite(rows[t].get(ACCURACY)), finite(rows[first].get(ACCURACY))
        sa, sb = finite(rows[t].get(f"{ACCURACY}_stderr")) or 0.0, finite(rows[first].get(f"{ACCURACY}_stderr")) or 0.0
        out.append(None if a is None or b is None else {"mean": a - b, "stderr": math.hypot(sa, sb), "paired": False})
    return out


def compare_context(db: storage.Database, view: StudyView, trials: Sequence[int]) -> dict[str, Any]:
    """Everything the compare page shows (raises TrialNotFound for an unknown trial)."""
    rows = [view.trial(t) for t in trials]
    configs = [json.loads(r["config_json"]) for r in rows]
    supernet = storage.get_supernet(db, view.supernet_hash)
    shape = {"n_layer": int((supernet.config if supernet else {}).get("n_layer", 0) or 0),
             "d_ff": int((supernet.config if supernet else {}).get("d_ff", 0) or 0)}
    if not shape["n_layer"]:
        shape = shape_of_trials(view)
    z = interval_z(view)
    candidates = [trial_row(view, r) for r in rows]
    fidelity = view.top_fidelity
    diffs = paired_accuracy(db, view, trials, fidelity)
    for c, d in zip(candidates, [None, *diffs]):
        c["difference"] = d
        c["tied_with_first"] = d is not None and abs(d["mean"]) <= z * d["stderr"]
    metrics = [m for m in view.metric_columns if any(c["metrics"].get(m) is not None for c in candidates)]
    return {"study": view.name, "trials": list(trials), "candidates": candidates, "layers": layer_diff(configs, shape["n_layer"]),
            "metrics": metrics, "costs": list(view.cost_columns), "z": z, "shape": shape, "fidelity": fidelity}


__all__ = ["MAX_CANDIDATES", "MIN_CANDIDATES", "compare_context", "layer_diff", "paired_accuracy", "parse_candidates"]
