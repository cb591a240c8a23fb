"""Whether scoring runs fused elementwise kernels: a block's norms and RoPE compiled by
TorchInductor (:func:`nas.model.layers.compiled`; a forward context with ``fused`` set uses them).

In eager PyTorch an RMSNorm is eight kernels (a copy to fp32, a square, a mean, an add, an
rsqrt, a product, a copy back, the weight's product), each a pass over the activations, and
RoPE on q and k is five more per tensor. On a CPU that runs bf16 matmuls fast (AMX, or
``avx512_bf16``) those passes over a packed round of thousands of tokens are a large part of
a block's time. Compiled, each becomes one loop: ``python bench/eval_throughput.py
--threads 2 --parts throughput,study`` on a 2-core Xeon with AMX scored five SmolLM2
sub-networks (100 documents per task of hellaswag, arc_easy and piqa) in 6.16 s each on
average against 7.06 s eager, alternated on the same candidates (``fused_speedup`` 1.15).

The compiled kernels compute inside in fp32 and round once at the end, so many of their bf16
results differ from eager ones in the last bit and close calls can fall the other way: scores in
``fused`` mode are cached under their own key (``kernels`` in
:func:`evaluators.types.scoring_settings`), never mixed with eager ones.

Modes (``ScoringOptions.kernels``, ``$NAS_KERNELS``): ``eager`` never compiles; ``fused``
insists (an error where Inductor cannot build, e.g. without a C++ compiler); ``auto`` (the
default) fuses bf16 scoring on a CPU when a probe compile works, else scores eagerly with one
warning. fp32 stays eager under ``auto``: it is the parity reference against lm-eval's HFLM.
The first compile in a process takes seconds (Inductor's start and a C++ build; later
processes reuse its on-disk cache); it happens once per kernel, with dynamic shapes.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from nas.errors import NasError
from nas.model.layers import add_rms_norm, compiled

log = logging.getLogger(__name__)

KERNEL_MODES = ("auto", "eager", "fused")
ENV = "NAS_KERNELS"

_lock = threading.Lock()
_probe: tuple[bool, str] | None = None


def probe() -> tuple[bool, str]:
    """(whether the fused kernels build and agree with eager ones here, why not), once per process."""
    global _probe
    with _lock:
        if _probe is not None:
            return _probe
    try:
        gen = torch.Generator().manual_seed(0)
        x, h = (torch.randn(10, 16, generator=gen).to(torch.bfloat16) for _ in range(2))  # rows, as blocks call it
        w = torch.randn(16, generator=gen).to(torch.bfloat16)
        with torch.inference_mode():
            got = compiled(add_rms_norm)(x, h, w, 1e-6)[1].float()
            want = add_rms_norm(x, h, w, 1e-6)[1].float()
        ok = bool(torch.allclose(got, want, rtol=2e-2, atol=2e-2))
        result = (ok, "" if ok else "the compiled RMSNorm disagrees with the eager one")
    except Exception as exc:  # Inductor's failures (no compiler, no headers) have many types
        result = (False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    with _lock:
        _probe = result
    return result


def resolve_kernels(mode: str | None, dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether scoring in ``dtype`` on ``device`` runs the fused kernels under ``mode``
    (None: ``$NAS_KERNELS``, else ``auto``)."""
    mode = (mode or os.environ.get(ENV, "").strip() or "auto").lower()
    if mode not in KERNEL_MODES:
        raise NasError(f"kernels={mode!r} is not one of {', '.join(KERNEL_MODES)} (set it in the scoring options or {ENV})")
    if mode == "eager" or (mode == "auto" and (dtype != torch.bfloat16 or torch.device(device).type != "cpu")):
        return False
    ok, why = probe()
    if ok:
        return True
    if mode == "fused":
        raise NasError(f"kernels=fused: TorchInductor cannot build the fused kernels here ({why}); "
                       f"install a C++ compiler (e.g. apt install g++) or score with kernels=eager")
    log.warning("fused kernels unavailable (%s): scoring with eager kernels, about 15%% slower in bf16 "
                "(set %s=eager to silence this)", why, ENV)
    return False


__all__ = ["ENV", "KERNEL_MODES", "probe", "resolve_kernels"]
