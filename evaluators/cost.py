"""Analytic costs of a sub-network: parameters, FLOPs per token, weight and KV-cache memory.

Everything here is arithmetic on :class:`~nas.model.config.SupernetConfig` and
:class:`~nas.model.subnet.SubnetConfig`; no model is built and torch is not imported
(the web app and the reports use it). Measured and predicted latency live in
:mod:`evaluators.latency` and :mod:`evaluators.latency_table`; :func:`costs` merges both.
llama.cpp's predicted latency (``predicted_engine_latency_ms``) comes from the engine table
of :mod:`evaluators.engine_table`.
:func:`cost_value` turns cost-model values into the spec's cost names
(:data:`nas.metrics.COST_METRICS`).

Conventions (D kept d_model, hd head_dim, V vocab; per kept layer H query heads,
K KV heads, F FFN width, E experts kept, k routing top-k):

* ``params`` — every parameter the sub-network keeps, all experts included
  (:func:`nas.model.params.count_params`, the formula
  :meth:`~nas.model.supernet.Supernet.num_params` uses too); it equals the parameter
  count of the extracted model. A tied embedding is counted once.
* ``non_embedding_params`` — ``params`` minus the token embedding and an untied LM head.
* ``active_params`` — non-embedding parameters one token touches: in an MoE layer only
  ``k`` of the ``E`` kept experts, plus the router and the shared expert. For a dense
  sub-network it equals ``non_embedding_params``.
* ``flops_per_token`` — forward FLOPs (multiply-add = 2) to produce one new token while
  attending to ``context_len`` positions (itself included), i.e. one decode step at
  position ``context_len``::

      2 * (matmul weights a token passes through, LM head included)
        + sum over layers 4 * H * hd * min(context_len, W)   # q.k scores and p.v values

  where ``W`` is a sliding-window layer's window (unbounded in a global layer),

  with, per layer, matmul weights ``D*hd*(2H + 2K)`` (q, k, v, o projections) plus
  ``3*D*F`` (dense gated FFN) or ``k*3*D*F + E*D`` (+ the shared expert) for MoE,
  and ``V*D`` for the LM head. Element-wise work (norms, RoPE, softmax, SiLU, biases,
  residual adds) and the embedding lookup are not counted, which is the convention of
  ``torch.utils.flop_counter`` and of the usual ``6N`` training estimates. The figure
  also equals the FLOPs of a full forward over ``context_len`` tokens divided by
  ``context_len`` when attention is counted without causal skipping (as torch's flop
  counter and its math attention kernel do); a causal-skipping kernel does about half
  of the attention term in prefill.
* ``weight_memory_bytes`` — ``params`` at the dtype's width.
* ``weight_memory_bytes`` with a ``quant`` format (:mod:`nas.model.quant`: ``q8_0``,
  ``q4_0``, ...; GGUF deployments) — weight matrices (projections, FFN, router, embedding,
  LM head) at the format's bytes per weight (``type_size / block_size``: 34/32 for q8_0,
  18/32 for q4_0; whole blocks per row), norms and biases at 4 bytes, as llama.cpp stores
  them (:func:`quant_weight_bytes`).
* ``kv_cache_bytes`` — ``2 * batch * sum over layers (min(context_len, W) * K * hd)``
  elements at the dtype's width (keys and values are cached per KV head, before GQA
  repetition; a sliding-window layer needs only its last ``W`` positions, as inference
  engines keep them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evaluators.errors import EvaluatorError
from evaluators.types import Costs, CostValue
from nas.errors import NasError
from nas.metrics import COST_METRICS
from nas.model.config import SupernetConfig
from nas.model.dtypes import DTYPE_BYTES, dtype_name
from nas.model.params import count_params, layer_params
from nas.model.quant import VECTOR_BYTES, QuantFormat, parse_quant
from nas.model.subnet import SubnetConfig

if TYPE_CHECKING:
    from evaluators.latency_table import LatencyTable


def resolve_dtype(dtype: Any) -> tuple[str, int]:
    """``"bf16"``/``"fp32"`` (or their torch dtypes) to (canonical name, bytes per element).

    fp16 is refused: on CPUs it is unusably slow (~3 GFLOP/s here), so neither costs nor
    latencies at fp16 would describe a sensible deployment.
    """
    try:
        name = dtype_name(dtype)
    except NasError as exc:
        raise EvaluatorError(str(exc)) from None
    return name, DTYPE_BYTES[name]


def check_subnet(config: SupernetConfig, subnet: SubnetConfig) -> None:
    """Raise :class:`EvaluatorError` unless ``subnet`` is a sub-network of ``config``."""
    if not isinstance(subnet, SubnetConfig):
        raise EvaluatorError(f"expected a SubnetConfig, got {type(subnet).__name__}")
    try:
        subnet.check_fits(config)
    except NasError as exc:
        raise EvaluatorError(f"sub-network {subnet.summary()} does not fit the supernet: {exc}") from None


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EvaluatorError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class CostBreakdown:
    """Integer counts behind :func:`analytic_costs` (per token where it says so)."""

    params: int
    embedding_params: int
    non_embedding_params: int
    active_params: int
    matmul_params_per_token: int  # weights a token multiplies through, LM head included
    attention_flops_per_token: int
    flops_per_token: int
    kv_elements: int  # cached keys + values, all layers, all batch rows


def cost_breakdown(config: SupernetConfig, subnet: SubnetConfig, *, context_len: int = 512, batch: int = 1) -> CostBreakdown:
    """Exact integer counts for ``subnet`` of ``config`` (see the module docstring)."""
    check_subnet(config, subnet)
    _positive_int("context_len", context_len)
    _positive_int("batch", batch)
    D, hd, V = subnet.d_model, config.head_dim, config.vocab_size
    counts = count_params(config, subnet)
    matmul = V * D  # LM head (the tied embedding matrix, or its own)
    attn_flops = kv_elements = 0
    for pos, layer in enumerate(subnet.layers):
        d = subnet.layer_dims(pos, config.q_per_kv)
        part = layer_params(config, d, D)
        matmul += part.attention + part.ffn_active
        window = config.window(layer)
        seen = min(context_len, window) if window else context_len
        attn_flops += 4 * d.n_head * hd * seen
        kv_elements += seen * d.n_kv_head * hd
    return CostBreakdown(
        params=counts.params,
        embedding_params=counts.embedding_params,
        non_embedding_params=counts.non_embedding_params,
        active_params=counts.active_params,
        matmul_params_per_token=matmul,
        attention_flops_per_token=attn_flops,
        flops_per_token=2 * matmul + attn_flops,
        kv_elements=2 * batch * kv_elements,
    )


def quant_weight_bytes(config: SupernetConfig, subnet: SubnetConfig, quant: str | QuantFormat) -> int:
    """Bytes of ``subnet``'s weights stored in format ``quant`` (see the module docstring):
    each weight matrix row in whole blocks of the format, norms and biases in f32."""
    check_subnet(config, subnet)
    try:
        fmt = parse_quant(quant)
    except NasError as exc:
        raise EvaluatorError(str(exc)) from None
    D, hd, V = subnet.d_model, config.head_dim, config.vocab_size
    rows = fmt.weight_bytes
    total = V * rows(D) * (1 if config.tie_embeddings else 2) + D * VECTOR_BYTES  # embedding (+ LM head), final norm
    for pos in range(subnet.n_layer):
        d = subnet.layer_dims(pos, config.q_per_kv)
        part = layer_params(config, d, D)
        # q, k, v rows read D inputs; o rows read the H*hd attention channels
        attention = (d.n_head + 2 * d.n_kv_head) * hd * rows(D) + D * rows(d.n_head * hd)
        dense_ffn = 2 * d.d_ff * rows(D) + D * rows(d.d_ff)  # gate, up (D inputs), down (d_ff inputs)
        if d.n_expert:
            shared = config.shared_width(d.d_ff) if config.shared_expert else 0
            ffn = d.n_expert * dense_ffn + d.n_expert * rows(D)  # experts + router
            ffn += (2 * shared * rows(D) + D * rows(shared)) if shared else 0
            ffn += rows(D) if config.shared_expert_gate else 0
        else:
            ffn = dense_ffn
        total += attention + ffn + (part.attention_bias + part.norms) * VECTOR_BYTES
    return int(total)


def analytic_costs(
    config: SupernetConfig,
    subnet: SubnetConfig,
    *,
    context_len: int = 512,
    batch: int = 1,
    dtype: Any = "bf16",
    quant: str | None = None,
) -> Costs:
    """Parameters, FLOPs per token, weight and KV-cache memory of ``subnet`` (method ``analytic``).

    ``quant`` (a :mod:`nas.model.quant` format) costs the weights as that format stores them
    (:func:`quant_weight_bytes`); None: every parameter at ``dtype``.

    Raises :class:`EvaluatorError` for a sub-network that does not fit ``config``, a
    non-positive ``context_len``/``batch``, or an unknown/refused dtype or format.
    """
    name, width = resolve_dtype(dtype)
    b = cost_breakdown(config, subnet, context_len=context_len, batch=batch)

    def val(value: int, unit: str, note: str = "") -> CostValue:
        return CostValue(value=float(value), method="analytic", unit=unit, note=note)

    values = {
        "params": val(b.params, "params"),
        "embedding_params": val(b.embedding_params, "params"),
        "non_embedding_params": val(b.non_embedding_params, "params"),
        "active_params": val(b.active_params, "params", "non-embedding params one token uses (top_k experts)"),
        "flops_per_token": val(
            b.flops_per_token, "FLOP",
            f"forward, one token attending to {context_len} positions; 2*matmul weights (LM head incl.) "
            "+ 4*n_head*head_dim*context per layer" + (" (at most the sliding window)" if config.sliding_window else ""),
        ),
        "weight_memory_bytes": val(b.params * width, "B", f"params at {name}"),
        "kv_cache_bytes": val(b.kv_elements * width, "B", f"batch {batch} x context {context_len} at {name}"),
    }
    context: dict[str, Any] = {"context_len": context_len, "batch": batch, "dtype": name}
    if quant is not None:
        q_bytes = quant_weight_bytes(config, subnet, quant)  # refuses an unknown format with EvaluatorError
        fmt = parse_quant(quant)
        values["weight_memory_bytes"] = val(q_bytes, "B",
                                            f"weights as {fmt.name} (GGUF), norms and biases f32")
        context["quant"] = fmt.name
    return Costs(values=values, device="any", context=context)


def costs(
    config: SupernetConfig,
    subnet: SubnetConfig,
    device: str = "cpu",
    *,
    context_len: int = 512,
    batch: int = 1,
    dtype: Any = "bf16",
    table: LatencyTable | None = None,
    quant: str | None = None,
) -> Costs:
    """Analytic costs plus, when a latency ``table`` is given, ``predicted_latency_ms``
    (prefill of the table's ``prompt_len`` tokens, method ``predicted``).

    ``device`` labels the result when no table is given; with a table the result carries
    the table's device fingerprint. ``quant``: weights costed in that format (see
    :func:`analytic_costs`).
    """
    base = analytic_costs(config, subnet, context_len=context_len, batch=batch, dtype=dtype, quant=quant)
    values = dict(base.values)
    context = dict(base.context)
    label = device
    if table is not None:
        if table.config != config:
            raise EvaluatorError(
                "the latency table was built for another supernet config; build one for this supernet "
                "with LatencyTable.build(model, space)"
            )
        values["predicted_latency_ms"] = CostValue(
            value=table.predict(subnet),
            method="predicted",
            unit="ms",
            note=f"prefill of {table.prompt_len} tokens x batch {table.batch} at {table.dtype}, per-layer lookup table",
        )
        context.update(latency_prompt_len=table.prompt_len, latency_batch=table.batch)
        label = table.fingerprint
    return Costs(values=values, device=label, context=context)


def cost_value(name: str, values: Mapping[str, CostValue]) -> float:
    """A spec cost (see :data:`nas.metrics.COST_METRICS`, e.g. ``memory`` = weights + KV
    cache) from cost-model values; raises :class:`EvaluatorError` when a part is missing."""
    keys, _ = COST_METRICS[name]
    missing = [k for k in keys if k not in values]
    if missing:
        raise EvaluatorError(f"cost {name!r} is not available (missing {missing}); known: {sorted(values)}")
    return float(sum(values[k].value for k in keys))


def analytic_cost_values(config: SupernetConfig, subnet: SubnetConfig, *, context_len: int = 512, dtype: Any = "bf16") -> dict[str, float]:
    """Every analytic spec cost of ``subnet`` by spec name (``params`` ... ``memory``)."""
    values = analytic_costs(config, subnet, context_len=context_len, dtype=dtype).values
    return {name: cost_value(name, values) for name, (keys, method) in COST_METRICS.items() if method == "analytic"}


__all__ = [
    "CostBreakdown",
    "analytic_cost_values",
    "analytic_costs",
    "check_subnet",
    "cost_breakdown",
    "cost_value",
    "costs",
    "quant_weight_bytes",
    "resolve_dtype",
]
