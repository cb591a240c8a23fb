"""Close calls in bf16, decided in fp32.

A bf16 forward pass rounds its matmuls' inputs and outputs to 8 bits of mantissa, so a
continuation's log-likelihood comes out a little off its fp32 value (on SmolLM2's largest
sub-network a median of 0.07 nats a request, 0.38 at the 99th percentile, with the default
mixed numerics; 0.12 and 0.69 with everything in bf16: ``bench/eval_throughput.py --parity``).
Where two answers of a multiple-choice document are further apart than that, the
document's acc, acc_norm and acc_bytes are what fp32 gives; where they are closer, bf16 may
pick the other one. :func:`close_call` finds those documents from the bf16 log-likelihoods
alone, taking each request's error to be at most ``recheck_nats`` (a spec's, default 0:
off), and the :class:`~evaluators.evaluate.Evaluator` scores only them again on an fp32 copy of the model
(:func:`fp32_reference`): bf16's speed on most documents, fp32's decisions on the close ones.

``recheck_nats`` is an assumed error, not a proven bound: a request whose bf16 error is
larger (1 % of SmolLM2's are above 0.38 nats with mixed numerics) can still flip a document
judged safe, which is why the parity benchmark counts the decisions that still differ.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.errors import NasError
from nas.model.directory import load_supernet, loaded_from
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

# the bf16 error to assume per request, in nats, where a spec turns the re-check on
# (recheck_nats; off by default). SmolLM2's largest sub-network on 200 documents per task of
# hellaswag, arc_easy and piqa (bench/eval_throughput.py --parity): about a quarter of the
# documents are close calls under it and no acc or acc_norm then differs from fp32 (piqa's
# differ by 0.02 without it, all-bf16); per-request errors all-bf16: median 0.13, p99 0.79,
# max 1.38 nats; with mixed numerics (the default since): median 0.07, p99 0.38, max 0.56
DEFAULT_RECHECK_NATS = 0.5


def close_call(lls: Sequence[float], choices: Sequence[str], nats: float) -> bool:
    """Could a per-request error of at most ``nats`` change the chosen answer of a
    multiple-choice document, by log-likelihood (acc), per character (acc_norm) or per
    byte (acc_bytes)? ``lls`` has one log-likelihood per choice, in order."""
    if len(lls) != len(choices) or len(lls) < 2:
        return False
    ll = np.asarray(lls, dtype=np.float64)
    for scale in (
        np.ones(len(choices)),
        np.array([max(1.0, float(len(c))) for c in choices]),
        np.array([max(1.0, float(len(c.encode("utf-8")))) for c in choices]),
    ):
        score, slack = ll / scale, nats / scale
        best = int(np.argmax(score))
        others = np.arange(len(score)) != best
        if np.any(score[best] - score[others] <= slack[best] + slack[others]):
            return True
    return False


def rechecks(task: Any) -> bool:
    """Whether ``task``'s decisions are argmaxes over per-choice log-likelihoods that
    :func:`close_call` understands: multiple-choice tasks without mutual information or
    exact_match (which reads the greedy flag), each request scored once."""
    kind = getattr(task, "OUTPUT_TYPE", None) or getattr(task.config, "output_type", None)
    metrics = set(task.aggregation())
    return kind == "multiple_choice" and not metrics & {"acc_mutual_info", "exact_match"} and (task.config.repeats or 1) == 1


def fp32_reference(model: Supernet) -> Supernet:
    """An fp32 model with ``model``'s weights: the directory it was loaded from, read again in
    fp32 (the unrounded weights, what an fp32 evaluation uses) while its weights are as loaded;
    otherwise (trained, fake-quantised, built in memory) a copy of them cast to fp32."""
    device = model.lm_head_weight.device
    source = loaded_from(model)
    if source is not None:
        try:
            return load_supernet(source, dtype="fp32", device=device).model
        except NasError as exc:
            log.warning("re-reading %s in fp32 for close calls failed (%s); using the loaded weights cast to fp32", source, exc)
    return copy.deepcopy(model).float().eval()


__all__ = ["DEFAULT_RECHECK_NATS", "close_call", "fp32_reference", "rechecks"]
