"""The elastic LLaMA-family supernet.

Every sub-network is a set of *prefix views* of the supernet's weights: the first
``n_head`` query heads (whole KV groups: query heads of group ``g`` are rows
``g*q_per_kv*head_dim ...``), the first ``d_ff`` FFN neurons, the first ``n_expert``
experts and the first ``d_model`` embedding channels. The sub-network is an explicit
argument of :meth:`Supernet.forward` — there is no "active sub-network" state — and
:meth:`Supernet.extract` copies the same slices into an independent dense model
whose outputs are identical.

Shapes in comments: B batch, T new tokens, S keys (past + new), H query heads,
K KV heads, hd head dim, D d_model (kept), F d_ff (kept), E experts (kept), V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import NasError
from nas.model.config import LayerDims, SupernetConfig
from nas.model.params import count_params
from nas.model.subnet import SubnetConfig


# --------------------------------------------------------------------- helpers
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dim (the kept channels), computed in fp32 like HF LLaMA."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rope_inv_freq(config: SupernetConfig) -> Tensor:
    """Inverse RoPE frequencies (hd/2,), with HF-style ``llama3`` or ``linear`` scaling."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise NasError(f"supernet config: rope_scaling type {kind!r} is not supported (use linear or llama3)")


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (i, i + hd/2) — the HF "rotate_half" convention. x: (B, H, T, hd)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


# ------------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of past tokens for one sub-network, one entry per kept layer.

    Create it with :meth:`Supernet.new_cache` (or ``KVCache(subnet)``) and pass it to
    every forward call of the same sub-network; it grows as tokens are appended.
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


@dataclass(frozen=True)
class ForwardContext:
    """What every block of one forward call shares: the rotary tables (1|B, 1, T, hd),
    the attention mask (B, 1, T, S) or None for plain causal attention, the KV cache
    and the list the MoE layers append their load-balancing losses to (None: not wanted)."""

    cos: Tensor
    sin: Tensor
    mask: Tensor | None = None
    cache: KVCache | None = None
    aux: list[Tensor] | None = None


# ------------------------------------------------------------------- modules
class Attention(nn.Module):
    """Grouped-query attention with separate q/k/v projections (prefix-sliceable)."""

    def __init__(self, config: SupernetConfig, dims: LayerDims) -> None:
        super().__init__()
        hd = config.head_dim
        self.head_dim = hd
        bias = config.qkv_bias
        self.q_proj = nn.Linear(config.d_model, dims.n_head * hd, bias=bias)
        self.k_proj = nn.Linear(config.d_model, dims.n_kv_head * hd, bias=bias)
        self.v_proj = nn.Linear(config.d_model, dims.n_kv_head * hd, bias=bias)
        self.o_proj = nn.Linear(dims.n_head * hd, config.d_model, bias=False)
        self.head_outputs = nn.Identity()  # a hook point: per-head outputs (B, T, H*hd) before o_proj

    def attend(self, x: Tensor, *, n_head: int, n_kv_head: int, ctx: ForwardContext, position: int) -> Tensor:
        """Per-head attention outputs before o_proj, (B, T, n_head*hd), for kept layer ``position``."""
        B, T, D = x.shape
        hd = self.head_dim
        q_out, kv_out = n_head * hd, n_kv_head * hd
        q = F.linear(x, self.q_proj.weight[:q_out, :D], None if self.q_proj.bias is None else self.q_proj.bias[:q_out])
        k = F.linear(x, self.k_proj.weight[:kv_out, :D], None if self.k_proj.bias is None else self.k_proj.bias[:kv_out])
        v = F.linear(x, self.v_proj.weight[:kv_out, :D], None if self.v_proj.bias is None else self.v_proj.bias[:kv_out])
        q = q.view(B, T, n_head, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, n_kv_head, hd).transpose(1, 2)  # (B, K, T, hd)
        v = v.view(B, T, n_kv_head, hd).transpose(1, 2)  # (B, K, T, hd)
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update(position, k, v)  # (B, K, S, hd)
        # grouped-query attention without materialising repeated keys/values (query head h reads kv head h // repeat)
        gqa = n_kv_head != n_head
        if ctx.mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask, enable_gqa=gqa)
        return y.transpose(1, 2).reshape(B, T, q_out)  # (B, T, H*hd)

    def forward(self, x: Tensor, *, n_head: int, n_kv_head: int, ctx: ForwardContext, position: int) -> Tensor:
        """o_proj(attend(x, ...)): the attention sub-layer's contribution to the residual."""
        y = self.head_outputs(self.attend(x, n_head=n_head, n_kv_head=n_kv_head, ctx=ctx, position=position))  # (B, T, H*hd)
        return F.linear(y, self.o_proj.weight[: x.shape[-1], : y.shape[-1]])


