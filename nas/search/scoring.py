"""Scoring through the evaluation cache, for the search and for confirmation.

:class:`StudyScoring` scores a sub-network at one fidelity with a study's scorers: every
scorer's result comes from storage when the cache holds it under the full key
(supernet content hash, sub-network, task and its hash, fidelity, harness version and
scoring settings), else the scorer runs — on only the documents a nested ``prior``
lacks — and every metric is recorded with its per-example scores. It also reads the
per-example scores of several sub-networks at once (a front, for paired decisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evaluators.scorer import TaskScorer
from evaluators.types import Fidelity, Metrics, TaskScore
from nas.model.subnet import SubnetConfig
from nas.search.spec import StudySpec
from storage import Database, EvaluationRow, NewEvaluation, example_scores_of, find_evaluations, record_evaluation

#: (task, metric) -> score
Scores = dict[tuple[str, str], TaskScore]


@dataclass
class ScoringCounts:
    """What scoring cost so far."""

    evaluations: int = 0  # scorer.evaluate calls
    model_calls: int = 0  # forward passes the scorers reported
    cache_hits: int = 0  # scorer results answered from storage


@dataclass(frozen=True)
class Scored:
    """One sub-network's scores at one fidelity."""

    scores: Scores
    model_calls: int  # at least one per evaluation that ran
    cache_hits: int


class StudyScoring:
    """A study's scorers behind the evaluation cache (see the module docstring)."""

    def __init__(self, db: Database, supernet_hash: str, spec: StudySpec, scorers: Sequence[TaskScorer]) -> None:
        self.db = db
        self.supernet_hash = supernet_hash
        self.spec = spec
        self.scorers = list(scorers)
        self.counts = ScoringCounts()

    def needed_metrics(self, tasks: Sequence[str]) -> set[tuple[str, str]]:
        """The (task, metric) pairs of ``tasks`` the spec's objectives need."""
        by_name = {t.name: t for t in self.spec.tasks}
        needed = {(t, by_name[t].main_metric) for t in tasks if t in by_name}
        for obj in self.spec.objectives:
            if self.spec.objective_kind(obj) == "metric":
                task, _, metric = obj.metric.partition("/")
                if task in tasks:
                    needed.add((task, metric))
        return needed

    def cached_for(self, scorer: TaskScorer, subnet: SubnetConfig, fidelity: Fidelity) -> Scores | None:
        """This scorer's cached scores (with their per-example scores), or None unless every
        metric the spec needs is there."""
        rows = find_evaluations(
            self.db, supernet_hash=self.supernet_hash, config_hash=subnet.hash, fidelity=fidelity.label,
            harness_version=scorer.harness_version, task_hashes=dict(scorer.task_hashes),
            settings=dict(scorer.settings), with_scores=True,
        )
        found = {(r.task, r.metric): task_score(r) for r in rows}
        return found if self.needed_metrics(scorer.tasks) <= set(found) else None

    def cached(self, subnet: SubnetConfig, fidelity: Fidelity) -> Scores | None:
        """Every scorer's cached scores at ``fidelity``, or None unless all are cached."""
        out: Scores = {}
        for scorer in self.scorers:
            cached = self.cached_for(scorer, subnet, fidelity)
            if cached is None:
                return None
            out.update(cached)
        self.counts.cache_hits += len(self.scorers)
        return out

    def score(self, subnet: SubnetConfig, subnet_id: int, fidelity: Fidelity,
              prior: tuple[Fidelity, Scores] | None = None) -> Scored:
        """Scores of every task at ``fidelity``: from the cache, else by running the scorers
        on the documents ``prior`` (a nested fidelity and its scores) lacks; recorded."""
        out: Scores = {}
        calls = hits = 0
        for scorer in self.scorers:
            cached = self.cached_for(scorer, subnet, fidelity)
            if cached is not None:
                out.update(cached)
                hits += 1
                self.counts.cache_hits += 1
                continue
            last = None
            if prior is not None:
                mine = tuple(s for (task, _), s in prior[1].items() if task in scorer.task_hashes)
                last = Metrics(mine, prior[0].label, scorer.harness_version) if mine else None
            metrics = scorer.evaluate(subnet, fidelity, last)
            self.counts.evaluations += 1
            self.counts.model_calls += int(metrics.n_model_calls)
            calls += max(1, int(metrics.n_model_calls))
            self._record(scorer, subnet_id, fidelity, metrics)
            out.update({(s.task, s.metric): s for s in metrics.scores})
        return Scored(out, calls, hits)

    def _record(self, scorer: TaskScorer, subnet_id: int, fidelity: Fidelity, metrics: Metrics) -> None:
        hashes = {**dict(scorer.task_hashes), **dict(metrics.task_hashes)}
        per_metric_wall = metrics.wall_s / max(1, len(metrics.scores))
        for s in metrics.scores:
            record_evaluation(self.db, NewEvaluation(
                subnet_id=subnet_id, task=s.task, metric=s.metric, value=s.value, stderr=s.stderr,
                n_examples=s.n_examples, fidelity=fidelity.label,
                harness_version=metrics.harness_version or scorer.harness_version,
                task_hash=hashes.get(s.task, "unknown"), settings=scorer.settings.get(s.task, ""),
                wall_s=per_metric_wall,
                example_ids=tuple(s.example_ids) if s.example_scores else None,
                example_scores=tuple(s.example_scores) if s.example_scores else None,
            ))

    def examples_of(self, subnet_ids: Sequence[int], fidelity: Fidelity) -> dict[int, dict[tuple[str, str], dict[int, float]]]:
        """subnet id -> (task, metric) -> doc id -> per-example score, at ``fidelity``."""
        out: dict[int, dict[tuple[str, str], dict[int, float]]] = {}
        for scorer in self.scorers:
            for row in example_scores_of(self.db, list(subnet_ids), fidelity=fidelity.label,
                                         harness_version=scorer.harness_version,
                                         task_hashes=dict(scorer.task_hashes), settings=dict(scorer.settings)):
                scores = dict(zip((int(i) for i in row.example_ids or ()), row.example_scores or ()))
                out.setdefault(row.subnet_id, {})[(row.task, row.metric)] = scores
        return out


def task_score(row: EvaluationRow) -> TaskScore:
    """A stored evaluation as a :class:`TaskScore` (with its per-example scores when loaded)."""
    return TaskScore(row.task, row.metric, row.value, row.stderr or 0.0, row.n_examples,
                     tuple(int(i) for i in row.example_ids or ()), tuple(row.example_scores or ()))


__all__ = ["Scored", "Scores", "ScoringCounts", "StudyScoring", "task_score"]
