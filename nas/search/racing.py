"""Paired decisions: is a candidate confidently worse than a member of the front?

Every candidate of a study is scored on the same documents in the same order, so two
candidates are compared on their per-example *differences*: the standard error of the
mean difference over shared documents, not the two standard errors added (which ignores
that both saw the same easy and hard documents). An aggregate objective (``accuracy``)
combines its tasks' paired differences with the aggregate's weights, tasks taken as
independent (:func:`nas.stats.weighted_mean`).

A front member *confidently dominates* a candidate when it is at least as cheap on every
cost objective (costs are exact) and better on every scored objective by more than ``z``
standard errors of the paired difference. Racing stops such a candidate; confirmation
calls a candidate *tied* with the front when no member confidently dominates it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evaluators.types import TaskScore
from nas.search.promotion import Estimate
from nas.search.spec import StudySpec
from nas.stats import paired_weighted_difference

#: (task, metric) -> doc id -> per-example score
Examples = Mapping[tuple[str, str], Mapping[int, float]]


@dataclass(frozen=True)
class Contender:
    """A scored sub-network: its objective values (spec order) and its per-example scores."""

    trial: int
    values: tuple[float, ...]
    examples: Examples


def examples_of(scores: Sequence[TaskScore]) -> dict[tuple[str, str], dict[int, float]]:
    """Per-example scores of task scores that carry them."""
    return {
        (s.task, s.metric): {int(i): float(v) for i, v in zip(s.example_ids, s.example_scores)}
        for s in scores
        if s.example_ids
    }


def objective_parts(spec: StudySpec, index: int) -> dict[tuple[str, str], float]:
    """The (task, metric) parts of scored objective ``index`` with their weights."""
    obj = spec.objectives[index]
    if spec.objective_kind(obj) == "metric":
        task, _, metric = obj.metric.partition("/")
        return {(task, metric): 1.0}
    return {(t.name, t.main_metric): (t.weight if spec.aggregation == "weighted" else 1.0) for t in spec.tasks}


def paired_objective(spec: StudySpec, index: int, a: Examples, b: Examples) -> Estimate | None:
    """``a - b`` on scored objective ``index`` over the documents both were scored on, with
    its paired standard error; None when a task has fewer than two shared documents."""
    diff = paired_weighted_difference(a, b, objective_parts(spec, index))
    return None if diff is None else Estimate(*diff)


def paired_advantages(member: Contender, candidate: Contender, spec: StudySpec) -> list[Estimate | None] | None:
    """None when ``member`` is not at least as cheap as ``candidate`` on every cost
    objective; else, per scored objective, ``member``'s paired advantage (its value minus
    the candidate's, signed so that positive is better) or None without shared documents."""
    out: list[Estimate | None] = []
    for j, obj in enumerate(spec.objectives):
        better = 1.0 if obj.direction == "maximize" else -1.0
        if spec.objective_kind(obj) == "cost":
            if member.values[j] * better < candidate.values[j] * better:
                return None
            continue
        diff = paired_objective(spec, j, member.examples, candidate.examples)
        out.append(None if diff is None else Estimate(better * diff.value, diff.stderr))
    return out


def confidently_dominates(member: Contender, candidate: Contender, spec: StudySpec, *, z: float) -> tuple[bool, float]:
    """Whether ``member`` is at least as cheap on every cost objective and better on every
    scored objective by more than ``z`` paired standard errors; and by how much the
    narrowest of those margins clears the bar (0 when it does not dominate)."""
    advantages = paired_advantages(member, candidate, spec)
    if not advantages or any(a is None or a.value <= 0 or a.value - z * a.stderr <= 0 for a in advantages):
        return False, 0.0
    return True, min(a.value - z * a.stderr for a in advantages if a is not None)


def dominating_member(front: Sequence[Contender], candidate: Contender, spec: StudySpec, *, z: float) -> tuple[int | None, float]:
    """The trial of the front member that confidently dominates ``candidate`` by the widest
    margin (None if none does), and that margin."""
    best: tuple[int | None, float] = (None, 0.0)
    for member in front:
        dominated, margin = confidently_dominates(member, candidate, spec, z=z)
        if dominated and margin > best[1]:
            best = (member.trial, margin)
    return best


__all__ = ["Contender", "Examples", "confidently_dominates", "dominating_member", "examples_of", "objective_parts",
           "paired_advantages", "paired_objective"]
