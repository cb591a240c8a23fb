"""Study-level fast path: load tasks and build requests once, then score many sub-networks.

An :class:`Evaluator` is built once per study: it resolves the task names through the
offline task pack (``TaskManager(include_defaults=False)`` over only the task files
used), loads the datasets, and builds lm-eval request instances lazily per document
(kept for the next candidate). The first candidate scored on a set of documents also fixes
their *scoring plan* (tokenisation, batches, padded tensors: :mod:`evaluators.plan`), kept
for every later candidate. Each :meth:`Evaluator.evaluate` call then only runs the
sub-network over that plan — resuming, where an earlier candidate had the same first
layers, from the residual streams it left in :attr:`Evaluator.prefix_cache`
(:mod:`evaluators.prefix`; bit-identical scores) — and aggregates with the tasks' own
``process_results``, filters and aggregation functions. :meth:`Evaluator.evaluate_many`
orders a batch of candidates so that neighbours share the most layers.

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
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lm_eval
import torch
from lm_eval.api import metrics as lm_metrics

from evaluators.errors import EvaluatorError
from evaluators.harness import ScoringOptions, SubnetLM, parse_eval_dtype, resolve_subnet
from evaluators.plan import LoglikelihoodPlan, plan_requests
from evaluators.prefix import PrefixCache, reuse_order, shared_cache
from evaluators.recheck import close_call, fp32_reference, rechecks
from evaluators.tasks import LoadedTasks, TaskPack
from evaluators.types import Fidelity, Metrics, TaskScore, scoring_settings
from nas.errors import NasError
from nas.model.directory import LoadedSupernet, loaded_from, mark_loaded, weights_state
from nas.model.dtypes import dtype_name
from nas.model.fused import resolve_kernels
from nas.model.heap import retain_freed_memory
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.stats import sample_stddev

log = logging.getLogger(__name__)

_FEWSHOT_SEED = 1234  # lm-eval's default
MAX_PLANS = 256  # scoring plans kept (one per task and document set)
# an Evaluator casts the supernet to the device's fast dtype (bf16 where native, else fp32) unless told otherwise
DEFAULT_OPTIONS = ScoringOptions(dtype="auto")


def subset_ids(task: str, n_docs: int, fidelity: Fidelity) -> list[int]:
    """The documents a fidelity evaluates (:meth:`Fidelity.doc_ids`): a prefix of the task's
    seeded order, in ascending order. Subsets of the same seed are nested: the first 100
    are inside the first 200, so a candidate promoted to a higher fidelity keeps its
    earlier examples."""
    return fidelity.doc_ids(task, n_docs)


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
    return float(sample_stddev(draws))


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
    per candidate. ``options`` (default :data:`DEFAULT_OPTIONS`: ``auto``, bf16 where native) say how every
    candidate is scored (see :class:`~evaluators.harness.ScoringOptions`); keyword
    ``settings`` are fields of it that override those of ``options`` (``dtype="fp32",
    batch_size=8``; an unknown name is a ``TypeError``). ``options.dtype`` is applied to
    the supernet in place when it differs (None keeps its dtype; fp32 for parity checks;
    fp16 is refused); log-likelihoods are the target logit minus an fp32 logsumexp unless
    ``logprobs="hflm"`` (HFLM's log-softmax in the logits' dtype, or ``softmax_dtype``), and a
    bf16 model keeps its residual stream and decisive logits in fp32 unless ``numerics="model"``;
    ``prefix_cache_bytes`` gives this evaluator a prefix cache of its own (default: the
    process's shared one, see :mod:`evaluators.prefix`); ``score_greedy`` is decided from
    the tasks (see :func:`reads_is_greedy`). ``bootstrap_iters`` sets the resamples for
    the stderr of non-mean metrics (perplexities). ``recheck_nats`` (bf16 models only; default 0, off;
    :data:`~evaluators.recheck.DEFAULT_RECHECK_NATS` is the value measured to pay) is the bf16 error assumed per
    request: multiple-choice documents whose answer errors that large could change are scored
    again in fp32 (:mod:`evaluators.recheck`); ``last_stats`` counts them (``rechecked_docs``
    of ``scored_docs``).
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
        recheck_nats: float = 0.0,
        **settings: Any,
    ) -> None:
        opts = replace(options if options is not None else DEFAULT_OPTIONS, **settings)  # unknown names: TypeError
        start = time.perf_counter()
        if isinstance(tasks, str):
            tasks = [tasks]
        target = parse_eval_dtype(opts.dtype, model.lm_head_weight.device)
        if target is not None and model.lm_head_weight.dtype != target:
            source = loaded_from(model)
            model.to(target)
            if source is not None:  # still the directory's weights, rounded: close calls re-read them in fp32
                mark_loaded(model, source)
        model.eval()
        if model.lm_head_weight.device.type == "cpu":
            retain_freed_memory()  # the packed forward's large temporaries: reused, not page-faulted in anew
        bf16 = model.lm_head_weight.dtype == torch.bfloat16
        nats = recheck_nats
        if not isinstance(nats, (int, float)) or not math.isfinite(nats) or nats < 0:
            raise EvaluatorError(f"recheck_nats={recheck_nats!r} must be a number of nats >= 0 (0 turns the fp32 re-check of close calls off)")
        self.recheck_nats = float(nats) if bf16 else 0.0  # an fp32 model has nothing to re-check
        try:  # resolved once: every adapter (and the cache key) follows this evaluator's choice
            self.fused = resolve_kernels(opts.kernels, model.lm_head_weight.dtype, model.lm_head_weight.device)
        except NasError as exc:
            raise EvaluatorError(str(exc)) from None
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
        self._rechecks = {name: bool(self.recheck_nats) and rechecks(task) for name, task in self.tasks.tasks.items()}
        self._reference: tuple[tuple[tuple[int, int], ...], Supernet] | None = None  # (weights it copies, fp32 model)
        # the adapters share the already cast model: no dtype of their own
        self._lm_options = replace(opts, dtype=None, score_greedy=self.score_greedy, kernels="fused" if self.fused else "eager")
        self.harness_version = lm_eval.__version__
        self.settings = self._settings()
        self.last_stats: dict[str, int] = {}  # model calls and real tokens of the last evaluate()
        # one scoring plan per (task, request type, documents), reused by every candidate
        self._plans: OrderedDict[tuple[str, str, tuple[int, ...]], LoglikelihoodPlan] = OrderedDict()
        self.plan_builds = 0
        # the process's shared cache unless this evaluator is given a budget of its own
        budget = opts.prefix_cache_bytes
        self.prefix_cache = shared_cache(model.lm_head_weight.device) if budget is None else PrefixCache(budget)
        # store only the boundaries another sub-network of ``space`` can resume from (False: any
        # depth, as before; scores are the same either way, only what the cache holds changes)
        self.reuse_branch_depths = True
        self.setup_s = time.perf_counter() - start
        log.info("evaluator ready: %d tasks in %.1f s, %s kernels", len(self.tasks.tasks), self.setup_s,
                 "fused" if self.fused else "eager")

    @classmethod
    def from_loaded(cls, loaded: LoadedSupernet, tasks: Sequence[str], **kwargs: Any) -> Evaluator:
        """An Evaluator over a loaded supernet directory, with its tokenizer and search space."""

        try:
            tokenizer = loaded.load_tokenizer()
        except NasError as exc:
            raise EvaluatorError(str(exc)) from None
        kwargs.setdefault("space", loaded.space)
        return cls(loaded.model, tokenizer, tasks, **kwargs)

    def _settings(self) -> dict[str, str]:
        """task (and group) -> the settings that change its scores (the cache key's part):
        the model's dtype, the context window, the log-softmax dtype, the few-shot count, the
        assumed bf16 error under which close calls were re-scored in fp32, the fused kernels
        (absent when eager: the key scores had before fused kernels existed) and mixed numerics
        over bf16 weights (absent otherwise: the key scores had before the option existed)."""
        dtype = dtype_name(self.model.lm_head_weight.dtype)
        if self.options.logprobs == "exact":
            softmax = "lse-fp32"  # target logit minus an fp32 logsumexp, whatever the logits' dtype
        else:
            softmax = dtype_name(self.options.softmax_dtype) if self.options.softmax_dtype is not None else dtype
        max_length = int(self.options.max_length or self.model.config.max_seq_len)
        kernels = "fused" if self.fused else None
        numerics = "mixed" if self.options.numerics == "mixed" and dtype != "fp32" else None
        out = {
            name: scoring_settings(dtype=dtype, max_length=max_length, softmax=softmax,
                                   num_fewshot=int(obj.config.num_fewshot or 0),
                                   recheck_fp32=self.recheck_nats if self._rechecks[name] else None, kernels=kernels,
                                   numerics=numerics)
            for name, obj in self.tasks.tasks.items()
        }
        for group, obj in self.tasks.groups.items():
            checked = any(self._rechecks.get(t.task_name, False) for t in obj.get_all_tasks())
            out[group] = scoring_settings(dtype=dtype, max_length=max_length, softmax=softmax,
                                          recheck_fp32=self.recheck_nats if checked else None, kernels=kernels,
                                          numerics=numerics)
        return out

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
    def evaluate(self, subnet: SubnetConfig | str, fidelity: Fidelity | None = None, prior: Metrics | None = None) -> Metrics:
        """Score ``subnet`` on every task at ``fidelity`` (default: all documents).

        ``prior``: this sub-network's scores at a fidelity nested in ``fidelity`` (e.g. the
        rung below). Tasks whose metrics are all means of per-example scores then score
        only the documents ``prior`` lacks and merge; the result is what scoring every
        document would give (the same items, aggregated in the same order). Other tasks
        are scored in full.
        """
        fidelity = fidelity or Fidelity()
        start = time.perf_counter()
        lm = self.lm(subnet)
        passes, skipped = self.prefix_cache.layer_passes, self.prefix_cache.layer_passes_skipped
        known = self._known_scores(prior, fidelity)
        # store only the residual streams another sub-network of the space can resume from
        branches = self.space.branch_depths(lm.subnet) if self.reuse_branch_depths else None
        chosen: dict[str, list[int]] = {}
        rechecked = 0
        for task in self.tasks.tasks:
            chosen[task] = self.subset(task, fidelity)
            done = known.get(task, {})
            # one model pass per task and request type: a task's batches (hence its scores, to
            # the last bit) never depend on how many documents the other tasks score
            by_type: dict[str, list[Any]] = defaultdict(list)
            for doc_id in chosen[task]:
                if doc_id in done:
                    continue
                for inst in self.instances(task, doc_id):
                    inst.resps, inst.filtered_resps = [], {}
                    by_type[inst.request_type].extend([inst] * (inst.repeats or 1))
            for request_type, requests in by_type.items():
                if request_type == "loglikelihood":
                    ids = tuple(d for d in chosen[task] if d not in done)
                    responses = lm.run_plan(self._plan(lm, task, ids, requests), self.prefix_cache, branches)
                else:
                    responses = getattr(lm, request_type)(requests, disable_tqdm=True)
                for response, inst in zip(responses, requests, strict=True):
                    inst.resps.append(response)
            if self._rechecks[task]:
                fresh = [d for d in chosen[task] if d not in done]
                rechecked += self._recheck(lm.subnet, task, fresh)

        scores: list[TaskScore] = []
        summary: dict[str, dict[str, Any]] = {}
        for task, ids in chosen.items():
            task_scores, summary[task] = self._score_task(task, ids, known.get(task, {}))
            scores.extend(task_scores)
        for group, obj in self.tasks.groups.items():
            scores.extend(self._score_group(group, obj, summary))
        self.last_stats = {
            "n_tokens": lm.n_tokens,
            "n_forward": lm.n_forward,
            "layer_passes": self.prefix_cache.layer_passes - passes,
            "layer_passes_skipped": self.prefix_cache.layer_passes_skipped - skipped,
            "rechecked_docs": rechecked,
            "scored_docs": sum(len([d for d in ids if d not in known.get(t, {})]) for t, ids in chosen.items()),
        }
        return Metrics(
            scores=tuple(scores),
            fidelity=fidelity.label,
            harness_version=self.harness_version,
            task_hashes=dict(self.task_hashes),
            wall_s=time.perf_counter() - start,
            n_model_calls=lm.n_forward,
        )

    def _recheck(self, subnet: SubnetConfig, task: str, ids: list[int]) -> int:
        """Score again in fp32 the documents of ``ids`` whose bf16 answers are close calls
        (:func:`evaluators.recheck.close_call` under ``recheck_nats``); their responses are
        replaced. Returns how many there were."""
        obj = self.tasks.tasks[task]
        close = []
        for doc_id in ids:
            insts = self._instances[task][doc_id]
            if close_call([inst.resps[0][0] for inst in insts], obj.doc_to_choice(insts[0].doc), self.recheck_nats):
                close.append(doc_id)
        if not close:
            return 0
        requests = [inst for doc_id in close for inst in self._instances[task][doc_id]]
        state = weights_state(self.model)
        if self._reference is None or self._reference[0] != state:  # built once, again only if the weights change
            self._reference = (state, fp32_reference(self.model))
        reference = self._reference[1]
        lm = SubnetLM(reference, subnet, tokenizer=self.tokenizer, options=replace(self._lm_options, kernels="eager"),
                      encode_cache=self._encode_cache)
        plan = lm.plan([(None, ctx, cont) for ctx, cont in plan_requests(lm, requests)])
        for inst, response in zip(requests, lm.run_plan(plan), strict=True):
            inst.resps = [response]
        return len(close)

    def _plan(self, lm: SubnetLM, task: str, ids: tuple[int, ...], requests: list[Any]) -> LoglikelihoodPlan:
        """The scoring plan of ``task``'s loglikelihood requests on documents ``ids`` (built on
        first use: tokenisation, batches, tensors; then kept for every candidate)."""
        key = (task, "loglikelihood", ids)
        plan = self._plans.get(key)
        if plan is None:
            plan = lm.plan([(None, ctx, cont) for ctx, cont in plan_requests(lm, requests)])
            self.plan_builds += 1
            self._plans[key] = plan
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def prepare(self, fidelity: Fidelity | None = None) -> float:
        """Build the request instances and scoring plans of ``fidelity``'s documents now (what
        the first candidate would otherwise pay); returns the seconds it took."""
        start = time.perf_counter()
        lm = self.lm("largest")
        for task in self.tasks.tasks:
            ids = tuple(self.subset(task, fidelity or Fidelity()))
            requests = [inst for d in ids for inst in self.instances(task, d) if inst.request_type == "loglikelihood"
                        for _ in range(inst.repeats or 1)]
            if requests:
                self._plan(lm, task, ids, requests)
        return time.perf_counter() - start

    def evaluate_many(self, subnets: Sequence[SubnetConfig], fidelity: Fidelity | None = None) -> list[Metrics]:
        """:meth:`evaluate` for each sub-network, run in the order that shares the most layers
        with the one before (sorted by their per-layer paths, a walk of their trie); results
        in the order given."""
        results: list[Metrics | None] = [None] * len(subnets)
        for i in reuse_order(subnets):
            results[i] = self.evaluate(subnets[i], fidelity)
        return results  # type: ignore[return-value]

    def _known_scores(self, prior: Metrics | None, fidelity: Fidelity) -> dict[str, dict[int, dict[str, float]]]:
        """task -> doc id -> {metric: item} from ``prior``, for the tasks it can stand in for:
        ``prior`` is nested in ``fidelity``, every metric of the task is a mean of
        per-example scores, and ``prior`` has per-example scores for each of them."""
        if prior is None or not fidelity.contains(Fidelity.parse(prior.fidelity)):
            return {}
        out: dict[str, dict[int, dict[str, float]]] = {}
        for task, obj in self.tasks.tasks.items():
            aggregations = obj.aggregation()
            if not aggregations or any(agg is not lm_metrics.mean for agg in aggregations.values()):
                continue
            mine = [s for s in prior.scores if s.task == task]
            names = {s.metric.split(",", 1)[0] for s in mine}
            if not mine or names != set(aggregations) or any(len(s.example_ids) != s.n_examples or not s.example_ids for s in mine):
                continue
            docs: dict[int, dict[str, float]] = {}
            for s in mine:
                for doc_id, value in zip(s.example_ids, s.example_scores):
                    docs.setdefault(int(doc_id), {})[s.metric] = float(value)
            if all(len(v) == len(mine) for v in docs.values()):
                out[task] = docs
        return out

    def _score_task(self, task: str, ids: list[int], known: dict[int, dict[str, float]]) -> tuple[list[TaskScore], dict[str, Any]]:
        """Metrics of ``task`` over documents ``ids``: documents in ``known`` take their
        per-example scores from there, the others from their (just computed) responses."""
        obj = self.tasks.tasks[task]
        fresh = [doc_id for doc_id in ids if doc_id not in known]
        flat = [inst for doc_id in fresh for inst in self._instances[task][doc_id]]
        for ensemble in obj._filters:  # the task's own filters (lm-eval's Task.apply_filters)
            ensemble.apply(flat)
        computed: dict[int, dict[tuple[str, str], Any]] = {}
        filter_keys = list(flat[0].filtered_resps) if flat else ["none"]
        for key in filter_keys:
            for doc_id in fresh:
                insts = self._instances[task][doc_id]
                values = obj.process_results(insts[0].doc, [inst.filtered_resps[key] for inst in insts])
                for metric, value in values.items():
                    computed.setdefault(doc_id, {})[(metric, key)] = value
        names = list(dict.fromkeys(k for doc in computed.values() for k in doc))
        if not names:  # every document known: the metric names come from the prior
            names = list(dict.fromkeys(
                (m.split(",", 1)[0], m.split(",", 1)[1] if "," in m else "none") for doc in known.values() for m in doc
            ))
        aggregations = obj.aggregation()
        scores: list[TaskScore] = []
        summary: dict[str, Any] = {"sample_len": len(ids)}
        for metric, key in names:
            name = metric if key == "none" else f"{metric},{key}"
            items = [known[d][name] if d in known else computed[d][(metric, key)] for d in ids]
            agg = aggregations.get(metric, lm_metrics.mean)
            value = float(agg(items))
            seed = int(hashlib.sha256(f"{task}/{metric}".encode()).hexdigest()[:8], 16)
            stderr = metric_stderr(agg, items, iters=self.bootstrap_iters, seed=seed)
            summary[f"{metric},{key}"] = value
            summary[f"{metric}_stderr,{key}"] = stderr if not math.isnan(stderr) else "N/A"
            scores.append(
                TaskScore(
                    task=task,
                    metric=name,
                    value=value,
                    stderr=stderr,
                    n_examples=len(items),
                    example_ids=tuple(ids),
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
        """Remove the generated task files, this model's stored residual streams and its fp32 copy."""
        self.prefix_cache.drop(self.model)
        self._reference = None
        self.pack.close()


def reads_is_greedy(task: Any) -> bool:
    """Whether lm-eval's ``process_results`` of ``task`` reads the ``is_greedy`` flag of its
    loglikelihood results: ``loglikelihood`` tasks (their ``acc``, e.g. lambada) and
    multiple-choice tasks scored with ``exact_match``; multiple-choice acc/acc_norm do not."""
    kind = getattr(task, "OUTPUT_TYPE", None) or getattr(task.config, "output_type", None)
    if kind == "loglikelihood":
        return True
    return kind == "multiple_choice" and "exact_match" in task.aggregation()


__all__ = ["DEFAULT_OPTIONS", "Evaluator", "metric_stderr", "reads_is_greedy", "reuse_order", "subset_ids"]
