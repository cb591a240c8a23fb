"""The elastic supernet: a decoder-only transformer whose sub-networks are prefix views.

Every sub-network is a set of *prefix views* of the supernet's weights: the first
``n_head`` query heads (whole KV groups: query heads of group ``g`` are rows
``g*q_per_kv*head_dim ...``), the first ``d_ff`` FFN neurons, the first ``n_expert``
experts and the first ``d_model`` embedding channels. The sub-network is an explicit
argument of :meth:`Supernet.forward` — there is no "active sub-network" state — and
:meth:`Supernet.extract` copies the same slices into an independent dense model
whose outputs are identical.

The blocks (:mod:`nas.model.layers`) follow the config's family features, so one class
covers LLaMA, Mistral, Qwen2/3, OLMo 2, Gemma 1/2/3 and the MoE families (Mixtral,
Qwen2-MoE, Qwen3-MoE, OLMoE). The KV cache and the masks live in :mod:`nas.model.cache`.

Shapes in comments: B batch, T new tokens, S keys (past + new), D d_model (kept), V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import NasError
from nas.model.cache import ForwardContext, KVCache, PackedAttention, attention_masks
from nas.model.config import SupernetConfig
from nas.model.layers import (
    Attention,
    Block,
    FeedForward,
    MixtureOfExperts,
    apply_rope,
    gated_ffn,
    rms_norm,
    rms_norm_fp32,
    rope_inv_freq,
    swiglu,
)
from nas.model.params import count_params
from nas.model.subnet import SubnetConfig


# ------------------------------------------------------------------- supernet
@dataclass(frozen=True)
class ForwardOutput:
    """Logits plus what training and importance estimation need."""

    logits: Tensor  # (B, T, V); (B, P, V) for the positions of logits_index
    hidden: list[Tensor] | None  # residual stream entering each kept layer, then leaving the last one (pre-norm)
    aux_loss: Tensor | None  # summed MoE load-balancing loss (None for dense sub-networks)


class Supernet(nn.Module):
    """A decoder-only transformer whose sub-networks are prefix views.

    ``layer_rank`` lists layer indices from most to least important; search spaces
    drop layers from its end.
    """

    def __init__(self, config: SupernetConfig, layer_rank: Sequence[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.layer_rank = tuple(layer_rank) if layer_rank is not None else tuple(range(config.n_layer))
        if sorted(self.layer_rank) != list(range(config.n_layer)):
            raise NasError(f"layer_rank must be a permutation of 0..{config.n_layer - 1}")
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, config.layer(i), window=config.window(i)) for i in range(config.n_layer))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 style init: N(0, std), output projections scaled by 1/sqrt(2 n_layer); norms
        start as the identity (weight 1, or 0 under Gemma's ``1 + w``)."""
        for name, p in self.named_parameters():
            if name.endswith("norm") or name.endswith("_norm"):
                nn.init.constant_(p, 1.0 - self.config.norm_offset)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight", ".down")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, std=std)

    # ------------------------------------------------------------- subnets
    def full_subnet(self) -> SubnetConfig:
        """The largest sub-network: every layer at its full size."""
        cfg = self.config
        dims = [cfg.layer(i) for i in range(cfg.n_layer)]
        moe = any(d.n_expert for d in dims)
        return SubnetConfig(
            layers=tuple(range(cfg.n_layer)),
            n_head=tuple(d.n_head for d in dims),
            d_ff=tuple(d.d_ff for d in dims),
            d_model=cfg.d_model,
            n_expert=tuple(d.n_expert for d in dims) if moe else (),
            top_k=tuple(d.top_k for d in dims) if moe else (),
        )

    def new_cache(self, subnet: SubnetConfig | None = None) -> KVCache:
        return KVCache(subnet or self.full_subnet())

    @property
    def lm_head_weight(self) -> Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def rope(self, positions: Tensor, dtype: torch.dtype, *, inv_freq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """cos/sin for integer positions (T,) or (B, T): shape (1|B, 1, T, hd); ``inv_freq``
        (hd/2,) defaults to the global frequencies."""
        inv_freq = self.inv_freq if inv_freq is None else inv_freq
        freqs = positions.float()[..., None] * inv_freq.float()  # (.., T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        if emb.dim() == 2:
            emb = emb[None]
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    def context(
        self,
        batch: int,
        new: int,
        *,
        past: int = 0,
        attention_mask: Tensor | None = None,
        cache: KVCache | None = None,
        aux: list[Tensor] | None = None,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> ForwardContext:
        """The :class:`ForwardContext` of ``new`` tokens after ``past`` cached ones: rotary
        tables (global and, for sliding layers with their own base, local), the global mask
        and one mask per sliding-window size of this model."""
        device = torch.device(device)
        windows = {self.config.window(i) for i in range(self.config.n_layer)}
        positions, mask, window_masks = attention_masks(
            batch=batch, new=new, past=past, attention_mask=attention_mask, windows=windows, device=device
        )
        cos, sin = self.rope(positions, dtype)
        local = None
        if self.config.rope_local_theta and any(windows):
            local = self.rope(positions, dtype, inv_freq=rope_inv_freq(self.config, local=True).to(device))
        return ForwardContext(cos=cos, sin=sin, mask=mask, cache=cache, aux=aux, local_rope=local, window_masks=window_masks)

    def packed_context(self, positions: Tensor, packed: PackedAttention, *, dtype: torch.dtype,
                       fused: bool = False) -> ForwardContext:
        """The :class:`ForwardContext` of one row of N tokens that packs several sequences end
        to end: rotary tables for each token's own ``positions`` (N,) in its sequence, and
        ``packed`` doing the attention within each sequence (see :class:`PackedAttention`);
        ``fused``: compiled norms and RoPE (:mod:`nas.model.fused`)."""
        cos, sin = self.rope(positions, dtype)  # (1, 1, N, hd)
        local = None
        if self.config.rope_local_theta and any(self.config.window(i) for i in range(self.config.n_layer)):
            local = self.rope(positions, dtype, inv_freq=rope_inv_freq(self.config, local=True).to(positions.device))
        return ForwardContext(cos=cos, sin=sin, local_rope=local, packed=packed, fused=fused)

    # -------------------------------------------------------------- forward
    def forward(
        self,
        tokens: Tensor,
        subnet: SubnetConfig | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        logits_index: Tensor | None = None,
        residual_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Logits (B, T, V) of ``subnet`` (None: the full model) for tokens (B, T).

        With ``cache``, tokens continue the cached sequence. ``attention_mask`` (B, S),
        1 for real tokens and 0 for padding over all S = past + T positions, is only
        needed for left-padded batches. ``logits_index`` (B, P) of positions in ``tokens``
        returns only their logits, (B, P, V): the LM head (a fifth of a small model's
        FLOPs) then runs on P positions instead of T. ``residual_dtype``: see :meth:`embed_tokens`.
        """
        return self.run(tokens, subnet, cache=cache, attention_mask=attention_mask, logits_index=logits_index,
                        residual_dtype=residual_dtype).logits

    def run(
        self,
        tokens: Tensor,
        subnet: SubnetConfig | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        return_hidden: bool = False,
        return_aux: bool = False,
        logits_index: Tensor | None = None,
        residual_dtype: torch.dtype | None = None,
    ) -> ForwardOutput:
        """:meth:`forward` with optional per-layer hidden states and the MoE auxiliary loss."""
        cfg = self.config
        if subnet is None:
            subnet = self.full_subnet()
        else:
            subnet.check_fits(cfg)
        if cache is not None and cache.subnet != subnet:
            raise NasError("KV cache was created for another sub-network; create one per sub-network")
        if tokens.dim() != 2:
            raise NasError(f"tokens must have shape (batch, time), got {tuple(tokens.shape)}")
        B, T = tokens.shape
        past = cache.length if cache is not None else 0
        x = self.embed_tokens(tokens, subnet, residual_dtype=residual_dtype)  # (B, T, D)
        aux: list[Tensor] | None = [] if return_aux else None
        ctx = self.context(B, T, past=past, attention_mask=attention_mask, cache=cache, aux=aux,
                           dtype=self.embed.weight.dtype, device=tokens.device)
        hidden: list[Tensor] | None = [] if return_hidden else None
        x = self.run_layers(x, subnet, ctx, hidden=hidden)
        if hidden is not None:
            hidden.append(x)
        logits = self.head(x, logits_index)
        aux_loss = torch.stack(aux).sum() if aux else None
        return ForwardOutput(logits=logits, hidden=hidden, aux_loss=aux_loss)

    # ------------------------------------------------- forward, piece by piece
    # run() = embed_tokens -> run_layers -> head; callers that resume from a stored residual
    # stream (evaluators' prefix reuse) call the pieces themselves, with the same operations.
    def embed_tokens(self, tokens: Tensor, subnet: SubnetConfig, *, residual_dtype: torch.dtype | None = None) -> Tensor:
        """The residual stream entering the first kept layer, (B, T, D), in the weights' dtype
        or ``residual_dtype``: fp32 over bf16 weights keeps the stream, its adds and its norms
        in fp32 while every matmul still runs in bf16 (what bf16 autocast computes, without
        casting the weights at each call), so its error against fp32 is smaller than bf16's."""
        x = F.embedding(tokens, self.embed.weight[:, : subnet.d_model])
        if residual_dtype is not None and residual_dtype != x.dtype:
            if residual_dtype != torch.float32:
                raise NasError(f"residual_dtype must be torch.float32 or None (the weights' dtype), got {residual_dtype}")
            x = x.float()
        if self.config.embed_scale:
            x = x * torch.tensor(self.config.embed_scale, dtype=torch.float32).to(x.dtype)  # Gemma: sqrt(d_model) in fp32, then the dtype
        return x

    def run_layers(self, x: Tensor, subnet: SubnetConfig, ctx: ForwardContext, *, start: int = 0,
                   hidden: list[Tensor] | None = None) -> Tensor:
        """Kept layers ``start`` .. end of ``subnet`` on the residual stream ``x`` entering kept
        layer ``start``; ``hidden`` (when given) receives the stream entering each of them."""
        q_per_kv = self.config.q_per_kv
        for pos in range(start, subnet.n_layer):
            if hidden is not None:
                hidden.append(x)
            x = self.layers[subnet.layers[pos]](x, dims=subnet.layer_dims(pos, q_per_kv), ctx=ctx, position=pos)
        return x

    def head(self, x: Tensor, logits_index: Tensor | None = None) -> Tensor:
        """Logits of the residual stream leaving the last kept layer, (B, T, V), or (B, P, V)
        at the positions ``logits_index`` (B, P)."""
        cfg = self.config
        B, T, D = x.shape
        if logits_index is not None:
            if logits_index.dim() != 2 or logits_index.shape[0] != B:
                raise NasError(f"logits_index must have shape (batch={B}, positions), got {tuple(logits_index.shape)}")
            if logits_index.numel() and not (0 <= int(logits_index.min()) and int(logits_index.max()) < T):
                raise NasError(f"logits_index holds positions outside 0..{T - 1}")
            x = x.gather(1, logits_index.to(x.device)[..., None].expand(-1, -1, D))  # (B, P, D)
        x = rms_norm(x, self.norm[:D], cfg.norm_eps, cfg.norm_offset)
        logits = F.linear(x, self.lm_head_weight[:, :D])  # (B, T, V)
        if cfg.final_softcap:
            logits = torch.tanh(logits / cfg.final_softcap) * cfg.final_softcap
        return logits

    def head_input(self, x: Tensor) -> Tensor:
        """The final norm of the residual stream ``x`` (.., D) in fp32, before the rounding to the
        weights' dtype that :meth:`head` makes (for :meth:`logits_at`)."""
        return rms_norm_fp32(x, self.norm[: x.shape[-1]], self.config.norm_eps, self.config.norm_offset)

    def logits_at(self, h: Tensor, index: Tensor) -> Tensor:
        """fp32 logits (R, K) of the vocabulary entries ``index`` (R, K) for the normed stream
        ``h`` (R, D) of :meth:`head_input`: the head's weights as they are (bf16, say), every
        product and sum in fp32, and the final softcap in fp32 too. For a few entries per row
        (a distribution's top and its target) this costs K dot products, not a vocabulary."""
        D = h.shape[-1]
        rows = self.lm_head_weight[:, :D][index].float()  # (R, K, D)
        logits = torch.einsum("rkd,rd->rk", rows, h.float())
        if self.config.final_softcap:
            logits = torch.tanh(logits / self.config.final_softcap) * self.config.final_softcap
        return logits

    # -------------------------------------------------------------- extract
    def extract(self, subnet: SubnetConfig | None = None) -> Supernet:
        """An independent dense model (copied weights) computing exactly ``subnet``.

        The result is itself a :class:`Supernet` whose config has per-layer sizes
        (``layer_dims``); its full forward equals this model's ``forward(tokens, subnet)``.
        """
        cfg = self.config
        subnet = subnet or self.full_subnet()
        subnet.check_fits(cfg)
        dims = tuple(subnet.layer_dims(p, cfg.q_per_kv) for p in range(subnet.n_layer))
        moe_positions = tuple(p for p, d in enumerate(dims) if d.n_expert)
        new_cfg = cfg.replace(
            d_model=subnet.d_model,
            n_layer=subnet.n_layer,
            n_head=max(d.n_head for d in dims),
            n_kv_head=max(d.n_head for d in dims) // cfg.q_per_kv,
            d_ff=max(d.d_ff for d in dims),
            head_dim=cfg.head_dim,
            n_expert=max((d.n_expert for d in dims), default=0),
            top_k=max((d.top_k for d in dims), default=0),
            moe_layers=moe_positions if moe_positions else None,
            layer_dims=None if subnet.is_homogeneous() and not moe_positions else dims,
            sliding_layers=None if cfg.sliding_layers is None else tuple(
                p for p, layer in enumerate(subnet.layers) if cfg.window(layer)
            ),
        )
        rank = [p for p, _ in sorted(enumerate(subnet.layers), key=lambda t: self.layer_rank.index(t[1]))]
        ref = self.lm_head_weight
        with torch.device("meta"):
            out = Supernet(new_cfg, layer_rank=rank)
        out = out.to_empty(device=ref.device).to(ref.dtype)
        out.inv_freq = rope_inv_freq(new_cfg).to(ref.device)
        source = self.state_dict()
        with torch.no_grad():
            # every kept weight is a prefix of its supernet tensor in every dimension
            for name, dst in out.state_dict().items():
                if name.startswith("layers."):
                    _, pos, rest = name.split(".", 2)
                    name = f"layers.{subnet.layers[int(pos)]}.{rest}"
                src = source[name]
                dst.copy_(src[tuple(slice(0, n) for n in dst.shape)])
        out.train(self.training)
        return out

    # -------------------------------------------------------------- counting
    def num_params(self, subnet: SubnetConfig | None = None, *, embedding: bool = True) -> int:
        """Parameters a sub-network uses (all experts it keeps, not only the active ones)."""
        counts = count_params(self.config, subnet or self.full_subnet())
        return counts.params if embedding else counts.non_embedding_params


__all__ = [
    "Attention",
    "Block",
    "FeedForward",
    "ForwardContext",
    "ForwardOutput",
    "KVCache",
    "MixtureOfExperts",
    "Supernet",
    "apply_rope",
    "gated_ffn",
    "rms_norm",
    "rope_inv_freq",
    "swiglu",
]
