"""Keep freed memory in the process heap (Linux, glibc).

A forward pass on the CPU allocates and frees large temporaries many times a second: the
activations of thousands of packed tokens per layer, blocks of logits over the vocabulary.
By default glibc serves every block above its mmap threshold (128 KiB, raised only by the
sizes it has seen freed) with fresh pages from the kernel and returns them when freed, so
each allocation pays a page fault per 4 KiB on first touch. Raising the mmap threshold and
turning off the heap's trimming lets freed blocks be reused instead: on SmolLM2-135M this took
about a fifth off an evaluation on a 2-core CPU (``bench/eval_throughput.py``). The price is
that the process's resident memory stays at its peak rather than shrinking after it.

Trimming is off altogether, not only raised: in a virtual machine whose balloon reports free
pages to the host (Firecracker's, as on our 2-core machines), a page the heap gives back is
soon discarded by the host, and touching it again costs a host fault: there, 5 GiB grown, freed
and grown again 6 s later took 8.5-11.0 s the second time with the old 2 GiB trim threshold,
8.8-9.6 s with glibc's defaults, 0.2 s with trimming off (``bench/heap_refault.py``, two
runs on a quiet 2-core AVX2-only EPYC).

:func:`retain_freed_memory` applies it once per process; ``NAS_RETAIN_HEAP=0`` turns it off.
Elsewhere (not glibc) it does nothing. :func:`warm_heap` faults a given size of heap in ahead
of a timed run (benchmarks), so that a run's first growth to its peak is not in its timing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

ENV = "NAS_RETAIN_HEAP"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = -1  # never hand the top of the heap back to the kernel (mallopt(3): -1 turns trimming off)
WARM_CHUNK = 64 << 20  # below MMAP_THRESHOLD: served from the heap, kept there when freed

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


def grow_heap(nbytes: int) -> float:
    """Allocate ``nbytes`` in :data:`WARM_CHUNK` blocks, touching every page, then free them
    (kept in the heap only where :func:`retain_freed_memory` applies). Seconds it took."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = (ctypes.c_void_p,), None
    start = time.perf_counter()
    blocks = []
    try:
        for _ in range(-(-nbytes // WARM_CHUNK)):
            block = libc.malloc(WARM_CHUNK)
            if not block:
                break  # out of memory: what was grown is kept
            ctypes.memset(block, 0, WARM_CHUNK)
            blocks.append(block)
    finally:
        for block in blocks:
            libc.free(block)
    return time.perf_counter() - start


def warm_heap(nbytes: int) -> float:
    """Grow the heap by ``nbytes`` now, touching every page, and free it again (kept, as
    :func:`retain_freed_memory` is applied first): later allocations up to that size reuse
    pages already faulted in. Seconds it took; 0.0, doing nothing, where freed memory is not
    retained (it would go straight back to the kernel)."""
    if nbytes <= 0 or not retain_freed_memory():
        return 0.0
    return grow_heap(nbytes)


__all__ = ["ENV", "grow_heap", "retain_freed_memory", "warm_heap"]
