"""Importance ordering (Minitron-style, activation-based) of a supernet's units.

Run the full model on calibration text, score every prunable unit, and permute the
weights so that prefixes keep the most important units:

- FFN neurons: mean |silu(gate x) * up x| (the input of down_proj);
- attention: each query head's mean contribution norm ``|y_h W_o,h|``; KV groups are
  ranked by the sum over their query heads and query heads are ranked inside their
  group (dimensions inside a head are never permuted: RoPE pairs them);
- experts: routing mass x output norm — the mean norm of each expert's weighted
  contribution ``w_e(x) * |E_e(x)|`` to the layer's output (0 where it is not routed);
  the neurons inside each expert (and a shared expert's) by their mean |activation|,
  weighted by the routing weight;
- layers: block influence ``1 - cos(h_in, h_out)``. Layers are *ranked*, never
  reordered; the first and last layers are pinned to the top of the rank;
- embedding (``d_model``) channels: the mean |value| of each channel of every sublayer's
  input (each attention's and FFN's, and the LM head's: the normed residual stream in a
  pre-norm model), each input divided by its own RMS so that no layer's scale dominates.
  The channel permutation moves every weight that reads or writes the residual stream
  (embedding, norms, q/k/v/o, FFN and expert projections, router, LM head).

Permutations leave the full model's outputs unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import NasError
from nas.model.layers import activation, rms_norm
from nas.model.precision import torch_dtype
from nas.model.subnet import SubnetConfig
from nas.model.supernet import MixtureOfExperts, Supernet
from nas.paths import data_dir

log = logging.getLogger(__name__)


@dataclass
class Importance:
    """Per-unit scores of one model (higher = more important)."""

    ffn: list[Tensor | None]  # per layer: (d_ff,), None for MoE layers
    heads: list[Tensor]  # per layer: (n_head,)
    experts: list[Tensor | None]  # per layer: (n_expert,), None for dense layers
    layer_influence: Tensor  # (n_layer,)
    expert_ffn: list[Tensor | None] = field(default_factory=list)  # per layer: (n_expert, d_ff), None for dense layers
    shared_ffn: list[Tensor | None] = field(default_factory=list)  # per layer: (shared width,), None without one
    channels: Tensor | None = None  # (d_model,): residual-stream channels; None: keep their order

    def layer_rank(self, pin_ends: bool = True) -> list[int]:
        """Layer indices, most important first (first and last layers pinned on top)."""
        n = len(self.layer_influence)
        order = sorted(range(n), key=lambda i: -float(self.layer_influence[i]))
        if pin_ends and n > 2:
            order = [0, n - 1] + [i for i in order if i not in (0, n - 1)]
        return order


# ------------------------------------------------------------- calibration
def _strip_gutenberg(text: str) -> str:
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start != -1:
        text = text[text.find("\n", start) + 1 :]
        end = text.find("*** END OF")
    if end != -1:
        text = text[:end]
    return text


def _corpus_files() -> list[Path]:
    root = data_dir()
    folder = root / "corpus" / "gutenberg" if root else None
    return sorted(folder.glob("*.txt")) if folder and folder.is_dir() else []


def has_corpus() -> bool:
    """True when NAS_DATA_DIR holds the Gutenberg corpus (the default calibration text)."""
    return bool(_corpus_files())


def calibration_text(path: str | Path | None = None, n_chars: int = 300_000) -> str:
    """Calibration text: ``path`` (a text file), else ~300 KB from the Gutenberg corpus."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise NasError(f"calibration file {file} does not exist; pass a plain-text file with --calibration")
        text = file.read_text(encoding="utf-8", errors="replace")
        if len(text.strip()) < 1000:
            raise NasError(f"calibration file {file} has too little text ({len(text)} chars); give at least a few KB")
        return text
    files = _corpus_files()
    if not files:
        raise NasError(
            "no calibration text: NAS_DATA_DIR has no corpus/gutenberg; pass --calibration FILE (a few hundred KB of text)"
        )
    per_book = n_chars // 3
    return "\n\n".join(_strip_gutenberg(f.read_text(encoding="utf-8"))[20_000 : 20_000 + per_book] for f in files[:3])


def held_out_text(calibration: str | Path | None = None, n_chars: int = 60_000) -> str:
    """Held-out text for quality checks: a corpus book not used for calibration, else the
    last part of the calibration file."""
    files = _corpus_files()
    if calibration is None and len(files) > 3:
        return _strip_gutenberg(files[-1].read_text(encoding="utf-8"))[30_000 : 30_000 + n_chars]
    if calibration is not None:
        text = Path(calibration).read_text(encoding="utf-8", errors="replace")
        return text[-n_chars:]
    raise NasError("no held-out text available; pass --calibration FILE")


