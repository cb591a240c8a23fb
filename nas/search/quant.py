"""Quantisation as a search axis: a candidate is a sub-network *and* the weight format it is
deployed in (spec ``quant_choices``, e.g. ``[bf16, q8_0, q4_0]``; whole-model formats).

* **Identity.** The format is part of the candidate's :class:`~nas.model.subnet.SubnetConfig`
  (``quant``), so its JSON, hash, database row, evaluation cache key and costs are its own;
  ``nas export --format gguf`` writes the trial's format by default.
* **Sampling.** :func:`suggest_quant` asks the trial for ``quant`` after the sub-network's
  sizes (one categorical parameter, in every trial; the ``grid`` plan does not cover it).
* **Scoring.** :func:`quant_scorers` builds the study's scorers once per format over a copy
  of the supernet whose weight matrices went through that format's quantise/dequantise
  (:func:`nas.model.fakequant.fake_quantized`, once per study), and routes each candidate
  to the scorers of its format (:class:`QuantRoutedScorer`). The routed scorers report the
  same task hashes and settings, so paired comparisons across formats stay paired. In a
  ``bf16`` study the dequantised weights are then held in bf16 like every weight (scores
  differ from llama.cpp's by that rounding on top of its kernels'; ``dtype: fp32`` avoids it).
* **Costs.** ``weight_memory_bytes`` (and ``memory``) of a quantised candidate are its
  format's bytes (:func:`evaluators.cost.quant_weight_bytes`).
* **Exact slicing.** Quantising the supernet once and slicing it equals quantising each
  sub-network only when every kept input width is a whole number of blocks:
  :func:`check_quant_space` refuses a space with other widths, naming the layer and the
  widths that would work.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluators.scorer import TaskScorer
from evaluators.types import Fidelity, Metrics
from nas.errors import NasError
from nas.model.fakequant import fake_quantized
from nas.model.quant import parse_quant
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig

log = logging.getLogger(__name__)

QUANT_PARAM = "quant"


def suggest_quant(trial: Any, choices: Sequence[str], subnet: SubnetConfig) -> SubnetConfig:
    """``subnet`` in the weight format the trial suggests (``subnet`` itself without choices)."""
    if not choices:
        return subnet
    return dataclasses.replace(subnet, quant=trial.suggest_categorical(QUANT_PARAM, list(choices)))


def check_quant_space(choices: Sequence[str], space: SearchSpace) -> None:
    """Refuse ``space`` when a block format of ``choices`` cannot hold one of its widths:
    d_model, each layer's ``n_head * head_dim`` and ``d_ff`` choices must be whole blocks."""
    hd = space.config.head_dim
    problems: list[str] = []
    for fmt in (parse_quant(q) for q in choices):
        if not fmt.is_block:
            continue
        b = fmt.block_size
        bad_d = [d for d in space.d_model_choices if d % b]
        if bad_d:
            problems.append(f"d_model_choices {bad_d} (use multiples of {b})")
        for i, layer in enumerate(space.layers):
            bad_ff = [f for f in layer.d_ff if f % b]
            if bad_ff:
                good = sorted({max(b, f // b * b) for f in bad_ff})
                problems.append(f"layer {i} d_ff_choices {bad_ff} (e.g. {good} instead)")
            bad_h = [h for h in layer.n_head if (h * hd) % b]
            if bad_h:
                problems.append(f"layer {i} n_head_choices {bad_h} ({hd}-wide heads: {[h * hd for h in bad_h]} channels)")
        if problems:
            shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
            raise NasError(f"quant_choices: {fmt.name} stores weight rows in blocks of {b}, so every kept width must be a "
                           f"multiple of {b}: {shown}. Change the space's choices or drop {fmt.name} from quant_choices")


class QuantRoutedScorer:
    """One task scorer per weight format (``""`` = unquantised); a candidate is scored by the
    scorer of its ``subnet.quant``. Tasks, hashes, settings and documents are the base's."""

    def __init__(self, by_quant: Mapping[str, TaskScorer]) -> None:
        self.by_quant = dict(by_quant)
        base = self.by_quant[""]
        self.tasks = base.tasks
        self.harness_version = base.harness_version
        self.task_hashes = base.task_hashes
        self.settings = base.settings
        self.n_docs = base.n_docs

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        try:
            scorer = self.by_quant[subnet.quant]
        except KeyError:
            raise NasError(f"sub-network {subnet.summary()} is in format {subnet.quant!r}, which this study does not score "
                           f"(quant_choices: {sorted(q for q in self.by_quant if q)}); add it to quant_choices") from None
        return scorer.evaluate(subnet, fidelity, prior)


def quant_scorers(choices: Sequence[str], loaded: Any, build: Callable[[Any], list[TaskScorer]]) -> list[TaskScorer]:
    """The study's scorers (``build(loaded)``), routed per weight format of ``choices`` to
    scorers over fake-quantised copies of ``loaded``'s supernet."""
    base = build(loaded)
    if not choices:
        return base
    per: dict[str, list[TaskScorer]] = {"": base}
    for q in choices:
        log.info("fake-quantising the supernet's weights as %s (once per study)", q)
        per[q] = build(dataclasses.replace(loaded, model=fake_quantized(loaded.model, q).eval()))
    return [QuantRoutedScorer({q: scorers[i] for q, scorers in per.items()}) for i in range(len(base))]


__all__ = ["QUANT_PARAM", "QuantRoutedScorer", "check_quant_space", "quant_scorers", "suggest_quant"]
