"""The one parameter-count formula: what a sub-network keeps and what one token touches.

Used by :meth:`nas.model.supernet.Supernet.num_params` and by the cost model
(:mod:`evaluators.cost`), so the two can never disagree. Per kept layer with D kept
d_model, hd head_dim, H query heads, K KV heads, F FFN width, E experts kept, k top-k:

* attention ``D*hd*(2H + 2K)`` (q, k, v, o) plus ``hd*(H + 2K)`` q/k/v biases when the
  supernet has them and ``D`` for an o_proj bias;
* norms: ``D`` per RMSNorm weight — two per layer (pre or post placement), four for
  Gemma's sandwich — plus q/k norms: ``2*hd`` per head (Qwen3, Gemma 3) or
  ``hd*(H + K)`` over the projections (OLMo 2, OLMoE);
* FFN ``3*D*F`` (gated), or for MoE ``E*3*D*F + E*D`` (experts + router) plus
  ``3*D*Fs`` for a shared expert of width Fs (F, or its fixed width) and ``D`` for its
  gate; a token touches ``k`` of the ``E`` experts.

Plain arithmetic on configs: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.model.config import LayerDims, SupernetConfig
from nas.model.subnet import SubnetConfig


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one kept layer, by part."""

    attention: int  # q, k, v, o projection weights
    attention_bias: int
    norms: int
    ffn: int  # every expert kept (+ router, + shared expert)
    ffn_active: int  # what one token passes through: top_k experts (+ router, + shared expert)

    @property
    def total(self) -> int:
        return self.attention + self.attention_bias + self.norms + self.ffn

    @property
    def active(self) -> int:
        return self.attention + self.attention_bias + self.norms + self.ffn_active


def layer_params(config: SupernetConfig, dims: LayerDims, d_model: int) -> LayerParams:
    """Parameters of one layer of sizes ``dims`` at width ``d_model`` (see the module docstring)."""
    D, hd = d_model, config.head_dim
    expert = 3 * D * dims.d_ff
    if dims.n_expert:
        shared = 3 * D * config.shared_width(dims.d_ff) if config.shared_expert else 0
        shared += D if config.shared_expert_gate else 0
        router = dims.n_expert * D
        ffn, ffn_active = dims.n_expert * expert + router + shared, dims.top_k * expert + router + shared
    else:
        ffn = ffn_active = expert
    qk_norms = {"": 0, "head": 2 * hd, "proj": hd * (dims.n_head + dims.n_kv_head)}[config.qk_norm]
    return LayerParams(
        attention=D * hd * (2 * dims.n_head + 2 * dims.n_kv_head),
        attention_bias=(hd * (dims.n_head + 2 * dims.n_kv_head) if config.qkv_bias else 0) + (D if config.o_bias else 0),
        norms=(4 if config.norm_placement == "sandwich" else 2) * D + qk_norms,
        ffn=ffn,
        ffn_active=ffn_active,
    )


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one sub-network."""

    params: int  # everything it keeps, all kept experts included; a tied embedding once
    embedding_params: int  # token embedding (+ an untied LM head)
    non_embedding_params: int
    active_params: int  # non-embedding parameters one token touches


def count_params(config: SupernetConfig, subnet: SubnetConfig) -> ParamCounts:
    """Parameter counts of ``subnet`` of ``config`` (the final norm counts as non-embedding)."""
    D = subnet.d_model
    layers = [layer_params(config, subnet.layer_dims(pos, config.q_per_kv), D) for pos in range(subnet.n_layer)]
    non_embedding = sum(p.total for p in layers) + D
    embedding = config.vocab_size * D * (1 if config.tie_embeddings else 2)
    return ParamCounts(
        params=non_embedding + embedding,
        embedding_params=embedding,
        non_embedding_params=non_embedding,
        active_params=sum(p.active for p in layers) + D,
    )


__all__ = ["LayerParams", "ParamCounts", "count_params", "layer_params"]