def swiglu(x: Tensor, gate: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """down(silu(gate x) * up x) with explicit (possibly sliced) weights."""
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


class FeedForward(nn.Module):
    """SwiGLU FFN whose neurons are prefix-sliceable."""

    def __init__(self, config: SupernetConfig, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, config.d_model, bias=False)
        self.activations = nn.Identity()  # a hook point: neuron activations (B, T, F) before down_proj

    def forward(self, x: Tensor, d_ff: int) -> Tensor:
        D = x.shape[-1]
        h = F.silu(F.linear(x, self.gate_proj.weight[:d_ff, :D])) * F.linear(x, self.up_proj.weight[:d_ff, :D])
        return F.linear(self.activations(h), self.down_proj.weight[:D, :d_ff])


class MixtureOfExperts(nn.Module):
    """Top-k routed SwiGLU experts (optionally plus a shared expert).

    Elastic in the number of experts kept (a prefix of the importance-ordered experts),
    the routing ``top_k`` and each expert's width. The router's softmax runs over the
    kept experts only, and the top-k probabilities are renormalised to sum to one.
    """

    def __init__(self, config: SupernetConfig, dims: LayerDims) -> None:
        super().__init__()
        E, Fd, D = dims.n_expert, dims.d_ff, config.d_model
        self.router = nn.Linear(D, E, bias=False)
        self.gate = nn.Parameter(torch.empty(E, Fd, D))
        self.up = nn.Parameter(torch.empty(E, Fd, D))
        self.down = nn.Parameter(torch.empty(E, D, Fd))
        self.shared = FeedForward(config, Fd) if config.shared_expert else None
        for w in (self.gate, self.up, self.down):
            nn.init.normal_(w, std=0.02)

    def route(self, x: Tensor, n_expert: int, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Routing of tokens x (N, D): (probs over kept experts (N, E), top-k weights (N, k),
        top-k expert indices (N, k))."""
        D = x.shape[-1]
        logits = F.linear(x, self.router.weight[:n_expert, :D])  # (N, E)
        probs = logits.float().softmax(dim=-1)
        weights, index = probs.topk(top_k, dim=-1)  # (N, k)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights, index

    def forward(self, x: Tensor, n_expert: int, top_k: int, d_ff: int, aux: list[Tensor] | None = None) -> Tensor:
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        probs, weights, index = self.route(flat, n_expert, top_k)
        out = torch.zeros_like(flat)
        for e in range(n_expert):
            rows, slot = (index == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = swiglu(flat[rows], self.gate[e, :d_ff, :D], self.up[e, :d_ff, :D], self.down[e, :D, :d_ff])
            # under bf16 autocast y is bf16 while the residual stream (and out) stays fp32
            out.index_add_(0, rows, (y * weights[rows, slot].unsqueeze(-1).to(y.dtype)).to(out.dtype))
        if self.shared is not None:
            out = out + self.shared(flat, d_ff)
        if aux is not None:
            # Switch-Transformer load balancing: E * sum_e (fraction routed to e) * (mean prob of e)
            counts = torch.zeros(n_expert, device=x.device).index_add_(
                0, index.reshape(-1), torch.ones(index.numel(), device=x.device)
            )
            aux.append(n_expert * (counts / index.numel() * probs.mean(dim=0)).sum())
        return out.view(B, T, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + ffn(norm(x))."""

    def __init__(self, config: SupernetConfig, dims: LayerDims) -> None:
        super().__init__()
        self.eps = config.norm_eps
        self.attn_norm = nn.Parameter(torch.ones(config.d_model))
        self.attn = Attention(config, dims)
        self.ffn_norm = nn.Parameter(torch.ones(config.d_model))
        self.ffn: FeedForward | MixtureOfExperts
        self.ffn = MixtureOfExperts(config, dims) if dims.n_expert else FeedForward(config, dims.d_ff)

    def forward(self, x: Tensor, *, dims: LayerDims, ctx: ForwardContext, position: int) -> Tensor:
        """The block at sizes ``dims``, as kept layer ``position`` of the sub-network."""
        D = x.shape[-1]
        h = rms_norm(x, self.attn_norm[:D], self.eps)
        x = x + self.attn(h, n_head=dims.n_head, n_kv_head=dims.n_kv_head, ctx=ctx, position=position)
        h = rms_norm(x, self.ffn_norm[:D], self.eps)
        if isinstance(self.ffn, MixtureOfExperts):
            return x + self.ffn(h, dims.n_expert, dims.top_k, dims.d_ff, ctx.aux)
        return x + self.ffn(h, dims.d_ff)


# ------------------------------------------------------------------- supernet
@dataclass(frozen=True)
class ForwardOutput:
    """Logits plus what training and importance estimation need."""

    logits: Tensor  # (B, T, V); (B, P, V) for the positions of logits_index
    hidden: list[Tensor] | None  # residual stream entering each kept layer, then leaving the last one (pre-norm)
    aux_loss: Tensor | None  # summed MoE load-balancing loss (None for dense sub-networks)


class Supernet(nn.Module):
    """A decoder-only LLaMA-family transformer whose sub-networks are prefix views.

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
        self.layers = nn.ModuleList(Block(config, config.layer(i)) for i in range(config.n_layer))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 style init: N(0, std), output projections scaled by 1/sqrt(2 n_layer)."""
        for name, p in self.named_parameters():
            if name.endswith("norm") or name.endswith("_norm"):
                nn.init.ones_(p)
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

    def rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos/sin for integer positions (T,) or (B, T): shape (1|B, 1, T, hd)."""
        freqs = positions.float()[..., None] * self.inv_freq.float()  # (.., T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        if emb.dim() == 2:
            emb = emb[None]
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    # -------------------------------------------------------------- forward
    def forward(
        self,
        tokens: Tensor,
        subnet: SubnetConfig | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        logits_index: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, V) of ``subnet`` (None: the full model) for tokens (B, T).

        With ``cache``, tokens continue the cached sequence. ``attention_mask`` (B, S),
        1 for real tokens and 0 for padding over all S = past + T positions, is only
        needed for left-padded batches. ``logits_index`` (B, P) of positions in ``tokens``
        returns only their logits, (B, P, V): the LM head (a fifth of a small model's
        FLOPs) then runs on P positions instead of T.
        """
        return self.run(tokens, subnet, cache=cache, attention_mask=attention_mask, logits_index=logits_index).logits

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
        D = subnet.d_model
        x = F.embedding(tokens, self.embed.weight[:, :D])  # (B, T, D)

        S = past + T
        if attention_mask is not None:
            keep = attention_mask.to(torch.bool)  # (B, S)
            if keep.shape != (B, S):
                raise NasError(f"attention_mask must have shape {(B, S)}, got {tuple(keep.shape)}")
            positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
            causal = torch.ones(T, S, dtype=torch.bool, device=tokens.device).tril(diagonal=past)
            mask = causal[None] & keep[:, None, :]  # (B, T, S)
            # a fully masked row (a padding query) would give NaN: let it see everything
            mask = (mask | ~mask.any(-1, keepdim=True))[:, None]  # (B, 1, T, S)
        else:
            positions = torch.arange(past, S, device=tokens.device)
            mask = None
            if past and T > 1:
                mask = torch.ones(T, S, dtype=torch.bool, device=tokens.device).tril(diagonal=past)
        cos, sin = self.rope(positions, x.dtype)
        aux: list[Tensor] | None = [] if return_aux else None
        ctx = ForwardContext(cos=cos, sin=sin, mask=mask, cache=cache, aux=aux)

        hidden: list[Tensor] | None = [] if return_hidden else None
        q_per_kv = cfg.q_per_kv
        for pos, layer in enumerate(subnet.layers):
            if hidden is not None:
                hidden.append(x)
            x = self.layers[layer](x, dims=subnet.layer_dims(pos, q_per_kv), ctx=ctx, position=pos)
        if hidden is not None:
            hidden.append(x)
        if logits_index is not None:
            if logits_index.dim() != 2 or logits_index.shape[0] != B:
                raise NasError(f"logits_index must have shape (batch={B}, positions), got {tuple(logits_index.shape)}")
            if logits_index.numel() and not (0 <= int(logits_index.min()) and int(logits_index.max()) < T):
                raise NasError(f"logits_index holds positions outside 0..{T - 1}")
            x = x.gather(1, logits_index.to(x.device)[..., None].expand(-1, -1, D))  # (B, P, D)
        x = rms_norm(x, self.norm[:D], cfg.norm_eps)
        logits = F.linear(x, self.lm_head_weight[:, :D])  # (B, T, V)
        aux_loss = torch.stack(aux).sum() if aux else None
        return ForwardOutput(logits=logits, hidden=hidden, aux_loss=aux_loss)

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
        )
        rank = [p for p, _ in sorted(enumerate(subnet.layers), key=lambda t: self.layer_rank.index(t[1]))]
        ref = self.lm_head_weight
        with torch.device("meta"):
            out = Supernet(new_cfg, layer_rank=rank)
        out = out.to_empty(device=ref.device).to(ref.dtype)
        out.inv_freq = rope_inv_freq(new_cfg).to(ref.device)
        D = subnet.d_model
        with torch.no_grad():
            out.embed.weight.copy_(self.embed.weight[:, :D])
            out.norm.copy_(self.norm[:D])
            if out.lm_head is not None:
                out.lm_head.weight.copy_(self.lm_head_weight[:, :D])
            for pos, layer in enumerate(subnet.layers):
                src, dst, d = self.layers[layer], out.layers[pos], dims[pos]
                hd = cfg.head_dim
                q_out, kv_out = d.n_head * hd, d.n_kv_head * hd
                dst.attn_norm.copy_(src.attn_norm[:D])
                dst.ffn_norm.copy_(src.ffn_norm[:D])
                dst.attn.q_proj.weight.copy_(src.attn.q_proj.weight[:q_out, :D])
                dst.attn.k_proj.weight.copy_(src.attn.k_proj.weight[:kv_out, :D])
                dst.attn.v_proj.weight.copy_(src.attn.v_proj.weight[:kv_out, :D])
                dst.attn.o_proj.weight.copy_(src.attn.o_proj.weight[:D, :q_out])
                if cfg.qkv_bias:
                    dst.attn.q_proj.bias.copy_(src.attn.q_proj.bias[:q_out])
                    dst.attn.k_proj.bias.copy_(src.attn.k_proj.bias[:kv_out])
                    dst.attn.v_proj.bias.copy_(src.attn.v_proj.bias[:kv_out])
                if d.n_expert:
                    E, Fd = d.n_expert, d.d_ff
                    dst.ffn.router.weight.copy_(src.ffn.router.weight[:E, :D])
                    dst.ffn.gate.copy_(src.ffn.gate[:E, :Fd, :D])
                    dst.ffn.up.copy_(src.ffn.up[:E, :Fd, :D])
                    dst.ffn.down.copy_(src.ffn.down[:E, :D, :Fd])
                    shared_src, shared_dst = src.ffn.shared, dst.ffn.shared
                else:
                    shared_src, shared_dst = src.ffn, dst.ffn
                if shared_dst is not None:
                    Fd = d.d_ff
                    shared_dst.gate_proj.weight.copy_(shared_src.gate_proj.weight[:Fd, :D])
                    shared_dst.up_proj.weight.copy_(shared_src.up_proj.weight[:Fd, :D])
                    shared_dst.down_proj.weight.copy_(shared_src.down_proj.weight[:D, :Fd])
        out.train(self.training)
        return out

    # -------------------------------------------------------------- counting
    def num_params(self, subnet: SubnetConfig | None = None, *, embedding: bool = True) -> int:
        """Parameters a sub-network uses (all experts it keeps, not only the active ones)."""
        counts = count_params(self.config, subnet or self.full_subnet())
        return counts.params if embedding else counts.non_embedding_params


__all__ = ["ForwardContext", "ForwardOutput", "KVCache", "Supernet", "rms_norm", "rope_inv_freq", "apply_rope", "swiglu"]
