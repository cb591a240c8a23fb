"""`SupernetConfig`: the single source of truth for the full model's sizes.

A supernet is a decoder-only transformer of the LLaMA lineage (RMSNorm, RoPE, GQA,
gated FFN). Its config is homogeneous (every layer has ``n_head`` query heads,
``n_kv_head`` KV heads and ``d_ff`` FFN neurons) unless ``layer_dims`` gives per-layer
sizes, which is how a dense model extracted from a sub-network describes itself.

The *family features* (fields after ``architecture``) say how the blocks compute —
where the norms sit, q/k norms, the FFN activation, embedding scaling, sliding-window
attention, soft-capping, the MoE router's details. Their defaults are plain LLaMA, and
they are written to JSON only when they differ from their default, so configs (and
content hashes) written before they existed load and hash unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from nas.errors import NasError


@dataclass(frozen=True)
class LayerDims:
    """Sizes of one transformer block.

    ``n_expert == 0`` means a dense SwiGLU FFN of width ``d_ff``; ``n_expert > 0``
    means a mixture of ``n_expert`` SwiGLU experts of width ``d_ff`` each, routed
    to ``top_k`` of them per token.
    """

    n_head: int
    n_kv_head: int
    d_ff: int
    n_expert: int = 0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.n_kv_head < 1 or self.n_head < 1:
            raise NasError(f"layer dims {self}: n_head and n_kv_head must be >= 1")
        if self.n_head % self.n_kv_head:
            raise NasError(
                f"layer dims {self}: n_head ({self.n_head}) must be a multiple of "
                f"n_kv_head ({self.n_kv_head}) for grouped-query attention"
            )
        if self.d_ff < 1:
            raise NasError(f"layer dims {self}: d_ff must be >= 1")
        if self.n_expert < 0 or (self.n_expert > 0 and not 1 <= self.top_k <= self.n_expert):
            raise NasError(
                f"layer dims {self}: top_k ({self.top_k}) must be between 1 and the experts "
                f"kept ({self.n_expert}); lower top_k or keep more experts"
            )


NORM_PLACEMENTS = ("pre", "post", "sandwich")
QK_NORMS = ("", "head", "proj")
FFN_ACTIVATIONS = ("silu", "gelu_tanh", "gelu")


@dataclass(frozen=True)
class SupernetConfig:
    """Sizes and hyper-parameters of the full (largest) model.

    ``head_dim`` defaults to ``d_model // n_head``. ``rope_scaling`` follows the
    Hugging Face convention (``{"rope_type": "llama3", "factor": ...}``) or is None.
    ``moe_layers`` lists the layers that use a mixture of experts when
    ``n_expert > 0`` (None: every layer).
    """

    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    d_ff: int
    head_dim: int = 0
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False
    n_expert: int = 0
    top_k: int = 0
    moe_layers: tuple[int, ...] | None = None
    shared_expert: bool = False
    layer_dims: tuple[LayerDims, ...] | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    architecture: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # ------------------------------------------------ family features (see FAMILY_FIELDS)
    norm_placement: str = "pre"  # "pre" (LLaMA), "post" (OLMo 2: norm the sub-layer output), "sandwich" (Gemma 2/3: both)
    norm_offset: float = 0.0  # RMSNorm scales by (offset + w); Gemma: 1.0 (computed in fp32 like Gemma)
    qk_norm: str = ""  # "" none, "head" (one (head_dim,) weight, Qwen3/Gemma 3), "proj" (over all heads, OLMo 2/OLMoE)
    ffn_act: str = "silu"  # gate activation of the gated FFN: "silu" (SwiGLU), "gelu_tanh" (GeGLU, Gemma), "gelu"
    embed_scale: float = 0.0  # token embeddings are multiplied by it when > 0 (Gemma: sqrt(d_model) of the source)
    attn_scale: float = 0.0  # attention score scale; 0: 1/sqrt(head_dim) (Gemma 2/3: query_pre_attn_scalar ** -0.5)
    attn_softcap: float = 0.0  # cap * tanh(scores / cap) on attention scores when > 0 (Gemma 2)
    final_softcap: float = 0.0  # the same on the output logits
    sliding_window: int = 0  # keys a query sees in a sliding layer (itself included); 0: no sliding window
    sliding_layers: tuple[int, ...] | None = None  # which layers slide (None: every layer, when sliding_window > 0)
    rope_local_theta: float = 0.0  # RoPE base of sliding layers, unscaled (Gemma 3); 0: the global rope
    o_bias: bool = False  # o_proj has a bias (LLaMA/Qwen3/OLMo with attention_bias)
    qkv_clip: float = 0.0  # clamp q, k, v to +-qkv_clip after projection (OLMoE clip_qkv)
    norm_topk_prob: bool = True  # renormalise the top-k routing weights to sum to one (Mixtral; off in Qwen2-MoE, OLMoE)
    shared_d_ff: int = 0  # width of the shared expert: 0 = d_ff, narrowed with it; > 0 a fixed width (Qwen2-MoE)
    shared_expert_gate: bool = False  # the shared expert's output is scaled by sigmoid(w . x) (Qwen2-MoE)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NasError(f"supernet config: {name} must be a positive integer, got {value!r}")
        if self.head_dim == 0:
            if self.d_model % self.n_head:
                raise NasError(
                    f"supernet config: d_model ({self.d_model}) is not divisible by n_head "
                    f"({self.n_head}); set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.d_model // self.n_head)
        if self.head_dim % 2:
            raise NasError(f"supernet config: head_dim ({self.head_dim}) must be even for RoPE")
        if self.n_head % self.n_kv_head:
            raise NasError(
                f"supernet config: n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})"
            )
        if self.norm_eps <= 0:
            raise NasError(f"supernet config: norm_eps must be > 0, got {self.norm_eps}")
        if self.moe_layers is not None:
            object.__setattr__(self, "moe_layers", tuple(int(i) for i in self.moe_layers))
            bad = [i for i in self.moe_layers if not 0 <= i < self.n_layer]
            if bad:
                raise NasError(f"supernet config: moe_layers {bad} outside 0..{self.n_layer - 1}")
        if self.n_expert < 0 or (self.n_expert > 0 and not 1 <= self.top_k <= self.n_expert):
            raise NasError(
                f"supernet config: top_k ({self.top_k}) must be between 1 and n_expert ({self.n_expert})"
            )
        if self.layer_dims is not None:
            dims = tuple(d if isinstance(d, LayerDims) else LayerDims(**d) for d in self.layer_dims)
            object.__setattr__(self, "layer_dims", dims)
            if len(dims) != self.n_layer:
                raise NasError(
                    f"supernet config: layer_dims has {len(dims)} entries but n_layer is {self.n_layer}"
                )
        object.__setattr__(self, "extra", dict(self.extra))
        self._validate_features()

    def _validate_features(self) -> None:
        def bad(message: str) -> NasError:
            return NasError(f"supernet config: {message}")

        if self.norm_placement not in NORM_PLACEMENTS:
            raise bad(f"norm_placement {self.norm_placement!r} is not one of {list(NORM_PLACEMENTS)}")
        if self.qk_norm not in QK_NORMS:
            raise bad(f"qk_norm {self.qk_norm!r} is not one of {list(QK_NORMS)}")
        if self.ffn_act not in FFN_ACTIVATIONS:
            raise bad(f"ffn_act {self.ffn_act!r} is not one of {list(FFN_ACTIVATIONS)}")
        for name in ("norm_offset", "embed_scale", "attn_scale", "attn_softcap", "final_softcap", "rope_local_theta", "qkv_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or value != value:
                raise bad(f"{name} must be a number >= 0 (0: off), got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("sliding_window", "shared_d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(f"{name} must be an integer >= 0 (0: off), got {value!r}")
        if self.sliding_layers is not None:
            object.__setattr__(self, "sliding_layers", tuple(int(i) for i in self.sliding_layers))
            wrong = [i for i in self.sliding_layers if not 0 <= i < self.n_layer]
            if wrong:
                raise bad(f"sliding_layers {wrong} outside 0..{self.n_layer - 1}")
            if self.sliding_window == 0 and self.sliding_layers:
                raise bad("sliding_layers given but sliding_window is 0; set the window size")
        if self.shared_expert_gate and not self.shared_expert:
            raise bad("shared_expert_gate needs shared_expert=true")

    # ------------------------------------------------------------------ sizes
    def layer(self, index: int) -> LayerDims:
        """Sizes of block ``index`` in this (full) model."""
        if self.layer_dims is not None:
            return self.layer_dims[index]
        moe = self.n_expert > 0 and (self.moe_layers is None or index in self.moe_layers)
        return LayerDims(
            n_head=self.n_head,
            n_kv_head=self.n_kv_head,
            d_ff=self.d_ff,
            n_expert=self.n_expert if moe else 0,
            top_k=self.top_k if moe else 0,
        )

    def window(self, index: int) -> int:
        """Sliding-window size of layer ``index`` (0: it attends to every past position)."""
        if not self.sliding_window:
            return 0
        return self.sliding_window if self.sliding_layers is None or index in self.sliding_layers else 0

    def shared_width(self, d_ff: int) -> int:
        """Kept width of the shared expert of an MoE layer whose experts keep ``d_ff`` neurons."""
        return self.shared_d_ff or d_ff

    @property
    def q_per_kv(self) -> int:
        """Query heads per KV group (constant across layers)."""
        return self.n_head // self.n_kv_head

    @property
    def is_homogeneous(self) -> bool:
        """True when every layer has the same sizes (loadable as a plain LlamaForCausalLM)."""
        first = self.layer(0)
        return first.n_expert == 0 and all(self.layer(i) == first for i in range(self.n_layer))

    @property
    def is_uniform(self) -> bool:
        """True when a transformers config can describe it: every MoE layer has the same sizes,
        every dense layer has the same sizes, and all share the head counts (MoE allowed)."""
        dims = [self.layer(i) for i in range(self.n_layer)]
        moe = {d for d in dims if d.n_expert}
        dense = {d for d in dims if not d.n_expert}
        return len(moe) <= 1 and len(dense) <= 1 and len({(d.n_head, d.n_kv_head) for d in dims}) == 1

    # ------------------------------------------------------------ serialising
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name, default in FAMILY_FIELDS.items():
            if out[name] == default:
                del out[name]  # written only when set: older configs keep their exact JSON and hash
        if self.sliding_layers is not None:
            out["sliding_layers"] = list(self.sliding_layers)
        if self.moe_layers is not None:
            out["moe_layers"] = list(self.moe_layers)
        if self.layer_dims is not None:
            out["layer_dims"] = [dataclasses.asdict(d) for d in self.layer_dims]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NasError(
                f"supernet config: unknown field(s) {unknown}; allowed fields are {sorted(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> SupernetConfig:
        return dataclasses.replace(self, **changes)


#: The family-feature fields and their (LLaMA) defaults; to_dict leaves out those at their default.
FAMILY_FIELDS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(SupernetConfig)
    if f.name in {
        "norm_placement", "norm_offset", "qk_norm", "ffn_act", "embed_scale", "attn_scale", "attn_softcap",
        "final_softcap", "sliding_window", "sliding_layers", "rope_local_theta", "o_bias", "qkv_clip",
        "norm_topk_prob", "shared_d_ff", "shared_expert_gate",
    }
}


__all__ = ["FAMILY_FIELDS", "FFN_ACTIVATIONS", "LayerDims", "NORM_PLACEMENTS", "QK_NORMS", "SupernetConfig"]
