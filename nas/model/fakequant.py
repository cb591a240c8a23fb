"""Quantise and dequantise weights exactly as llama.cpp's GGUF formats store them, in torch.

:func:`quantize` / :func:`dequantize` implement each format of :mod:`nas.model.quant` on the
last dimension of a tensor (a weight's input dimension), with the arithmetic of ggml's
reference quantisers (``ggml-quants.c``, mirrored by the ``gguf`` package's
``gguf.quants``, which the tests compare against value for value): scales in fp16, codes
rounded the same way (``q8_0`` rounds half away from zero; the 4/5-bit formats truncate
after adding 0.5 or their offset). :func:`fake_quantized` passes every weight matrix of a
supernet through quantise-dequantise once, so scoring a candidate on it scores what
llama.cpp runs up to its kernels' arithmetic (they also quantise activations in dot
products). Slicing such a supernet to a sub-network equals quantising the extracted
sub-network when every kept input width is a multiple of the block size
(:func:`nas.model.quant.block_problems`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from nas.errors import NasError
from nas.model.quant import QuantFormat, parse_quant
from nas.model.supernet import Supernet


@dataclass(frozen=True)
class Quantized:
    """A tensor in a block format: per block an fp16 scale ``d`` (and ``m`` for the ``_1``
    formats) and integer codes ``q`` (blocks, block_size); ``shape`` of the original."""

    fmt: QuantFormat
    shape: tuple[int, ...]
    d: Tensor  # (blocks, 1) float16
    q: Tensor  # (blocks, block_size) int16
    m: Tensor | None = None  # (blocks, 1) float16


def _roundf(x: Tensor) -> Tensor:
    """Round half away from zero, as ggml's ``roundf`` (the gguf package's ``np_roundf``)."""
    a = x.abs()
    floored = a.floor()
    return torch.sign(x) * (floored + (2 * (a - floored)).floor())


def _inverse(d: Tensor) -> Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def quantize(w: Tensor, fmt: str | QuantFormat) -> Quantized | Tensor:
    """``w`` in format ``fmt`` along its last dimension: a :class:`Quantized` for block
    formats, a bf16 tensor for ``bf16``, the f32 tensor itself for ``f32``."""
    fmt = parse_quant(fmt)
    x = w.detach().float()
    if fmt.name == "f32":
        return x
    if fmt.name == "bf16":
        return x.to(torch.bfloat16)  # round to nearest even, as ggml_compute_fp32_to_bf16
    b = fmt.block_size
    if x.dim() == 0 or x.shape[-1] % b:
        raise NasError(f"{fmt.name} quantises rows in blocks of {b}; a row of {x.shape[-1] if x.dim() else 0} weights is not "
                       f"a whole number of blocks")
    blocks = x.reshape(-1, b)  # (blocks, b)
    m = None
    if fmt.name in ("q8_0", "q4_0", "q5_0"):
        if fmt.name == "q8_0":
            d = blocks.abs().amax(-1, keepdim=True) / 127
            q = _roundf(blocks * _inverse(d))
        else:
            offset = 8 if fmt.name == "q4_0" else 16
            imax = blocks.abs().argmax(-1, keepdim=True)  # first of equal magnitudes, as numpy's argmax
            d = blocks.gather(-1, imax) / -offset
            q = torch.trunc(blocks * _inverse(d) + (offset + 0.5)).clamp(0, 2 * offset - 1)
    elif fmt.name in ("q4_1", "q5_1"):
        levels = 15 if fmt.name == "q4_1" else 31
        lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
        d = (hi - lo) / levels
        q = torch.trunc((blocks - lo) * _inverse(d) + 0.5).clamp(0, levels)
        m = lo.to(torch.float16)
    else:  # pragma: no cover - every format of QUANT_FORMATS is handled above
        raise NasError(f"no quantiser for {fmt.name}")
    return Quantized(fmt=fmt, shape=tuple(x.shape), d=d.to(torch.float16), q=q.to(torch.int16), m=m)


def dequantize(t: Quantized | Tensor) -> Tensor:
    """The f32 weights a quantised tensor stands for (what llama.cpp multiplies by)."""
    if not isinstance(t, Quantized):
        return t.float()
    d = t.d.float()
    if t.fmt.name == "q8_0":
        out = t.q.float() * d
    elif t.fmt.name in ("q4_0", "q5_0"):
        out = d * (t.q - (8 if t.fmt.name == "q4_0" else 16)).float()
    else:
        assert t.m is not None
        out = d * t.q.float() + t.m.float()
    return out.reshape(t.shape)


def quantize_dequantize(w: Tensor, fmt: str | QuantFormat) -> Tensor:
    """``dequantize(quantize(w, fmt))`` in ``w``'s dtype."""
    return dequantize(quantize(w, fmt)).to(w.dtype)


def _is_weight_matrix(name: str, p: Tensor) -> bool:
    """Weights llama.cpp stores in the model's format: matrices (norms and biases stay f32)."""
    return p.dim() >= 2 and not name.endswith(("norm", "bias"))


def fake_quantized(model: Supernet, fmt: str | QuantFormat) -> Supernet:
    """A copy of ``model`` whose weight matrices went through ``fmt``'s quantise-dequantise
    (in blocks along each matrix's input dimension, at the supernet's full widths)."""
    fmt = parse_quant(fmt)
    out = copy.deepcopy(model)
    if fmt.name == "f32":
        return out
    with torch.no_grad():
        for name, p in out.named_parameters():
            if _is_weight_matrix(name, p):
                p.copy_(quantize_dequantize(p, fmt))
    return out


__all__ = ["Quantized", "dequantize", "fake_quantized", "quantize", "quantize_dequantize"]
