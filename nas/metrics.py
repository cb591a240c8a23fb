"""The vocabulary of what a study measures: objectives, task metrics and cost names.

One table for each question every view asks, so that the search, ``nas status``,
``nas results``, the report and the web pages can never disagree:

* which metric is a task's main one (:data:`DEFAULT_TASK_METRIC`, then
  :data:`MAIN_METRIC_PREFERENCE`);
* which metrics are lower-is-better (:data:`LOWER_IS_BETTER`) and so which way any
  column is better (:func:`default_direction`);
* which spec cost names sum which cost-model values (:data:`COST_METRICS`), their
  aliases and their labels;
* :class:`Objective`: one axis of a study (a column, its direction and label).

Plain data, no torch, no other ``nas`` code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]

#: The aggregate of a study's tasks (mean, or weighted, of each task's main metric).
ACCURACY = "accuracy"
#: The built-in held-out-loss task (metric ``loss``).
HELDOUT_TASK = "heldout_loss"

#: Main metric of well-known tasks (lm-eval's conventions); other tasks default to ``acc``.
DEFAULT_TASK_METRIC = {
    "hellaswag": "acc_norm",
    "arc_challenge": "acc_norm",
    "openbookqa": "acc_norm",
    "piqa": "acc",
    "arc_easy": "acc",
    "winogrande": "acc",
    "boolq": "acc",
    "copa": "acc",
    "lambada_openai": "acc",
    "wikitext": "word_perplexity",
    "blimp": "acc",
    HELDOUT_TASK: "loss",
}
#: A task's main metric when the task is not in :data:`DEFAULT_TASK_METRIC`, among those
#: it reports, in this order.
MAIN_METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match", "f1", "mcc")
#: Metrics where lower is better (every other task metric is maximised).
LOWER_IS_BETTER = frozenset({"loss", "nll", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ppl"})

#: Cost objectives and constraints: spec name -> (cost-model values summed, method).
COST_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "params": (("params",), "analytic"),
    "non_embedding_params": (("non_embedding_params",), "analytic"),
    "active_params": (("active_params",), "analytic"),
    "flops_per_token": (("flops_per_token",), "analytic"),
    "weight_memory_bytes": (("weight_memory_bytes",), "analytic"),
    "kv_cache_bytes": (("kv_cache_bytes",), "analytic"),
    "memory": (("weight_memory_bytes", "kv_cache_bytes"), "analytic"),
    "predicted_latency_ms": (("predicted_latency_ms",), "predicted"),
    "latency_ms": (("prefill_latency_ms",), "measured"),
    # llama.cpp prefill, from a per-device table calibrated on the engine's timings
    "predicted_engine_latency_ms": (("predicted_engine_latency_ms",), "predicted"),
}
#: Measured in llama.cpp on an exported GGUF (``nas export --verify``), never during a search:
#: a spec naming it is pointed at ``predicted_engine_latency_ms``.
MEASURED_ENGINE_COST = "engine_latency_ms"
COST_ALIASES = {
    "non_embedding": "non_embedding_params",
    "flops": "flops_per_token",
    "predicted_latency": "predicted_latency_ms",
    "latency": "latency_ms",
    "measured_latency": "latency_ms",
    "measured_latency_ms": "latency_ms",
    "predicted_engine_latency": "predicted_engine_latency_ms",
}
#: Other names users type for columns (on top of :data:`COST_ALIASES`).
COLUMN_ALIASES = {"aggregate_accuracy": ACCURACY, "mean_accuracy": ACCURACY, "memory_bytes": "memory", **COST_ALIASES}
#: Costs where higher is better (everything else that is a cost is minimised).
HIGHER_IS_BETTER_COSTS = frozenset({"decode_tokens_per_s", "tokens_per_s", "throughput"})

#: Friendly names of the usual cost columns (anything else is shown as is).
COST_LABELS = {
    "params": "parameters",
    "non_embedding_params": "non-embedding parameters",
    "active_params": "active parameters",
    "flops_per_token": "FLOPs / token",
    "weight_memory_bytes": "weight memory (bytes)",
    "kv_cache_bytes": "KV cache (bytes)",
    "prefill_latency_ms": "prefill latency (ms)",
    "latency_ms": "latency (ms)",
    "predicted_engine_latency_ms": "llama.cpp prefill latency, predicted (ms)",
    "engine_latency_ms": "llama.cpp prefill latency (ms)",
    "decode_latency_ms": "decode latency (ms)",
    "decode_tokens_per_s": "decode tokens / s",
}


def main_metric(task: str, metric: str | None = None) -> str:
    """The metric that represents ``task``: ``metric`` when given, else lm-eval's convention."""
    return metric or DEFAULT_TASK_METRIC.get(task, "acc")


def is_lower_better(metric: str) -> bool:
    """True for losses and perplexities (a bare metric name, or ``task/metric``)."""
    return metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def default_direction(column: str) -> Direction:
    """Which way a column is better when nothing says so: ``accuracy`` and task metrics up
    (losses and perplexities down), costs down (throughputs up)."""
    if column == ACCURACY:
        return "maximize"
    if "/" in column:
        return "minimize" if is_lower_better(column) else "maximize"
    return "maximize" if column in HIGHER_IS_BETTER_COSTS else "minimize"


@dataclass(frozen=True)
class Objective:
    """One axis of a study: a column of its trial frame, which way is better, a label and
    (optionally) the hypervolume reference the spec gives it."""

    column: str
    direction: Direction = "minimize"
    label: str = ""
    reference: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"objective {self.column}: direction must be maximize or minimize, got {self.direction!r}")
        if not self.label:
            object.__setattr__(self, "label", COST_LABELS.get(self.column, self.column))

    @property
    def sign(self) -> float:
        """Multiply by this to turn the objective into one to minimise."""
        return 1.0 if self.direction == "minimize" else -1.0


def objective(column: str, direction: Direction | None = None, reference: float | None = None) -> Objective:
    """An :class:`Objective` on ``column``, in its :func:`default_direction` unless given."""
    return Objective(column, direction or default_direction(column), reference=reference)


__all__ = [
    "ACCURACY",
    "COLUMN_ALIASES",
    "COST_ALIASES",
    "COST_LABELS",
    "COST_METRICS",
    "DEFAULT_TASK_METRIC",
    "Direction",
    "HELDOUT_TASK",
    "HIGHER_IS_BETTER_COSTS",
    "LOWER_IS_BETTER",
    "MAIN_METRIC_PREFERENCE",
    "MEASURED_ENGINE_COST",
    "Objective",
    "default_direction",
    "is_lower_better",
    "main_metric",
    "objective",
]
