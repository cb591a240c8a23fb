"""The scorer protocol the search and export verification use, and the scorers a study builds.

A :class:`TaskScorer` scores sub-networks on some tasks; it is built once per study and
reused for every candidate. ``task_hashes``, ``settings`` and ``harness_version`` must be
known before any evaluation: they are the evaluation cache's keys. ``evaluate(subnet,
fidelity, prior)`` with ``prior`` (the same sub-network's result at a nested fidelity)
scores only the documents ``prior`` lacks and merges (nested rungs, racing chunks).
Two real implementations:

* :class:`~evaluators.heldout.HeldOutLoss` — the task ``heldout_loss`` (cheap, for tests
  and benchmarks too);
* :class:`LmEvalScorer` — lm-eval tasks through :class:`~evaluators.evaluate.Evaluator`.

:func:`build_scorers` makes the scorers a study needs from its settings (the study spec
satisfies :class:`ScoringSettings`), so that the search and ``nas export --verify`` score
exactly alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from evaluators.evaluate import Evaluator
from evaluators.harness import DEFAULT_NUMERICS, ScoringOptions
from evaluators.heldout import HeldOutLoss
from evaluators.tasks import TaskPack
from evaluators.types import Fidelity, Metrics
from nas.metrics import HELDOUT_TASK
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig


@runtime_checkable
class TaskScorer(Protocol):
    """Scores sub-networks on ``tasks``; see the module docstring."""

    tasks: tuple[str, ...]
    harness_version: str
    task_hashes: Mapping[str, str]
    settings: Mapping[str, str]  # task -> scoring_settings(...): dtype, context window, ...
    n_docs: Mapping[str, int]  # task -> documents it has (groups: not listed)

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics: ...


class ScoredTask(Protocol):
    """What a scorer needs to know of one task (``n_examples``, ``seq_len`` and ``source``
    only matter to ``heldout_loss``)."""

    name: str
    n_examples: int
    seq_len: int
    source: str


class ScoringSettings(Protocol):
    """How a study scores: its tasks, seed, batch size and dtype (and, if it has one,
    ``recheck_nats``: the bf16 error under which close calls are re-scored in fp32, 0 off; and
    ``numerics``: ``mixed`` or ``model``, see :class:`evaluators.harness.ScoringOptions`)."""

    tasks: Sequence[ScoredTask]
    seed: int
    batch_size: int
    dtype: str


class LmEvalScorer:
    """Adapter from :class:`evaluators.evaluate.Evaluator` (lm-eval tasks) to :class:`TaskScorer`."""

    def __init__(self, evaluator: Evaluator, tasks: Sequence[str]) -> None:
        self.evaluator = evaluator
        self.tasks = tuple(tasks)
        self.harness_version = str(evaluator.harness_version)
        self.task_hashes = dict(evaluator.task_hashes)
        self.settings = dict(evaluator.settings)
        self.n_docs = {task: evaluator.n_docs(task) for task in evaluator.tasks.tasks}

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        return self.evaluator.evaluate(subnet, fidelity, prior)


def check_task_names(names: Sequence[str]) -> None:
    """Refuse unknown lm-eval task names before anything is loaded (close matches suggested)."""
    bench = [n for n in names if n != HELDOUT_TASK]
    if bench:
        pack = TaskPack()
        try:
            pack.check_names(bench)
        finally:
            pack.close()


def build_scorers(settings: ScoringSettings, loaded: Any, space: SearchSpace | None = None) -> list[TaskScorer]:
    """The scorers ``settings`` need, for the supernet ``loaded`` (a
    :class:`~nas.model.directory.LoadedSupernet` or anything with its ``model``, ``space``,
    ``tokenizer_dir`` and ``load_tokenizer``): a :class:`HeldOutLoss` per ``heldout_loss``
    task and one :class:`LmEvalScorer` (built once, reused) for the lm-eval tasks."""
    scorers: list[TaskScorer] = []
    tokenizer = None
    for task in settings.tasks:
        if task.name != HELDOUT_TASK:
            continue
        if task.source != "random" and loaded.tokenizer_dir is not None and tokenizer is None:
            tokenizer = loaded.load_tokenizer()
        scorers.append(
            HeldOutLoss(
                loaded.model, n_examples=task.n_examples, seq_len=task.seq_len, source=task.source,
                seed=settings.seed, batch_size=settings.batch_size, tokenizer=tokenizer, task=task.name,
            )
        )
    bench = [t.name for t in settings.tasks if t.name != HELDOUT_TASK]
    if bench:
        numerics = str(getattr(settings, "numerics", DEFAULT_NUMERICS))
        options = ScoringOptions(dtype=settings.dtype, batch_size=settings.batch_size,
                                 numerics=DEFAULT_NUMERICS if numerics == "auto" else numerics)
        evaluator = Evaluator.from_loaded(loaded, bench, options=options, space=space or loaded.space,
                                          recheck_nats=float(getattr(settings, "recheck_nats", 0.0)))
        scorers.append(LmEvalScorer(evaluator, bench))
    return scorers


__all__ = ["LmEvalScorer", "ScoredTask", "ScoringSettings", "TaskScorer", "build_scorers", "check_task_names"]