def default_bos(tokenizer) -> int | None:
    """The BOS id ``tokenizer`` puts in front of a text by default (Gemma's does; SmolLM2's
    does not), else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a")["input_ids"]
    return int(bos) if ids and ids[0] == bos else None


def tokenize_for_calibration(tokenizer, text: str, *, n_tokens: int = 32_768, seq_len: int = 256) -> Tensor:
    """Token ids (N, seq_len) from ``text``, at most ``n_tokens`` in all. When the tokenizer
    starts every text with BOS (Gemma, whose outputs fall apart without it), every row
    starts with BOS followed by ``seq_len - 1`` text tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = min(len(ids), n_tokens) // seq_len
    if n == 0:
        raise NasError(f"calibration text gives {len(ids)} tokens, fewer than one sequence of {seq_len}")
    bos = default_bos(tokenizer)
    if bos is None:
        return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    rows = torch.tensor(ids[: n * (seq_len - 1)], dtype=torch.long).view(n, seq_len - 1)
    return torch.cat((torch.full((n, 1), bos, dtype=torch.long), rows), dim=1)


# ------------------------------------------------------------------ measure
def work_dtype(model: Supernet, dtype: torch.dtype | str) -> torch.dtype:
    """The torch dtype an importance pass runs in: ``auto`` is bf16 where ``model``'s device
    computes bf16 natively (:func:`nas.model.precision.fast_dtype`) and fp32 elsewhere; on a
    CPU without bf16 instructions an emulated bf16 pass is many times slower than fp32."""
    return torch_dtype(dtype, model.lm_head_weight.device)


@torch.no_grad()
def measure(
    model: Supernet,
    tokens: Tensor,
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str = "auto",
    progress: Callable[[float], None] | None = None,
) -> Importance:
    """Score every unit of ``model`` (full sub-network) on calibration ``tokens`` (N, T).

    Runs a ``dtype`` copy of the model (``auto``: bf16 where the device computes it natively,
    else fp32, see :func:`work_dtype`; scores are accumulated in fp32)."""
    dtype = work_dtype(model, dtype)
    work = copy.deepcopy(model).to(dtype) if dtype != model.lm_head_weight.dtype else model
    cfg = model.config
    n = cfg.n_layer
    ffn: list[Tensor | None] = [torch.zeros(cfg.layer(i).d_ff) if not cfg.layer(i).n_expert else None for i in range(n)]
    heads = [torch.zeros(cfg.layer(i).n_head) for i in range(n)]
    experts = [torch.zeros(cfg.layer(i).n_expert) if cfg.layer(i).n_expert else None for i in range(n)]
    expert_ffn = [torch.zeros(cfg.layer(i).n_expert, cfg.layer(i).d_ff) if cfg.layer(i).n_expert else None for i in range(n)]
    shared_ffn: list[Tensor | None] = [None] * n
    influence = torch.zeros(n)
    channels = torch.zeros(cfg.d_model)
    count = 0
    hooks = []

    def add_channels(h: Tensor) -> None:
        h = h.float()
        channels.add_((h.abs() * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-12)).sum(dim=(0, 1)).cpu())

    def input_hook(module: nn.Module, args: tuple) -> None:
        add_channels(args[0])

    def attn_hook(index: int):
        attn = work.layers[index].attn

        def hook(module: nn.Module, args: tuple, y: Tensor) -> None:
            B, T, width = y.shape
            hd = attn.head_dim
            n_head = width // hd
            w = attn.o_proj.weight[:, :width].float().view(-1, n_head, hd)  # (D, H, hd)
            contrib = torch.einsum("bthd,ehd->bthe", y.float().view(B, T, n_head, hd), w)  # (B, T, H, D)
            heads[index].add_(contrib.norm(dim=-1).sum(dim=(0, 1)).cpu())

        return hook

    def ffn_hook(scores: list[Tensor | None], index: int):
        def hook(module: nn.Module, args: tuple, act: Tensor) -> None:
            total = act.float().abs().sum(dim=tuple(range(act.dim() - 1))).cpu()  # (F,)
            scores[index] = total if scores[index] is None else scores[index] + total

        return hook

    def moe_hook(index: int):
        def hook(module: MixtureOfExperts, args: tuple, output: Tensor) -> None:
            x, n_expert, top_k, d_ff = args[0], args[1], args[2], args[3]
            flat = x.reshape(-1, x.shape[-1])
            _, weights, index_k = module.route(flat, n_expert, top_k)
            D = flat.shape[-1]
            for e in range(n_expert):
                rows, slot = (index_k == e).nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                w = weights[rows, slot].float()[:, None]  # (n, 1)
                xe = flat[rows]
                h = activation(module.act, F.linear(xe, module.gate[e, :d_ff, :D])) * F.linear(xe, module.up[e, :d_ff, :D])
                y = F.linear(h, module.down[e, :D, :d_ff])  # (n, D)
                experts[index][e] += float((w * y.float()).norm(dim=-1).sum())
                expert_ffn[index][e, :d_ff] += (w * h.float().abs()).sum(dim=0).cpu()

        return hook

    for i, block in enumerate(work.layers):
        hooks.append(block.attn.head_outputs.register_forward_hook(attn_hook(i)))
        hooks.append(block.attn.register_forward_pre_hook(input_hook))
        hooks.append(block.ffn.register_forward_pre_hook(input_hook))
        if isinstance(block.ffn, MixtureOfExperts):
            hooks.append(block.ffn.register_forward_hook(moe_hook(i)))
            if block.ffn.shared is not None:
                hooks.append(block.ffn.shared.activations.register_forward_hook(ffn_hook(shared_ffn, i)))
        else:
            hooks.append(block.ffn.activations.register_forward_hook(ffn_hook(ffn, i)))
    try:
        batches = list(tokens.split(batch_size))
        for b, batch in enumerate(batches):
            # no position needs logits: skipping the LM head saves a large vocabulary's worth of work
            out = work.run(batch, return_hidden=True, logits_index=torch.zeros(batch.shape[0], 0, dtype=torch.long))
            hs = out.hidden
            for i in range(n):
                cos = F.cosine_similarity(hs[i].float(), hs[i + 1].float(), dim=-1)  # (B, T)
                influence[i] += float((1 - cos).sum())
            add_channels(rms_norm(hs[n], work.norm, cfg.norm_eps, cfg.norm_offset))  # the LM head's input
            count += batch.numel()
            if progress:
                progress((b + 1) / len(batches))
    finally:
        for h in hooks:
            h.remove()
    scale = 1.0 / max(count, 1)
    return Importance(
        ffn=[None if f is None else f * scale for f in ffn],
        heads=[h * scale for h in heads],
        experts=[None if e is None else e * scale for e in experts],
        layer_influence=influence * scale,
        expert_ffn=[None if e is None else e * scale for e in expert_ffn],
        shared_ffn=[None if e is None else e * scale for e in shared_ffn],
        channels=channels * scale / (2 * n + 1),
    )


