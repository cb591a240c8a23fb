"""What one forward call shares across blocks: the KV cache, the rotary tables and the
attention masks (causal, left padding, per-layer sliding windows).

Shapes in comments: B batch, T new tokens, S keys (past + new), hd head dim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from nas.errors import NasError
from nas.model.subnet import SubnetConfig


class KVCache:
    """Keys and values of past tokens for one sub-network, one entry per kept layer.

    Create it with :meth:`Supernet.new_cache` (or ``KVCache(subnet)``) and pass it to
    every forward call of the same sub-network; it grows as tokens are appended.
    Sliding-window layers keep every key too: their masks hide the old ones.
    """

    def __init__(self, subnet: SubnetConfig) -> None:
        self.subnet = subnet
        self.keys: list[Tensor | None] = [None] * subnet.n_layer
        self.values: list[Tensor | None] = [None] * subnet.n_layer

    @property
    def length(self) -> int:
        k = self.keys[0]
        return 0 if k is None else int(k.shape[2])

    def update(self, position: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, K, T, hd) keys/values for kept layer ``position``; return all of them."""
        if self.keys[position] is not None:
            k = torch.cat((self.keys[position], k), dim=2)
            v = torch.cat((self.values[position], v), dim=2)
        self.keys[position], self.values[position] = k, v
        return k, v

    def select(self, index: Tensor | Sequence[int]) -> KVCache:
        """A new cache holding batch rows ``index`` (e.g. one shared context repeated for
        several continuations). Tensors are gathered, so the two caches are independent."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = KVCache(self.subnet)
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                out.keys[i] = k.index_select(0, index.to(k.device))
                out.values[i] = v.index_select(0, index.to(v.device))
        return out

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self.keys[i], self.values[i] = k[:, :, :length], v[:, :, :length]


#: ``core(q, k, v, mask)``: one layer's attention of queries (B, H, T, hd) over keys and values
#: (B, K, S, hd) under ``mask`` (B, 1, T, S) or (T, S) of allowed keys, or None for causal
#: attention with the queries at the end of the keys; returns (B, H, T, hd)
AttentionCore = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]


class PackedAttention(Protocol):
    """Attention for a forward call whose batch is one row of several sequences packed end to
    end (B = 1, T = N tokens): every position-wise part of a block (norms, projections, FFN,
    experts) then runs on all N tokens at once, and only attention needs to know where each
    sequence starts. The caller that packed them (the evaluators' scoring plan) implements it."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, window: int, core: AttentionCore) -> Tensor:
        """Per-head outputs (1, N, H*hd) of queries q (1, H, N, hd) over keys and values k, v
        (1, K, N, hd) (RoPE applied), each sequence attending within itself, for a layer with
        sliding window ``window`` (0: global); ``core`` runs the layer's attention on batches."""
        ...


@dataclass(frozen=True)
class ForwardContext:
    """What every block of one forward call shares: the rotary tables (1|B, 1, T, hd),
    the attention mask (B, 1, T, S) or (T, S) of allowed keys, or None for plain causal
    attention, the KV cache and the list the MoE layers append their load-balancing losses
    to (None: not wanted). Sliding-window layers read ``window_masks[window]`` and, when
    the model has a separate local RoPE base, ``local_rope``. ``packed``: the tokens are
    several sequences packed into one row, and it does the attention (mask and cache unused).
    ``fused``: the blocks' norms and RoPE run as compiled kernels (:mod:`nas.model.fused`;
    for inference: they round bf16 differently from the eager ones)."""

    cos: Tensor
    sin: Tensor
    mask: Tensor | None = None
    cache: KVCache | None = None
    aux: list[Tensor] | None = None
    local_rope: tuple[Tensor, Tensor] | None = None
    window_masks: Mapping[int, Tensor | None] = field(default_factory=dict)
    packed: PackedAttention | None = None
    fused: bool = False

    def rope_for(self, window: int) -> tuple[Tensor, Tensor]:
        """(cos, sin) for a layer with sliding window ``window`` (0: a global layer)."""
        if window and self.local_rope is not None:
            return self.local_rope
        return self.cos, self.sin

    def mask_for(self, window: int) -> Tensor | None:
        """The mask of allowed keys for a layer with sliding window ``window`` (0: global)."""
        if not window:
            return self.mask
        if window not in self.window_masks:
            raise NasError(f"the forward context has no mask for sliding window {window}; build it with Supernet.context")
        return self.window_masks[window]


def _see_all_when_empty(allowed: Tensor) -> Tensor:
    """A fully masked row (a padding query) would give NaN: let it see everything."""
    return allowed | ~allowed.any(-1, keepdim=True)


def attention_masks(
    *, batch: int, new: int, past: int, attention_mask: Tensor | None, windows: Iterable[int], device: torch.device
) -> tuple[Tensor, Tensor | None, dict[int, Tensor | None]]:
    """Positions (T,) or (B, T), the global mask and one mask per sliding window.

    ``attention_mask`` (B, S), 1 for real tokens and 0 for (left) padding, gives
    per-row positions (padding does not count). A query at index i of the S keys sees key
    j when j <= i, j is not padding and, in a layer with window W, j > i - W (HF's
    sliding-window convention). A mask is None where plain causal attention is the same.
    """
    B, T = batch, new
    S = past + T
    keep = None
    if attention_mask is not None:
        keep = attention_mask.to(torch.bool)  # (B, S)
        if keep.shape != (B, S):
            raise NasError(f"attention_mask must have shape {(B, S)}, got {tuple(keep.shape)}")
        positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
    else:
        positions = torch.arange(past, S, device=device)  # (T,)

    def build(window: int) -> Tensor | None:
        q = torch.arange(past, S, device=device)[:, None]  # (T, 1)
        k = torch.arange(S, device=device)[None]  # (1, S)
        allowed = k <= q  # (T, S)
        if window:
            allowed = allowed & (k > q - window)
        if keep is not None:
            return _see_all_when_empty(allowed[None] & keep[:, None, :])[:, None]  # (B, 1, T, S)
        if not window and not (past and T > 1):
            return None  # SDPA's is_causal (T > 1) or nothing to hide (T == 1)
        return allowed  # (T, S)

    mask = build(0)
    # a window at least as long as the keys hides nothing: the global mask does the same
    window_masks = {w: (mask if S <= w else build(w)) for w in set(windows) if w}
    return positions, mask, window_masks


__all__ = ["AttentionCore", "ForwardContext", "KVCache", "PackedAttention", "attention_masks"]
