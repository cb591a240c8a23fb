"""``dtype: auto``: the dtype a device computes fastest, bf16 where it is native, else fp32.

A CPU without bf16 instructions (AVX2 only, say) runs bf16 matmuls through a slow emulated
path, several times slower than fp32 (``python bench/dtype_speed.py`` measures both side by
side, and with ``--supernet`` one evaluation in each; see the README's results table).
A CPU with AVX512-BF16 or AMX runs bf16 several times faster than fp32. The choice reads the
CPU's feature flags rather than timing a matmul, so a busy machine never flips it. (Kept
apart from :mod:`nas.model.dtypes`, which stays importable without torch.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from nas.model.dtypes import dtype_name

#: CPU feature flags (``/proc/cpuinfo``) that give native bf16 matmuls: x86 AVX512-BF16 or AMX,
#: Arm's BF16 extension.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (x86 ``flags``, Arm ``Features``);
    empty where the file cannot be read (then nothing is assumed native)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=8)
def fast_dtype(device: str = "cpu") -> tuple[str, str]:
    """The dtype ``auto`` means on ``device``, and why: ``("bf16", reason)`` where bf16 is
    native (a CUDA device that supports it; a CPU with one of :data:`BF16_CPU_FLAGS`),
    ``("fp32", reason)`` elsewhere. ``device="auto"``: cuda where torch sees a GPU, else cpu."""
    kind = str(device).split(":")[0].lower()
    if kind == "auto":
        kind = device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16", f"{device} supports bf16"
        return "fp32", f"{device} does not support bf16"
    if kind != "cpu":
        return "fp32", f"bf16 support of {device} is unknown"
    native = sorted(BF16_CPU_FLAGS & cpu_flags())
    if native:
        return "bf16", f"this CPU has {', '.join(native)}"
    return "fp32", "this CPU has no bf16 instructions (no avx512_bf16/amx_bf16): bf16 would run several times slower"


def resolve_dtype(dtype: Any, device: str = "cpu") -> str:
    """The canonical name of ``dtype``, with ``auto`` resolved by :func:`fast_dtype` on ``device``."""
    if str(dtype).lower() == "auto":
        return fast_dtype(device)[0]
    return dtype_name(dtype)


def torch_dtype(dtype: Any, device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype of ``dtype`` (a name, ``auto`` or a torch dtype) on ``device``."""
    from nas.model.directory import parse_dtype  # deferred: the directory module loads the model code

    return parse_dtype(resolve_dtype(dtype, torch.device(device).type))


__all__ = ["BF16_CPU_FLAGS", "cpu_flags", "fast_dtype", "resolve_dtype", "torch_dtype"]
