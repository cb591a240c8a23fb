"""The elastic building blocks of a supernet: norms, RoPE, attention, FFN, mixture of experts.

Every module holds the *largest* weights and runs any smaller size as prefix views
(``weight[:out, :in]``): the first ``n_head`` query heads (whole KV groups), the first
``d_ff`` neurons, the first ``n_expert`` experts, the first ``d_model`` channels. The sizes
are explicit arguments of ``forward``; no module keeps an "active size".

The family features of :class:`~nas.model.config.SupernetConfig` live here: where the
norms sit (pre / post / sandwich), Gemma's ``(1 + w)`` RMSNorm, q/k RMSNorm (per head or
over the whole projection), GeGLU, attention scale and soft-capping, per-layer sliding
windows with their own RoPE base, q/k/v clipping, and the router's details.

Shapes in comments: B batch, T new tokens, S keys (past + new), H query heads,
K KV heads, hd head dim, D d_model (kept), F d_ff (kept), E experts (kept), N tokens.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import NasError
from nas.model.cache import ForwardContext
from nas.model.config import LayerDims, SupernetConfig


# --------------------------------------------------------------------- helpers
def rms_norm(x: Tensor, weight: Tensor, eps: float, offset: float = 0.0) -> Tensor:
    """RMSNorm over the last dim (the kept channels), computed in fp32.

    ``offset == 0``: HF LLaMA's ``weight * normed.to(dtype)``. ``offset > 0``: Gemma's
    ``(normed * (offset + weight)).to(dtype)``, the scale taken in fp32 as well. ``dtype`` is
    x's, except for an fp32 residual stream ``x`` read by bf16 weights (scoring with
    ``residual_dtype=fp32``, see :meth:`nas.model.supernet.Supernet.embed_tokens`): the norm
    then scales in fp32 and rounds once to the weights' dtype, which the next matmul computes in.
    """
    mixed = x.dtype == torch.float32 and weight.dtype != torch.float32
    dtype = weight.dtype if mixed else x.dtype
    if offset or mixed:
        return rms_norm_fp32(x, weight, eps, offset).to(dtype)
    h = x.float()
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


def rms_norm_fp32(x: Tensor, weight: Tensor, eps: float, offset: float = 0.0) -> Tensor:
    """:func:`rms_norm` scaled by ``offset + weight`` in fp32 and left in fp32 (what its Gemma
    and mixed forms compute before their one rounding)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return h * (offset + weight.float())


def activation(name: str, x: Tensor) -> Tensor:
    """The gate activation of a gated FFN (see :data:`nas.model.config.FFN_ACTIVATIONS`)."""
    if name == "silu":
        return F.silu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return F.gelu(x)


def gated_ffn(x: Tensor, gate: Tensor, up: Tensor, down: Tensor, act: str = "silu") -> Tensor:
    """down(act(gate x) * up x) with explicit (possibly sliced) weights."""
    return F.linear(activation(act, F.linear(x, gate)) * F.linear(x, up), down)


def swiglu(x: Tensor, gate: Tensor, up: Tensor, down: Tensor) -> Tensor:
    """down(silu(gate x) * up x) with explicit (possibly sliced) weights."""
    return gated_ffn(x, gate, up, down, "silu")


