"""Weight formats of a deployed model: ``f32``, ``bf16`` and llama.cpp's block quantisations.

A format says how the 2-D weights (projections, FFN, embedding, LM head) are stored; norms
and biases stay f32 in every format (llama.cpp's convention). The block formats cut each
weight *row* (the input dimension: ``weight[out, :]``) into blocks of ``block_size``
weights stored in ``type_size`` bytes:

========  ==========  =========  ==========================================================
format    block size  bytes      a block
========  ==========  =========  ==========================================================
q8_0      32          34         fp16 scale d, 32 int8: w = d * q
q5_0      32          22         fp16 scale d, 32 5-bit: w = d * (q - 16)
q5_1      32          24         fp16 scale d and min m, 32 5-bit: w = d * q + m
q4_0      32          18         fp16 scale d, 32 4-bit: w = d * (q - 8)
q4_1      32          20         fp16 scale d and min m, 32 4-bit: w = d * q + m
========  ==========  =========  ==========================================================

So a kept input width must be a whole number of blocks (:func:`block_problems`). Prefix
slicing stays exact under quantisation for the same reason: when every kept input width
is a multiple of the block size, the blocks of a sub-network's weights are blocks of the
supernet's, so quantising the supernet once and slicing equals quantising the slice
(output rows are quantised independently, so dropping rows never matters).

This module is torch-free (the cost model reads it); the arithmetic is in
:mod:`nas.model.fakequant`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.model.subnet import SubnetConfig


@dataclass(frozen=True)
class QuantFormat:
    """One storage format. ``ggml_type``: the name of its ``gguf.GGMLQuantizationType``;
    ``file_type``: GGUF ``general.file_type`` (``gguf.LlamaFileType``)."""

    name: str
    block_size: int
    type_size: int
    ggml_type: str
    file_type: int

    @property
    def bytes_per_weight(self) -> float:
        return self.type_size / self.block_size

    @property
    def is_block(self) -> bool:
        return self.block_size > 1

    def weight_bytes(self, n: int) -> int:
        """Bytes of ``n`` weights (a whole number of blocks for block formats)."""
        return -(-n // self.block_size) * self.type_size


QUANT_FORMATS: dict[str, QuantFormat] = {
    f.name: f
    for f in (
        QuantFormat("f32", 1, 4, "F32", 0),
        QuantFormat("bf16", 1, 2, "BF16", 32),
        QuantFormat("q8_0", 32, 34, "Q8_0", 7),
        QuantFormat("q5_1", 32, 24, "Q5_1", 9),
        QuantFormat("q5_0", 32, 22, "Q5_0", 8),
        QuantFormat("q4_1", 32, 20, "Q4_1", 3),
        QuantFormat("q4_0", 32, 18, "Q4_0", 2),
    )
}
#: Bytes of a norm weight or bias (kept f32 in every format).
VECTOR_BYTES = 4


def parse_quant(name: str | QuantFormat) -> QuantFormat:
    """The format named ``name`` (``f32``, ``bf16``, ``q8_0``, ...; case-insensitive)."""
    if isinstance(name, QuantFormat):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = {"fp32": "f32", "float32": "f32", "bfloat16": "bf16"}.get(key, key)
    try:
        return QUANT_FORMATS[key]
    except KeyError:
        raise NasError(f"unknown quantisation {name!r}; valid ones: {', '.join(QUANT_FORMATS)}") from None


def extreme_quants(names: Sequence[str]) -> tuple[str, str]:
    """(fewest, most) bytes per weight among the formats ``names``."""
    fmts = sorted((parse_quant(n) for n in names), key=lambda f: f.bytes_per_weight)
    return fmts[0].name, fmts[-1].name


def block_problems(fmt: QuantFormat, subnet: SubnetConfig, head_dim: int) -> list[str]:
    """Why ``subnet``'s weights cannot be stored in ``fmt`` (empty when they can): every kept
    input width — d_model, each layer's ``n_head * head_dim`` and ``d_ff`` — must be a
    multiple of the block size. Each problem names the layer and widths that would work."""
    if not fmt.is_block:
        return []
    b = fmt.block_size

    def near(width: int) -> str:
        lo, hi = width // b * b, (width // b + 1) * b
        return f"{lo} or {hi}" if lo else f"{hi}"

    out = []
    if subnet.d_model % b:
        out.append(f"d_model={subnet.d_model} is not a multiple of {fmt.name}'s block size {b} (keep {near(subnet.d_model)})")
    for pos, layer in enumerate(subnet.layers):
        attn = subnet.n_head[pos] * head_dim
        if attn % b:
            out.append(f"layer {layer} keeps {subnet.n_head[pos]} heads x head_dim {head_dim} = {attn} attention channels, "
                       f"not a multiple of {b}")
        if subnet.d_ff[pos] % b:
            out.append(f"layer {layer} keeps d_ff={subnet.d_ff[pos]}, not a multiple of {b} (keep {near(subnet.d_ff[pos])})")
    return out


def check_blocks(fmt: QuantFormat, subnet: SubnetConfig, head_dim: int) -> None:
    """Raise one :class:`NasError` listing every width of ``subnet`` that ``fmt`` cannot store."""
    problems = block_problems(fmt, subnet, head_dim)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise NasError(f"{fmt.name} stores weight rows in blocks of {fmt.block_size}: {shown}. "
                       f"Choose such widths, or use bf16 or f32")


__all__ = ["QUANT_FORMATS", "VECTOR_BYTES", "QuantFormat", "block_problems", "check_blocks", "extreme_quants", "parse_quant"]
