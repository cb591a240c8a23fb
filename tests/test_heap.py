"""nas.model.heap: freed memory kept for reuse on glibc, once per process, and an off switch."""

from __future__ import annotations

import ctypes
import platform

import pytest

from nas.model import heap


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_applied", None)


def test_off_switch_leaves_the_allocator_alone(fresh_state, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.ENV, "0")
    assert heap.retain_freed_memory() is False
    monkeypatch.setenv(heap.ENV, "1")
    assert heap.retain_freed_memory() is False  # decided once per process


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_applied_once_on_glibc(fresh_state, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heap.ENV, raising=False)
    assert heap.retain_freed_memory() is True
    assert heap.retain_freed_memory() is True and heap._applied is True


def test_warm_heap_does_nothing_without_retention(fresh_state, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.ENV, "0")
    assert heap.warm_heap(64 << 20) == 0.0


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_warm_heap_keeps_what_it_grew(fresh_state, monkeypatch: pytest.MonkeyPatch) -> None:
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    monkeypatch.delenv(heap.ENV, raising=False)
    heap.retain_freed_memory()
    size = libc.mallinfo2().fordblks + 3 * heap.WARM_CHUNK  # more than the heap holds free now: it must grow
    assert heap.warm_heap(size) > 0
    assert libc.mallinfo2().fordblks >= size  # what it grew was freed into the heap, not handed back to the kernel