# -------------------------------------------------------------------- apply
def _perm_rows(t: Tensor, perm: Tensor, block: int = 1) -> None:
    """Permute dim 0 of ``t`` in place, in blocks of ``block`` rows."""
    index = (perm[:, None] * block + torch.arange(block)[None]).reshape(-1)
    t.copy_(t.index_select(0, index.to(t.device)))


def _permute_ffn(ffn: nn.Module, perm: Tensor) -> None:
    _perm_rows(ffn.gate_proj.weight, perm)
    _perm_rows(ffn.up_proj.weight, perm)
    down = ffn.down_proj.weight
    down.copy_(down.index_select(1, perm))


def _permute_channels(model: Supernet, perm: Tensor) -> None:
    """Reorder the residual stream's channels: every weight that reads it (its input columns),
    writes it (its output rows) or scales it (norms) moves by ``perm``."""

    def cols(t: Tensor) -> None:  # the last dim reads the stream
        t.copy_(t.index_select(t.dim() - 1, perm.to(t.device)))

    cols(model.embed.weight)
    if model.lm_head is not None:
        cols(model.lm_head.weight)
    cols(model.norm)
    for block in model.layers:
        for norm in (block.attn_norm, block.ffn_norm, block.post_attn_norm, block.post_ffn_norm):
            if norm is not None:
                cols(norm)
        attn = block.attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            cols(proj.weight)
        _perm_rows(attn.o_proj.weight, perm)
        if attn.o_proj.bias is not None:
            _perm_rows(attn.o_proj.bias, perm)
        ffns = [block.ffn]
        if isinstance(block.ffn, MixtureOfExperts):
            moe = block.ffn
            cols(moe.router.weight)
            cols(moe.gate)
            cols(moe.up)
            moe.down.copy_(moe.down.index_select(1, perm))
            if moe.shared_gate is not None:
                cols(moe.shared_gate.weight)
            ffns = [moe.shared] if moe.shared is not None else []
        for ffn in ffns:
            cols(ffn.gate_proj.weight)
            cols(ffn.up_proj.weight)
            _perm_rows(ffn.down_proj.weight, perm)


