"""Keep freed memory in the process heap (Linux, glibc).

A forward pass on the CPU allocates and frees large temporaries many times a second: the
activations of thousands of packed tokens per layer, blocks of logits over the vocabulary.
By default glibc serves every block above its mmap threshold (128 KiB, raised only by the
sizes it has seen freed) with fresh pages from the kernel and returns them when freed, so
each allocation pays a page fault per 4 KiB on first touch. Raising the mmap threshold and
the heap's trim threshold lets freed blocks be reused instead: on SmolLM2-135M this took
about a fifth off an evaluation on a 2-core CPU (``bench/eval_throughput.py``). The price is
that the process's resident memory stays near its peak rather than shrinking after it.

:func:`retain_freed_memory` applies it once per process; ``NAS_RETAIN_HEAP=0`` turns it off.
Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

ENV = "NAS_RETAIN_HEAP"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = (1 << 31) - 1  # never hand the top of the heap back to the kernel

_lock = threading.Lock()
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True when they are set."""
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        _applied = False
        if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
            log.debug("%s=0: freed memory is returned to the kernel as usual", ENV)
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc (macOS, musl without mallopt): nothing to tune
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        log.debug("freed memory kept in the heap for reuse: %s", _applied)
        return _applied


__all__ = ["ENV", "retain_freed_memory"]
