"""Study-level fast path: load tasks and build requests once, then score many sub-networks.

An :class:`Evaluator` is built once per study: it resolves the task names through the
offline task pack (``TaskManager(include_defaults=False)`` over only the task files
used), loads the datasets, and builds lm-eval request instances lazily per document
(kept for the next candidate). Each :meth:`Evaluator.evaluate` call then only runs the
sub-network over the requests of the fidelity's seeded document subset and aggregates
with the tasks' own ``process_results``, filters and aggregation functions.

Responses are never cached across candidates (lm-eval's ``use_cache`` keys on the
request only and would hand one sub-network's answers to another): each call resets
every instance's responses before it runs the model. Tokenisation *is* memoised (token
ids depend only on the tokenizer). An Evaluator is not thread-safe; use one per worker.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.api import metrics as lm_metrics

from evaluators.errors import EvaluatorError
from evaluators.harness import ScoringOptions, SubnetLM, parse_eval_dtype, resolve_subnet
from evaluators.tasks import LoadedTasks, TaskPack
from evaluators.types import Fidelity, Metrics, TaskScore
from nas.errors import NasError
from nas.model.directory import LoadedSupernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

_FEWSHOT_SEED = 1234  # lm-eval's default
DEFAULT_OPTIONS = ScoringOptions(dtype="bf16")  # an Evaluator casts the supernet to bf16 unless told otherwise


def subset_ids(task: str, n_docs: int, fidelity: Fidelity) -> list[int]:
    """The documents a fidelity evaluates: a seeded shuffle of ``range(n_docs)`` (seeded by
    the task name and ``fidelity.seed``), cut to ``fidelity.limit``, in ascending order.

    Subsets of the same seed are nested: the first 100 are inside the first 200, so a
    candidate promoted to a higher fidelity keeps its earlier examples.
    """
    if fidelity.limit is None or fidelity.limit >= n_docs:
        return list(range(n_docs))
    order = list(range(n_docs))
    random.Random(f"{fidelity.seed}:{task}").shuffle(order)
    return sorted(order[: fidelity.limit])


def _sample_stddev(values: Sequence[float]) -> float:
    mu = sum(values) / len(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def metric_stderr(agg: Callable[[list[Any]], float], items: list[Any], *, iters: int, seed: int) -> float:
    """Standard error of ``agg(items)``: closed form for means (lm-eval's), else a seeded
    bootstrap of ``iters`` resamples (deterministic, single process); NaN when undefined."""
    if len(items) < 2:
        return math.nan
    if agg is lm_metrics.mean:
        return float(lm_metrics.mean_stderr(items))
    if agg is lm_metrics.acc_all:
        return float(lm_metrics.acc_all_stderr(items))
    if iters < 2:
        return math.nan
    rng = random.Random(seed)
    n = len(items)
    draws = [agg([items[rng.randrange(n)] for _ in range(n)]) for _ in range(iters)]
    return float(_sample_stddev(draws))


def _example_score(item: Any) -> float:
    """One example's score as a float (a (loglikelihood, weight) pair gives its loglikelihood)."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    try:
        return float(item)
    except (TypeError, ValueError):
        return math.nan


class Evaluator:
    """Scores sub-networks of one supernet on a fixed list of lm-eval tasks.

    Build it once per study (tasks load and instances are kept); call :meth:`evaluate`
    per candidate. ``options`` (default :data:`DEFAULT_OPTIONS`, bf16) say how every
    candidate is scored (see :class:`~evaluators.harness.ScoringOptions`); keyword
    ``settings`` are fields of it that override those of ``options`` (``dtype="fp32",
    batch_size=8``; an unknown name is a ``TypeError``). ``options.dtype`` is applied to
    the supernet in place when it differs (None keeps its dtype; fp32 for parity checks;
    fp16 is refused); ``softmax_dtype="fp32"`` keeps bf16 runs from rounding each
    loglikelihood to bf16 (which ties close choices); ``score_greedy`` is decided from
    the tasks (see :func:`reads_is_greedy`). ``bootstrap_iters`` sets the resamples for
    the stderr of non-mean metrics (perplexities).
    """
    def __init__(
        self,
        model: Supernet,
        tokenizer: Any,
        tasks: Sequence[str],
        *,
        options: ScoringOptions | None = None,
        space: SearchSpace | None = None,
        data_dir: str | Path | None = None,
        bootstrap_iters: int = 500,
        **settings: Any,
    ) -> None:
        opts = replace(options if options is not None else DEFAULT_OPTIONS, **settings)  # unknown names: TypeError
        start = time.perf_counter()
        if isinstance(tasks, str):
            tasks = [tasks]
        target = parse_eval_dtype(opts.dtype)
        if target is not None and model.lm_head_weight.dtype != target:
            model.to(target)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.space = space or SearchSpace.default(model.config, model.layer_rank)
        self.options = opts
        self.bootstrap_iters = bootstrap_iters
        self.pack = TaskPack(data_dir)
        self.tasks: LoadedTasks = self.pack.load(list(tasks))
        self.task_hashes: dict[str, str] = dict(self.tasks.hashes)
        for group, obj in self.tasks.groups.items():
            children = sorted(self.task_hashes[t.task_name] for t in obj.get_all_tasks())
            self.task_hashes[group] = hashlib.sha256(",".join(children).encode()).hexdigest()[:16]
        self._docs = {name: task.eval_docs for name, task in self.tasks.tasks.items()}
        self._instances: dict[str, dict[int, list[Any]]] = {name: {} for name in self.tasks.tasks}
        self._encode_cache: dict[tuple[str, bool | None], list[int]] = {}
        self.score_greedy = any(reads_is_greedy(task) for task in self.tasks.tasks.values())
        # the adapters share the already cast model: no dtype of their own
        self._lm_options = replace(opts, dtype=None, score_greedy=self.score_greedy)
        self.harness_version = lm_eval.__version__
        self.last_stats: dict[str, int] = {}  # model calls and real tokens of the last evaluate()
        self.setup_s = time.perf_counter() - start
        log.info("evaluator ready: %d tasks in %.1f s", len(self.tasks.tasks), self.setup_s)

    @classmethod
    def from_loaded(cls, loaded: LoadedSupernet, tasks: Sequence[str], **kwargs: Any) -> Evaluator:
        """An Evaluator over a loaded supernet directory, with its tokenizer and search space."""

        try:
            tokenizer = loaded.load_tokenizer()
        except NasError as exc:
            raise EvaluatorError(str(exc)) from None
        kwargs.setdefault("space", loaded.space)
        return cls(loaded.model, tokenizer, tasks, **kwargs)

    # --------------------------------------------------------------- pieces
    def n_docs(self, task: str) -> int:
        return len(self._docs[task])

    def subset(self, task: str, fidelity: Fidelity) -> list[int]:
        return subset_ids(task, self.n_docs(task), fidelity)

    def lm(self, subnet: SubnetConfig | str) -> SubnetLM:
        """An lm-eval LM bound to ``subnet`` (shares the model, tokenizer and token cache)."""
        return SubnetLM(
            self.model,
            resolve_subnet(subnet, self.model, self.space),
            tokenizer=self.tokenizer,
            options=self._lm_options,
            encode_cache=self._encode_cache,
        )

    def instances(self, task: str, doc_id: int) -> list[Any]:
        """The request instances of one document (built on first use, then kept)."""
        built = self._instances[task].get(doc_id)
        if built is None:
            obj = self.tasks.tasks[task]
            doc = self._docs[task][doc_id]
            shots = obj.config.num_fewshot or 0
            ctx = obj.fewshot_context(doc, num_fewshot=shots, gen_prefix=obj.doc_to_prefix(doc))
            made = obj.construct_requests(doc=doc, ctx=ctx, metadata=(task, doc_id, obj.config.repeats))
            built = sorted(made if isinstance(made, list) else [made], key=lambda inst: inst.idx)
            self._instances[task][doc_id] = built
        return built

    # -------------------------------------------------------------- evaluate
    def evaluate(self, subnet: SubnetConfig | str, fidelity: Fidelity | None = None) -> Metrics:
        """Score ``subnet`` on every task at ``fidelity`` (default: all documents)."""
        fidelity = fidelity or Fidelity()
        start = time.perf_counter()
        lm = self.lm(subnet)
        chosen: dict[str, list[int]] = {}
        by_type: dict[str, list[Any]] = defaultdict(list)
        for task in self.tasks.tasks:
            chosen[task] = self.subset(task, fidelity)
            for doc_id in chosen[task]:
                for inst in self.instances(task, doc_id):
                    inst.resps, inst.filtered_resps = [], {}
                    by_type[inst.request_type].extend([inst] * (inst.repeats or 1))
        for request_type, requests in by_type.items():
            responses = getattr(lm, request_type)(requests, disable_tqdm=True)
            for response, inst in zip(responses, requests, strict=True):
                inst.resps.append(response)

        scores: list[TaskScore] = []
        summary: dict[str, dict[str, Any]] = {}
        for task, ids in chosen.items():
            task_scores, summary[task] = self._score_task(task, ids)
            scores.extend(task_scores)
        for group, obj in self.tasks.groups.items():
            scores.extend(self._score_group(group, obj, summary))
        self.last_stats = {"n_tokens": lm.n_tokens, "n_forward": lm.n_forward}
        return Metrics(
            scores=tuple(scores),
            fidelity=fidelity.label,
            harness_version=self.harness_version,
            task_hashes=dict(self.task_hashes),
            wall_s=time.perf_counter() - start,
            n_model_calls=lm.n_forward,
        )

    def _score_task(self, task: str, ids: list[int]) -> tuple[list[TaskScore], dict[str, Any]]:
        obj = self.tasks.tasks[task]
        flat = [inst for doc_id in ids for inst in self._instances[task][doc_id]]
        for ensemble in obj._filters:  # the task's own filters (lm-eval's Task.apply_filters)
            ensemble.apply(flat)
        raw: dict[tuple[str, str], list[Any]] = defaultdict(list)
        raw_ids: dict[tuple[str, str], list[int]] = defaultdict(list)
        for key in flat[0].filtered_resps:
            for doc_id in ids:
                insts = self._instances[task][doc_id]
                values = obj.process_results(insts[0].doc, [inst.filtered_resps[key] for inst in insts])
                for metric, value in values.items():
                    raw[(metric, key)].append(value)
                    raw_ids[(metric, key)].append(doc_id)
        aggregations = obj.aggregation()
        scores: list[TaskScore] = []
        summary: dict[str, Any] = {"sample_len": len(ids)}
        for (metric, key), items in raw.items():
            agg = aggregations.get(metric, lm_metrics.mean)
            value = float(agg(items))
            seed = int(hashlib.sha256(f"{task}/{metric}".encode()).hexdigest()[:8], 16)
            stderr = metric_stderr(agg, items, iters=self.bootstrap_iters, seed=seed)
            name = metric if key == "none" else f"{metric},{key}"
            summary[f"{metric},{key}"] = value
            summary[f"{metric}_stderr,{key}"] = stderr if not math.isnan(stderr) else "N/A"
            scores.append(
                TaskScore(
                    task=task,
                    metric=name,
                    value=value,
                    stderr=stderr,
                    n_examples=len(items),
                    example_ids=tuple(raw_ids[(metric, key)]),
                    example_scores=tuple(_example_score(v) for v in items),
                )
            )
        return scores, summary

    def _score_group(self, group: str, obj: Any, summary: dict[str, dict[str, Any]]) -> list[TaskScore]:
        """A group's aggregate metrics, computed by lm-eval's own ``Group.aggregate``."""
        merged = obj.aggregate(summary)
        scores = []
        for key, value in merged.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = merged.get(f"{metric}_stderr,{filt}")
            scores.append(
                TaskScore(
                    task=group,
                    metric=metric if filt == "none" else key,
                    value=float(value),
                    stderr=float(stderr) if isinstance(stderr, (int, float)) else math.nan,
                    n_examples=int(merged.get("sample_len", 0)),
                )
            )
        return scores

    def close(self) -> None:
        """Remove the generated task files."""
        self.pack.close()


def reads_is_greedy(task: Any) -> bool:
    """Whether lm-eval's ``process_results`` of ``task`` reads the ``is_greedy`` flag of its
    loglikelihood results: ``loglikelihood`` tasks (their ``acc``, e.g. lambada) and
    multiple-choice tasks scored with ``exact_match``; multiple-choice acc/acc_norm do not."""
    kind = getattr(task, "OUTPUT_TYPE", None) or getattr(task.config, "output_type", None)
    if kind == "loglikelihood":
        return True
    return kind == "multiple_choice" and "exact_match" in task.aggregation()


__all__ = ["DEFAULT_OPTIONS", "Evaluator", "metric_stderr", "reads_is_greedy", "subset_ids"]
