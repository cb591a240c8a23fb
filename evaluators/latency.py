"""Measured latency of sub-networks on one device, and the timing primitives it shares
with the per-device lookup table (:mod:`evaluators.latency_table`).

* :func:`device_fingerprint` — a stable string naming the hardware, thread count, torch
  version and dtype; measured figures and latency tables are tagged with it.
* :class:`LatencySetup` — what a latency is measured on (prompt length, batch, dtype,
  threads, clock).
* :func:`measure_latency` — prefill latency and decode throughput of the extracted dense
  model, median of repeats after warm-up; :func:`measure_prefill_ms` — prefill latency
  of several sub-networks in interleaved rounds.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from evaluators.cost import check_subnet, resolve_dtype
from evaluators.errors import EvaluatorError
from evaluators.types import Costs, CostValue
from nas.model.directory import parse_dtype
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet


# ------------------------------------------------------------------ device
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EvaluatorError(f"device {device!r} is not a torch device; use cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluatorError(f"device {device!r} asked for but CUDA is not available; use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise EvaluatorError(f"device {device!r} is not supported; use cpu or cuda[:N]")
    return dev


def device_fingerprint(device: str | torch.device = "cpu", dtype: str | torch.dtype = "bf16", *, threads: int | None = None) -> str:
    """A stable string naming where and how a latency was measured, e.g.
    ``cpu:AMD EPYC|cores=2|threads=2|torch=2.13.0+cpu|bf16``.

    CPU: model name (from /proc/cpuinfo, else :mod:`platform`), logical core count and
    intra-op threads (``threads``, default torch's current setting). CUDA: the GPU name
    and CUDA version.
    """
    dev = _device(device)
    name, _ = resolve_dtype(dtype)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        head = f"cuda:{torch.cuda.get_device_name(index)}|cuda={torch.version.cuda}"
    else:
        n = threads if threads is not None else torch.get_num_threads()
        head = f"cpu:{_cpu_model()}|cores={os.cpu_count()}|threads={n}"
    return f"{head}|torch={torch.__version__}|{name}"


# ------------------------------------------------- timing (also used by latency_table)
@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` intra-op threads, restoring the previous setting afterwards."""
    old = torch.get_num_threads()
    if threads is None:
        yield old
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise EvaluatorError(f"threads must be a positive integer or None, got {threads!r}")
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(old)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No garbage collection pauses inside a timing loop (restored afterwards)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


CLOCKS = ("wall", "process")


def timer(clock: str, dev: torch.device) -> Callable[[], float]:
    """Seconds on the chosen clock: ``wall`` (elapsed time, the latency a user sees) or
    ``process`` (CPU time of this process; with one thread it is close to the idle-machine
    latency even when other processes compete for the cores)."""
    if clock == "wall":
        return time.perf_counter
    if clock == "process":
        if dev.type != "cpu":
            raise EvaluatorError(f"clock 'process' only measures CPU work; use clock='wall' on {dev}")
        return time.process_time
    raise EvaluatorError(f"clock {clock!r} is not one of {list(CLOCKS)}")


def check_clock(clock: str, threads: int) -> None:
    if clock == "process" and threads != 1:
        raise EvaluatorError(
            f"clock 'process' measures latency only with one thread (CPU time adds up over threads); "
            f"pass threads=1 or use clock='wall' (threads is {threads})"
        )


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def round_robin_ms(
    fns: Sequence[Callable[[], Any]], dev: torch.device, *, repeats: int, warmup: int, clock: str = "wall"
) -> list[list[float]]:
    """Time every ``fn`` ``repeats`` times after ``warmup`` runs, interleaved (one run of
    each per round), so that a burst of load from other processes hits all of them alike."""
    now = timer(clock, dev)
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + repeats):
        for i, fn in enumerate(fns):
            _sync(dev)
            t0 = now()
            fn()
            _sync(dev)
            if r >= warmup:
                samples[i].append((now() - t0) * 1e3)
    return samples


def check_counts(**counts: int) -> None:
    for name, value in counts.items():
        minimum = 0 if name in ("warmup", "decode_tokens") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise EvaluatorError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ------------------------------------------------------------------ setup
@dataclass(frozen=True, kw_only=True)
class LatencySetup:
    """What a latency is measured on: ``batch x prompt_len`` tokens at ``dtype``
    (``bf16`` or ``fp32``), with ``threads`` intra-op threads (None: torch's current
    setting), timed on ``clock`` (``wall``: elapsed time; ``process``: CPU time of this
    process, ``threads=1`` only — close to the idle-machine latency even on a CPU shared
    with other jobs). Shared by :func:`measure_latency`, :func:`measure_prefill_ms` and
    :meth:`evaluators.latency_table.LatencyTable.build` (whose tables record it)."""

    prompt_len: int = 128
    batch: int = 1
    dtype: str | torch.dtype = "bf16"
    threads: int | None = None
    clock: str = "wall"


