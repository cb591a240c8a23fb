"""`SupernetConfig`: the single source of truth for the full model's sizes.

A supernet is a decoder-only LLaMA-family transformer. Its config is homogeneous
(every layer has ``n_head`` query heads, ``n_kv_head`` KV heads and ``d_ff`` FFN
neurons) unless ``layer_dims`` gives per-layer sizes, which is how a dense model
extracted from a sub-network describes itself.
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

    @property
    def q_per_kv(self) -> int:
        """Query heads per KV group (constant across layers)."""
        return self.n_head // self.n_kv_head

    @property
    def is_homogeneous(self) -> bool:
        """True when every layer has the same sizes (loadable as a plain LlamaForCausalLM)."""
        first = self.layer(0)
        return first.n_expert == 0 and all(self.layer(i) == first for i in range(self.n_layer))

    # ------------------------------------------------------------ serialising
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
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


__all__ = ["LayerDims", "SupernetConfig"]
