"""Healing the pick: what ``nas export --heal`` measures of a sub-network before and after.

The heal itself (distilling the picked sub-network from the supernet's frozen full model)
is :mod:`nas.training.heal`'s, wired by the CLI; this module scores the sub-network of the
unhealed and the healed supernet on the same documents with the study's own scorers
(:func:`score_changes`: each task's value before and after with its standard error, and
the paired difference over the documents both scored), and continues fixed prompts
greedily with both (:func:`continuations`). :func:`heal_record` is what the export's
``nas_export.json`` keeps under ``"heal"`` and its model card shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluators.scorer import build_scorers
from evaluators.types import Fidelity, TaskScore
from nas.export.loading import ExportedModel
from nas.export.source import ExportSource, ScoreRecord
from nas.model.directory import LoadedSupernet
from nas.model.subnet import SubnetConfig
from nas.search.spec import spec_from_json
from nas.stats import paired_difference

#: The prompts every healed export is continued from, before and after.
PROMPTS = (
    "The capital of France is",
    "Once upon a time, there was a little girl who",
    "The best way to learn a new language is",
)
MAX_NEW_TOKENS = 24


@dataclass(frozen=True)
class ScoreChange:
    """One task metric of the sub-network before and after healing, on the same documents."""
    task: str
    metric: str
    fidelity: str
    n_examples: int
    before: float
    before_stderr: float | None
    after: float
    after_stderr: float | None
    diff: float  # after - before
    diff_stderr: float | None  # paired over the documents both scored


def heal_fidelity(source: ExportSource) -> str | None:
    """Where to score before and after: the study's confirmation documents when the trial
    was confirmed (the search never selected on them), else the trial's own fidelity."""
    if source.confirmed:
        return source.confirmed[0].fidelity
    return source.fidelity


def _scores(spec: Any, loaded: LoadedSupernet, subnet: SubnetConfig, fidelity: Fidelity) -> dict[tuple[str, str], TaskScore]:
    out = {}
    for scorer in build_scorers(spec, loaded):
        for s in scorer.evaluate(subnet, fidelity).scores:
            out[(s.task, s.metric)] = s
    return out


def score_changes(source: ExportSource, before: LoadedSupernet, after: LoadedSupernet, fidelity: str) -> list[ScoreChange]:
    """Score ``source``'s sub-network on ``before`` and ``after`` (loaded in the study's
    dtype: the scorers cast the model in place) with the study's scorers at ``fidelity``."""
    spec = spec_from_json(source.spec)
    fid = Fidelity.parse(fidelity)
    a = _scores(spec, before, source.subnet, fid)
    b = _scores(spec, after, source.subnet, fid)
    rows = []
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        paired = paired_difference(dict(zip(y.example_ids, y.example_scores)), dict(zip(x.example_ids, x.example_scores)))
        rows.append(ScoreChange(
            task=key[0], metric=key[1], fidelity=fid.label, n_examples=y.n_examples,
            before=float(x.value), before_stderr=_finite(x.stderr), after=float(y.value), after_stderr=_finite(y.stderr),
            diff=float(y.value - x.value), diff_stderr=None if paired is None else _finite(paired[1]),
        ))
    return rows


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)


def continuations(before: LoadedSupernet, after: LoadedSupernet, subnet: SubnetConfig, tokenizer: Any,
                  prompts: Sequence[str] = PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict[str, str]]:
    """Greedy continuations of ``prompts`` by the dense sub-network of ``before`` and of ``after``."""
    models = {}
    for name, loaded in (("before", before), ("after", after)):
        dense = loaded.model.extract(subnet).float().eval()
        models[name] = ExportedModel(model=dense, meta={}, path=Path(loaded.path), tokenizer=tokenizer)
    return [{"prompt": p, **{name: m.generate(p, max_new_tokens=max_new_tokens) for name, m in models.items()}}
            for p in prompts]


def heal_record(heal: dict[str, Any], changes: Sequence[ScoreChange], texts: Sequence[dict[str, str]], *,
                budget: str, healed_hash: str, z: float) -> dict[str, Any]:
    """The ``"heal"`` entry of an export's ``nas_export.json``."""
    return {
        "budget": budget,
        "healed_supernet_hash": healed_hash,
        "parent_hash": heal.get("parent_hash"),
        "teacher": heal.get("teacher"),
        "tokens": heal.get("tokens"),
        "steps": heal.get("steps"),
        "wall_time_s": heal.get("wall_time_s"),
        "data": heal.get("data"),
        "settings": heal.get("settings"),
        "z": z,
        "scores": [asdict(c) for c in changes],
        "continuations": list(texts),
        "max_new_tokens": MAX_NEW_TOKENS,
    }


def healed_scores(source: ExportSource, changes: Sequence[ScoreChange]) -> tuple[ScoreRecord, ...]:
    """The healed sub-network's scores as score records (``nas export --heal --verify``
    checks the export against them instead of the study's unhealed ones)."""
    version = {s.task: s.harness_version for s in (*source.scores, *source.confirmed)}
    task_hash = {s.task: s.task_hash for s in (*source.scores, *source.confirmed)}
    return tuple(
        ScoreRecord(c.task, c.metric, c.after, c.after_stderr, c.n_examples, c.fidelity, version.get(c.task, ""),
                    task_hash.get(c.task, ""))
        for c in changes
    )


__all__ = ["MAX_NEW_TOKENS", "PROMPTS", "ScoreChange", "continuations", "heal_fidelity", "heal_record", "healed_scores",
           "score_changes"]