@torch.no_grad()
def apply(model: Supernet, scores: Importance, *, pin_ends: bool = True) -> Supernet:
    """Permute ``model``'s weights in place so prefixes keep the most important units,
    and set its layer rank. The full model's outputs are unchanged."""
    cfg = model.config
    hd = cfg.head_dim
    q = cfg.q_per_kv
    for i, block in enumerate(model.layers):
        dims = cfg.layer(i)
        # attention: rank KV groups by the sum of their heads, heads within each group
        h = scores.heads[i].view(dims.n_kv_head, q)
        group_order = torch.argsort(h.sum(dim=1), descending=True, stable=True)
        head_perm = torch.cat([g * q + torch.argsort(h[g], descending=True, stable=True) for g in group_order])
        attn = block.attn
        _perm_rows(attn.q_proj.weight, head_perm, hd)
        _perm_rows(attn.k_proj.weight, group_order, hd)
        _perm_rows(attn.v_proj.weight, group_order, hd)
        if cfg.qkv_bias:
            _perm_rows(attn.q_proj.bias, head_perm, hd)
            _perm_rows(attn.k_proj.bias, group_order, hd)
            _perm_rows(attn.v_proj.bias, group_order, hd)
        if cfg.qk_norm == "proj":  # one weight per projected channel: it moves with its head
            _perm_rows(attn.q_norm, head_perm, hd)
            _perm_rows(attn.k_norm, group_order, hd)
        o = attn.o_proj.weight
        o.copy_(o.t().index_select(0, (head_perm[:, None] * hd + torch.arange(hd)).reshape(-1)).t())
        if isinstance(block.ffn, MixtureOfExperts):
            moe = block.ffn
            perm = torch.argsort(scores.experts[i], descending=True, stable=True)
            for t in (moe.router.weight, moe.gate, moe.up, moe.down):
                _perm_rows(t, perm)
            neurons = scores.expert_ffn[i] if i < len(scores.expert_ffn) else None
            if neurons is not None:
                for e, score in enumerate(neurons[perm]):
                    order = torch.argsort(score, descending=True, stable=True)
                    _perm_rows(moe.gate[e], order)
                    _perm_rows(moe.up[e], order)
                    moe.down[e].copy_(moe.down[e].index_select(1, order))
            shared = scores.shared_ffn[i] if i < len(scores.shared_ffn) else None
            if moe.shared is not None and shared is not None:
                _permute_ffn(moe.shared, torch.argsort(shared, descending=True, stable=True))
        else:
            _permute_ffn(block.ffn, torch.argsort(scores.ffn[i], descending=True, stable=True))
    if scores.channels is not None:
        _permute_channels(model, torch.argsort(scores.channels, descending=True, stable=True))
    model.layer_rank = tuple(scores.layer_rank(pin_ends))
    return model


# ------------------------------------------------------------------- checks
@torch.no_grad()
def loss(model: Supernet, tokens: Tensor, subnet: SubnetConfig | None = None, *, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy of ``subnet`` on ``tokens`` (N, T)."""
    total, count = 0.0, 0
    for batch in tokens.split(batch_size):
        logits = model(batch, subnet).float()
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(ce)
        count += batch[:, 1:].numel()
    return total / count


def narrow_d_model(d_model: int) -> int:
    """The ``d_model`` the ordering check cuts to: 7/8 of it, rounded down to a multiple of 8."""
    return max(8, (d_model * 7 // 8) // 8 * 8) if d_model > 8 else d_model


def ordering_losses(model: Supernet, tokens: Tensor, *, dtype: torch.dtype | str = "auto") -> dict[str, float]:
    """Held-out loss of the full model, of the sub-network with every d_ff halved and of the
    full model narrowed to :func:`narrow_d_model` channels (on a ``dtype`` copy, ``auto`` as
    in :func:`measure`): run before and after :func:`apply`, the check that ordering pays."""
    work = copy.deepcopy(model).to(work_dtype(model, dtype))
    full = work.full_subnet()
    half = dataclasses.replace(full, d_ff=tuple(max(1, f // 2) for f in full.d_ff))
    narrow = dataclasses.replace(full, d_model=narrow_d_model(full.d_model))
    return {
        "full": round(loss(work, tokens), 4),
        "half_ffn": round(loss(work, tokens, half), 4),
        "narrow_d_model": round(loss(work, tokens, narrow), 4),
    }


def perplexity(value: float) -> float:
    return math.exp(value)


__all__ = ["Importance", "apply", "calibration_text", "default_bos", "has_corpus", "held_out_text", "loss", "measure", "narrow_d_model", "ordering_losses",
           "tokenize_for_calibration"]