# ---------------------------------------------------------------- measured
def measure_latency(
    model: Supernet,
    subnet: SubnetConfig | None = None,
    *,
    setup: LatencySetup | None = None,
    decode_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    seed: int = 0,
    **settings: Any,
) -> Costs:
    """Prefill latency and decode throughput of ``subnet`` (None: the full model), measured
    on its extracted dense model (:meth:`Supernet.extract`) at ``setup.dtype``.

    ``setup`` (default :class:`LatencySetup`) says on what and how; keyword ``settings``
    are fields of :class:`LatencySetup` that override those of ``setup``
    (``prompt_len=16, threads=1``; an unknown name is a ``TypeError``). Each of
    ``warmup + repeats`` runs does a prefill of ``batch x prompt_len`` random tokens
    (seeded by ``seed``) into a fresh KV cache (``Supernet.forward``, logits for every
    position as scoring needs them), then ``decode_tokens`` greedy single-token steps with
    that cache. Reported values (method ``measured``): ``prefill_latency_ms`` (median),
    ``decode_latency_ms`` (median milliseconds per decode step) and
    ``decode_tokens_per_s`` (``batch`` tokens per step). ``threads`` is set for the
    measurement only.
    """
    setup = replace(setup if setup is not None else LatencySetup(), **settings)  # unknown names: TypeError
    prompt_len, batch, clock = setup.prompt_len, setup.batch, setup.clock
    if not isinstance(model, Supernet):
        raise EvaluatorError(f"measure_latency needs a Supernet, got {type(model).__name__}")
    check_counts(prompt_len=prompt_len, decode_tokens=decode_tokens, batch=batch, repeats=repeats, warmup=warmup)
    name, _ = resolve_dtype(setup.dtype)
    torch_dtype = parse_dtype(name)
    subnet = subnet or model.full_subnet()
    check_subnet(model.config, subnet)
    dev = model.lm_head_weight.device
    now = timer(clock, dev)
    with num_threads(setup.threads) as n_threads:
        check_clock(clock, n_threads)
        fingerprint = device_fingerprint(dev, name, threads=n_threads)
        with torch.inference_mode():
            dense = model.extract(subnet)
            if dense.lm_head_weight.dtype != torch_dtype:
                dense = dense.to(torch_dtype)
            dense.eval()
            gen = torch.Generator().manual_seed(seed)
            tokens = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=gen).to(dev)
            prefill, decode = [], []
            with quiet_gc():
                for i in range(warmup + repeats):
                    cache = dense.new_cache()
                    _sync(dev)
                    t0 = now()
                    logits = dense(tokens, cache=cache)
                    _sync(dev)
                    t1 = now()
                    nxt = logits[:, -1:].argmax(-1)  # (B, 1)
                    for _ in range(decode_tokens):
                        nxt = dense(nxt, cache=cache)[:, -1:].argmax(-1)
                    _sync(dev)
                    t2 = now()
                    if i >= warmup:
                        prefill.append((t1 - t0) * 1e3)
                        decode.append((t2 - t1) * 1e3)
            del dense
    note = f"median of {repeats} after {warmup} warm-up, extracted dense model"
    values = {
        "prefill_latency_ms": CostValue(statistics.median(prefill), "measured", "ms", f"{batch}x{prompt_len} tokens; {note}"),
    }
    if decode_tokens:
        step_ms = statistics.median(decode) / decode_tokens
        values["decode_latency_ms"] = CostValue(step_ms, "measured", "ms", f"per step after a {prompt_len}-token prompt; {note}")
        values["decode_tokens_per_s"] = CostValue(batch * 1e3 / step_ms, "measured", "tokens/s", f"batch {batch}; {note}")
    context = {
        "prompt_len": prompt_len, "decode_tokens": decode_tokens, "batch": batch, "repeats": repeats,
        "warmup": warmup, "dtype": name, "threads": n_threads, "clock": clock,
        "prefill_ms_samples": [round(v, 4) for v in prefill],
        "decode_ms_samples": [round(v, 4) for v in decode],
    }
    return Costs(values=values, device=fingerprint, context=context)


def measure_prefill_ms(
    model: Supernet,
    subnets: Sequence[SubnetConfig],
    *,
    setup: LatencySetup | None = None,
    rounds: int = 3,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    **settings: Any,
) -> list[float]:
    """Median prefill latency (ms) of each sub-network, measured with :func:`measure_latency`
    (same ``setup``, ``settings`` and ``seed``) in ``rounds`` interleaved passes over all
    of them (``repeats`` runs each per pass), so that load from other processes spreads
    over all sub-networks alike."""
    setup = replace(setup if setup is not None else LatencySetup(), **settings)  # unknown names: TypeError
    check_counts(rounds=rounds)
    samples: list[list[float]] = [[] for _ in subnets]
    for _ in range(rounds):
        for i, subnet in enumerate(subnets):
            c = measure_latency(model, subnet, setup=setup, decode_tokens=0, repeats=repeats, warmup=warmup, seed=seed)
            samples[i].extend(c.context["prefill_ms_samples"])
    return [statistics.median(s) for s in samples]


__all__ = ["CLOCKS", "LatencySetup", "device_fingerprint", "measure_latency", "measure_prefill_ms"]