def add_rms_norm(x: Tensor, h: Tensor, weight: Tensor, eps: float, offset: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(x + h, rms_norm(x + h))``: a residual add and the norm that reads its result."""
    s = x + h
    return s, rms_norm(s, weight, eps, offset)


def rope_qk(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`apply_rope` on queries and keys."""
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


_compile_lock = threading.Lock()
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by TorchInductor with dynamic shapes, memoised: one fused loop instead of
    a kernel per operation (see :mod:`nas.model.fused` for when it is used). Each dtype, rank
    and norm offset is a variant of its own; past Dynamo's limit of variants per function a
    call runs eagerly (raised here to 32: a process scoring several families stays fused)."""
    done = _compiled.get(fn)  # every block calls this: no lock once compiled
    if done is not None:
        return done
    with _compile_lock:
        if fn not in _compiled:
            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, 32)
            _compiled[fn] = torch.compile(fn, dynamic=True)
        return _compiled[fn]


def rope_inv_freq(config: SupernetConfig, *, local: bool = False) -> Tensor:
    """Inverse RoPE frequencies (hd/2,), with HF-style ``llama3`` or ``linear`` scaling.

    ``local``: those of sliding-window layers, which use ``rope_local_theta`` unscaled when
    the config sets it (Gemma 3), else the global ones.
    """
    hd = config.head_dim
    theta = config.rope_local_theta if local and config.rope_local_theta else config.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = {} if local and config.rope_local_theta else (config.rope_scaling or {})
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


def softcapped_attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, scale: float, cap: float) -> Tensor:
    """Attention with ``cap * tanh(scores / cap)`` on the scores (Gemma 2), GQA by broadcasting.

    q (B, H, T, hd), k and v (B, K, S, hd), mask (.., T, S) of allowed keys or None for
    causal attention with the T queries at the end of the S keys. Returns (B, H, T, hd).
    """
    B, H, T, hd = q.shape
    K, S = k.shape[1], k.shape[2]
    qg = q.view(B, K, H // K, T, hd)  # (B, K, H/K, T, hd): query head h reads kv head h // (H/K)
    scores = torch.matmul(qg, k[:, :, None].transpose(-1, -2)) * scale  # (B, K, H/K, T, S)
    scores = torch.tanh(scores / cap) * cap
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if mask.dim() == 4:
        mask = mask[:, :, None]  # (B, 1, 1, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    return torch.matmul(probs, v[:, :, None]).view(B, H, T, hd)  # (B, H, T, hd)


def _bias(linear: nn.Linear, n: int) -> Tensor | None:
    return None if linear.bias is None else linear.bias[:n]


# ------------------------------------------------------------------- modules
class Attention(nn.Module):
    """Grouped-query attention with separate q/k/v projections (prefix-sliceable).

    ``window`` > 0 makes it a sliding-window layer (each query sees the last ``window``
    positions, itself included) that reads the context's local RoPE tables.
    """

    def __init__(self, config: SupernetConfig, dims: LayerDims, *, window: int = 0) -> None:
        super().__init__()
        hd = config.head_dim
        self.head_dim = hd
        self.window = window
        self.eps, self.norm_offset = config.norm_eps, config.norm_offset
        self.qk_norm_kind = config.qk_norm
        self.scale = config.attn_scale or None  # None: SDPA's own 1/sqrt(hd)
        self.softcap = config.attn_softcap
        self.clip = config.qkv_clip
        bias = config.qkv_bias
        self.q_proj = nn.Linear(config.d_model, dims.n_head * hd, bias=bias)
        self.k_proj = nn.Linear(config.d_model, dims.n_kv_head * hd, bias=bias)
        self.v_proj = nn.Linear(config.d_model, dims.n_kv_head * hd, bias=bias)
        self.o_proj = nn.Linear(dims.n_head * hd, config.d_model, bias=config.o_bias)
        self.head_outputs = nn.Identity()  # a hook point: per-head outputs (B, T, H*hd) before o_proj
        if config.qk_norm == "head":
            self.q_norm = nn.Parameter(torch.ones(hd))
            self.k_norm = nn.Parameter(torch.ones(hd))
        elif config.qk_norm == "proj":
            self.q_norm = nn.Parameter(torch.ones(dims.n_head * hd))
            self.k_norm = nn.Parameter(torch.ones(dims.n_kv_head * hd))

    def attend(self, x: Tensor, *, n_head: int, n_kv_head: int, ctx: ForwardContext, position: int) -> Tensor:
        """Per-head attention outputs before o_proj, (B, T, n_head*hd), for kept layer ``position``."""
        B, T, D = x.shape
        hd = self.head_dim
        q_out, kv_out = n_head * hd, n_kv_head * hd
        q = F.linear(x, self.q_proj.weight[:q_out, :D], _bias(self.q_proj, q_out))  # (B, T, H*hd)
        k = F.linear(x, self.k_proj.weight[:kv_out, :D], _bias(self.k_proj, kv_out))  # (B, T, K*hd)
        v = F.linear(x, self.v_proj.weight[:kv_out, :D], _bias(self.v_proj, kv_out))  # (B, T, K*hd)
        if self.qk_norm_kind == "proj":  # one norm over all kept heads (OLMo 2, OLMoE)
            q = rms_norm(q, self.q_norm[:q_out], self.eps, self.norm_offset)
            k = rms_norm(k, self.k_norm[:kv_out], self.eps, self.norm_offset)
        if self.clip:
            q, k, v = q.clamp(-self.clip, self.clip), k.clamp(-self.clip, self.clip), v.clamp(-self.clip, self.clip)
        q = q.view(B, T, n_head, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, n_kv_head, hd).transpose(1, 2)  # (B, K, T, hd)
        v = v.view(B, T, n_kv_head, hd).transpose(1, 2)  # (B, K, T, hd)
        if self.qk_norm_kind == "head":  # per head over hd (Qwen3, Gemma 3)
            q = rms_norm(q, self.q_norm, self.eps, self.norm_offset)
            k = rms_norm(k, self.k_norm, self.eps, self.norm_offset)
        cos, sin = ctx.rope_for(self.window)
        q, k = (compiled(rope_qk) if ctx.fused else rope_qk)(q, k, cos, sin)
        if ctx.packed is not None:  # several sequences in one row: the packer attends within each
            return ctx.packed.attend(q, k, v, window=self.window, core=self.core)  # (1, N, H*hd)
        if ctx.cache is not None:
            k, v = ctx.cache.update(position, k, v)  # (B, K, S, hd)
        y = self.core(q, k, v, ctx.mask_for(self.window))
        return y.transpose(1, 2).reshape(B, T, q_out)  # (B, T, H*hd)

    def core(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """This layer's attention of q (B, H, T, hd) over k, v (B, K, S, hd) under ``mask``
        (B, 1, T, S) or (T, S) of allowed keys, or None: causal with the T queries at the end
        of the S keys (only used where T == S or T == 1). Returns (B, H, T, hd)."""
        if self.softcap:
            return softcapped_attention(q, k, v, mask=mask, scale=self.scale or self.head_dim**-0.5, cap=self.softcap)
        # grouped-query attention without materialising repeated keys/values (query head h reads kv head h // repeat)
        gqa = k.shape[1] != q.shape[1]
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=gqa, scale=self.scale)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, scale=self.scale)

    def forward(self, x: Tensor, *, n_head: int, n_kv_head: int, ctx: ForwardContext, position: int) -> Tensor:
        """o_proj(attend(x, ...)): the attention sub-layer's contribution to the residual."""
        D = x.shape[-1]
        y = self.head_outputs(self.attend(x, n_head=n_head, n_kv_head=n_kv_head, ctx=ctx, position=position))  # (B, T, H*hd)
        return F.linear(y, self.o_proj.weight[:D, : y.shape[-1]], _bias(self.o_proj, D))


class FeedForward(nn.Module):
    """Gated FFN (SwiGLU or GeGLU) whose neurons are prefix-sliceable."""

    def __init__(self, config: SupernetConfig, d_ff: int) -> None:
        super().__init__()
        self.act = config.ffn_act
        self.gate_proj = nn.Linear(config.d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, config.d_model, bias=False)
        self.activations = nn.Identity()  # a hook point: neuron activations (B, T, F) before down_proj

    @property
    def width(self) -> int:
        return self.gate_proj.weight.shape[0]

    def forward(self, x: Tensor, d_ff: int) -> Tensor:
        D = x.shape[-1]
        gate = F.linear(x, self.gate_proj.weight[:d_ff, :D])  # (.., F)
        h = activation(self.act, gate) * F.linear(x, self.up_proj.weight[:d_ff, :D])  # (.., F)
        return F.linear(self.activations(h), self.down_proj.weight[:D, :d_ff])


class MixtureOfExperts(nn.Module):
    """Top-k routed gated experts (optionally plus a shared expert).

    Elastic in the number of experts kept (a prefix of the importance-ordered experts),
    the routing ``top_k`` and each expert's width. The router's softmax runs over the
    kept experts only (what masking the dropped experts' router logits gives); the top-k
    probabilities are renormalised to sum to one when ``norm_topk_prob`` (Mixtral,
    Qwen3-MoE), else used as they are (Qwen2-MoE, OLMoE). The shared expert is never
    dropped; with a fixed ``shared_d_ff`` (Qwen2-MoE) it is never narrowed either, and
    its output is gated by ``sigmoid(w . x)`` when ``shared_expert_gate``.
    """

    def __init__(self, config: SupernetConfig, dims: LayerDims) -> None:
        super().__init__()
        E, Fd, D = dims.n_expert, dims.d_ff, config.d_model
        self.act = config.ffn_act
        self.norm_topk_prob = config.norm_topk_prob
        self.fixed_shared = config.shared_d_ff > 0
        self.router = nn.Linear(D, E, bias=False)
        self.gate = nn.Parameter(torch.empty(E, Fd, D))
        self.up = nn.Parameter(torch.empty(E, Fd, D))
        self.down = nn.Parameter(torch.empty(E, D, Fd))
        self.shared = FeedForward(config, config.shared_width(Fd)) if config.shared_expert else None
        self.shared_gate = nn.Linear(D, 1, bias=False) if config.shared_expert_gate else None
        for w in (self.gate, self.up, self.down):
            nn.init.normal_(w, std=0.02)

    def route(self, x: Tensor, n_expert: int, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Routing of tokens x (N, D): (probs over kept experts (N, E), top-k weights (N, k),
        top-k expert indices (N, k))."""
        D = x.shape[-1]
        logits = F.linear(x, self.router.weight[:n_expert, :D])  # (N, E)
        probs = logits.float().softmax(dim=-1)
        weights, index = probs.topk(top_k, dim=-1)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights, index

    def expert(self, x: Tensor, e: int, d_ff: int) -> Tensor:
        """Expert ``e`` at width ``d_ff`` on tokens x (N, D): (N, D)."""
        D = x.shape[-1]
        return gated_ffn(x, self.gate[e, :d_ff, :D], self.up[e, :d_ff, :D], self.down[e, :D, :d_ff], self.act)

    def shared_output(self, x: Tensor, d_ff: int) -> Tensor:
        """The (gated) shared expert on tokens x (N, D) when the experts keep ``d_ff`` neurons."""
        assert self.shared is not None
        y = self.shared(x, self.shared.width if self.fixed_shared else d_ff)  # (N, D)
        if self.shared_gate is not None:
            y = torch.sigmoid(F.linear(x, self.shared_gate.weight[:, : x.shape[-1]])) * y  # (N, 1) * (N, D)
        return y

    def forward(self, x: Tensor, n_expert: int, top_k: int, d_ff: int, aux: list[Tensor] | None = None) -> Tensor:
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        probs, weights, index = self.route(flat, n_expert, top_k)
        # the (token, slot) assignments grouped by expert (tokens in order within each): one
        # gather, each expert's rows a contiguous block, one scatter-add back. Each token's
        # contributions are still added in expert order, as a loop over experts would.
        assigned = index.reshape(-1)  # (N*k,)
        order = assigned.argsort(stable=True)
        per_expert = torch.bincount(assigned, minlength=n_expert)  # (E,)
        rows = order // top_k  # the token of each sorted assignment
        xs = flat.index_select(0, rows)  # (N*k, D)
        # one slice of each weight for all experts: its backward is one gradient of that slice,
        # not one full-size zero gradient per expert
        gate, up, down = (w[:n_expert].unbind(0) for w in (self.gate[:, :d_ff, :D], self.up[:, :d_ff, :D], self.down[:, :D, :d_ff]))
        ys = [gated_ffn(part, gate[e], up[e], down[e], self.act)
              for e, part in enumerate(xs.split(per_expert.tolist())) if part.shape[0]]
        y = ys[0] if len(ys) == 1 else torch.cat(ys) if ys else xs  # (N*k, D); xs: (0, D) when there is no token
        w = weights.reshape(-1).index_select(0, order).unsqueeze(-1)  # (N*k, 1)
        # under bf16 autocast y is bf16 while the residual stream (and out) stays fp32
        out = torch.zeros_like(flat).index_add_(0, rows, (y * w.to(y.dtype)).to(flat.dtype))
        if self.shared is not None:
            out = out + self.shared_output(flat, d_ff)
        if aux is not None:
            # Switch-Transformer load balancing: E * sum_e (fraction routed to e) * (mean prob of e)
            aux.append(n_expert * (per_expert.float() / index.numel() * probs.mean(dim=0)).sum())
        return out.view(B, T, D)


class Block(nn.Module):
    """A transformer block. ``norm_placement``: ``pre`` x + attn(norm(x)) (LLaMA);
    ``post`` x + norm(attn(x)) (OLMo 2); ``sandwich`` x + norm(attn(norm(x))) (Gemma 2/3);
    the same for the FFN. Absent norms are None."""

    def __init__(self, config: SupernetConfig, dims: LayerDims, *, window: int = 0) -> None:
        super().__init__()
        self.eps, self.norm_offset = config.norm_eps, config.norm_offset
        pre, post = config.norm_placement != "post", config.norm_placement != "pre"
        D = config.d_model
        self.attn_norm = nn.Parameter(torch.ones(D)) if pre else None
        self.attn = Attention(config, dims, window=window)
        self.ffn_norm = nn.Parameter(torch.ones(D)) if pre else None
        self.ffn: FeedForward | MixtureOfExperts
        self.ffn = MixtureOfExperts(config, dims) if dims.n_expert else FeedForward(config, dims.d_ff)
        self.post_attn_norm = nn.Parameter(torch.ones(D)) if post else None
        self.post_ffn_norm = nn.Parameter(torch.ones(D)) if post else None

    def _norm(self, x: Tensor, weight: Tensor | None, fused: bool = False) -> Tensor:
        if weight is None:
            return x
        if fused:  # rows of D channels whatever the batch's shape: one compiled variant per dtype
            return compiled(rms_norm)(x.reshape(-1, x.shape[-1]), weight[: x.shape[-1]], self.eps, self.norm_offset).view(x.shape)
        return rms_norm(x, weight[: x.shape[-1]], self.eps, self.norm_offset)

    def forward(self, x: Tensor, *, dims: LayerDims, ctx: ForwardContext, position: int) -> Tensor:
        """The block at sizes ``dims``, as kept layer ``position`` of the sub-network. ``x`` is in
        the weights' dtype, or in fp32 over bf16 weights (an fp32 residual stream: each sub-layer
        reads it through its norm, or a cast where there is none, and adds its output in fp32)."""
        compute = self.attn.q_proj.weight.dtype
        h = self._norm(x, self.attn_norm, ctx.fused) if self.attn_norm is not None else x.to(compute)
        h = self.attn(h, n_head=dims.n_head, n_kv_head=dims.n_kv_head, ctx=ctx, position=position)
        h = self._norm(h, self.post_attn_norm, ctx.fused)
        if ctx.fused and self.ffn_norm is not None:  # the residual add and the FFN's norm in one loop
            D = x.shape[-1]
            s, h = compiled(add_rms_norm)(x.reshape(-1, D), h.reshape(-1, D), self.ffn_norm[:D], self.eps, self.norm_offset)
            x, h = s.view(x.shape), h.view(x.shape)
        else:
            x = x + h
            h = self._norm(x, self.ffn_norm) if self.ffn_norm is not None else x.to(compute)
        if isinstance(self.ffn, MixtureOfExperts):
            h = self.ffn(h, dims.n_expert, dims.top_k, dims.d_ff, ctx.aux)
        else:
            h = self.ffn(h, dims.d_ff)
        return x + self._norm(h, self.post_ffn_norm, ctx.fused)


__all__ = [
    "Attention",
    "Block",
    "FeedForward",
    "MixtureOfExperts",
    "activation",
    "add_rms_norm",
    "apply_rope",
    "compiled",
    "gated_ffn",
    "rms_norm",
    "rms_norm_fp32",
    "rope_inv_freq",
    "rope_qk",
    "softcapped_attention",
    "swiglu",
]
