"""nas.model.heap: freed memory kept for reuse on glibc, once per process, and an off switch."""

from __future__ import annotations

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
