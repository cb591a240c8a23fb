"""Measured and predicted latency of sub-networks on one device.

* :func:`device_fingerprint` — a stable string naming the hardware, thread count, torch
  version and dtype; measured figures and latency tables are tagged with it.
* :func:`measure_latency` — prefill latency and decode throughput of the extracted dense
  model, median of repeats after warm-up.
* :class:`LatencyTable` — a per-device lookup table (HAT / Once-for-All style): each
  distinct layer variant of a search space is timed once, in a stack of identical
  blocks fed the same (batch, prompt_len, d_model) activations as in the real model, and
  the embedding + final norm + LM head once per ``d_model``. A sub-network's predicted
  prefill latency is the sum of its parts, mapped through a line
  ``scale * sum + offset`` fitted on a couple of whole extracted models (the
  calibration absorbs what isolated timings miss: the model's own per-call overhead and
  cache effects).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evaluators.cost import check_subnet, resolve_dtype
from evaluators.errors import EvaluatorError
from evaluators.types import Costs, CostValue
from nas.errors import NasError
from nas.model.config import LayerDims, SupernetConfig
from nas.model.directory import parse_dtype
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import ForwardContext, Supernet, rms_norm

log = logging.getLogger(__name__)

TABLE_FORMAT_VERSION = 1


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


@contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
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
def _quiet_gc() -> Iterator[None]:
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


def _clock(clock: str, dev: torch.device) -> Callable[[], float]:
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


def _check_clock(clock: str, threads: int) -> None:
    if clock == "process" and threads != 1:
        raise EvaluatorError(
            f"clock 'process' measures latency only with one thread (CPU time adds up over threads); "
            f"pass threads=1 or use clock='wall' (threads is {threads})"
        )


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _round_robin_ms(
    fns: Sequence[Callable[[], Any]], dev: torch.device, *, repeats: int, warmup: int, clock: str = "wall"
) -> list[list[float]]:
    """Time every ``fn`` ``repeats`` times after ``warmup`` runs, interleaved (one run of
    each per round), so that a burst of load from other processes hits all of them alike."""
    now = _clock(clock, dev)
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


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        minimum = 0 if name in ("warmup", "decode_tokens") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise EvaluatorError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ---------------------------------------------------------------- measured
def measure_latency(
    model: Supernet,
    subnet: SubnetConfig | None = None,
    *,
    prompt_len: int = 128,
    decode_tokens: int = 32,
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 2,
    dtype: str | torch.dtype = "bf16",
    threads: int | None = None,
    clock: str = "wall",
    seed: int = 0,
) -> Costs:
    """Prefill latency and decode throughput of ``subnet`` (None: the full model), measured
    on its extracted dense model (:meth:`Supernet.extract`) at ``dtype``.

    Each repeat runs a prefill of ``batch x prompt_len`` seeded random tokens into a fresh
    KV cache (``Supernet.forward``, logits for every position as scoring needs them),
    then ``decode_tokens`` greedy single-token steps with that cache. Reported values
    (method ``measured``): ``prefill_latency_ms`` (median), ``decode_latency_ms`` (median
    milliseconds per decode step) and ``decode_tokens_per_s`` (``batch`` tokens per step).
    ``threads`` sets torch's intra-op threads for the measurement only; ``clock`` is
    ``wall`` (default) or ``process`` (CPU time of the single thread, ``threads=1`` only:
    close to the idle-machine latency even on a CPU shared with other jobs).
    """
    if not isinstance(model, Supernet):
        raise EvaluatorError(f"measure_latency needs a Supernet, got {type(model).__name__}")
    _check_counts(prompt_len=prompt_len, decode_tokens=decode_tokens, batch=batch, repeats=repeats, warmup=warmup)
    name, _ = resolve_dtype(dtype)
    torch_dtype = parse_dtype(name)
    subnet = subnet or model.full_subnet()
    check_subnet(model.config, subnet)
    dev = model.lm_head_weight.device
    now = _clock(clock, dev)
    with _num_threads(threads) as n_threads:
        _check_clock(clock, n_threads)
        fingerprint = device_fingerprint(dev, name, threads=n_threads)
        with torch.inference_mode():
            dense = model.extract(subnet)
            if dense.lm_head_weight.dtype != torch_dtype:
                dense = dense.to(torch_dtype)
            dense.eval()
            gen = torch.Generator().manual_seed(seed)
            tokens = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=gen).to(dev)
            prefill, decode = [], []
            with _quiet_gc():
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
    prompt_len: int = 128,
    batch: int = 1,
    rounds: int = 3,
    repeats: int = 3,
    warmup: int = 1,
    dtype: str | torch.dtype = "bf16",
    threads: int | None = None,
    clock: str = "wall",
    seed: int = 0,
) -> list[float]:
    """Median prefill latency (ms) of each sub-network, measured with :func:`measure_latency`
    in ``rounds`` interleaved passes over all of them (``repeats`` runs each per pass), so
    that load from other processes spreads over all sub-networks alike."""
    _check_counts(rounds=rounds)
    samples: list[list[float]] = [[] for _ in subnets]
    for _ in range(rounds):
        for i, subnet in enumerate(subnets):
            c = measure_latency(
                model, subnet, prompt_len=prompt_len, decode_tokens=0, batch=batch, repeats=repeats,
                warmup=warmup, dtype=dtype, threads=threads, clock=clock, seed=seed,
            )
            samples[i].extend(c.context["prefill_ms_samples"])
    return [statistics.median(s) for s in samples]


# --------------------------------------------------------------- predicted
@dataclass(frozen=True, order=True)
class LayerVariant:
    """The sizes that decide one block's latency."""

    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int
    n_expert: int = 0
    top_k: int = 0

    @property
    def key(self) -> str:
        return f"d{self.d_model}.h{self.n_head}.kv{self.n_kv_head}.ff{self.d_ff}.e{self.n_expert}.k{self.top_k}"

    @property
    def dims(self) -> LayerDims:
        return LayerDims(self.n_head, self.n_kv_head, self.d_ff, self.n_expert, self.top_k)


def subnet_variants(config: SupernetConfig, subnet: SubnetConfig) -> list[LayerVariant]:
    """The layer variant of every kept layer of ``subnet``, in order."""
    out = []
    for pos in range(subnet.n_layer):
        d = subnet.layer_dims(pos, config.q_per_kv)
        out.append(LayerVariant(subnet.d_model, d.n_head, d.n_kv_head, d.d_ff, d.n_expert, d.top_k))
    return out


def space_variants(space: SearchSpace) -> list[LayerVariant]:
    """Every distinct layer variant any sub-network of ``space`` can contain."""
    q = space.config.q_per_kv
    found: set[LayerVariant] = set()
    for choices in space.layers:
        for d_model in space.d_model_choices:
            for h in choices.n_head:
                for f in choices.d_ff:
                    for e in choices.n_expert:
                        for k in choices.top_k:
                            found.add(LayerVariant(d_model, h, h // q, f, e, min(k, e)))
    return sorted(found)


def _stack_model(config: SupernetConfig, variant: LayerVariant, n: int, dtype: torch.dtype, dev: torch.device) -> Supernet:
    """``n`` random blocks of one variant (tiny vocabulary: only the blocks are timed)."""
    dims = variant.dims
    cfg = config.replace(
        vocab_size=8, d_model=variant.d_model, n_layer=n, n_head=dims.n_head, n_kv_head=dims.n_kv_head,
        d_ff=dims.d_ff, n_expert=dims.n_expert, top_k=dims.top_k, moe_layers=None, layer_dims=(dims,) * n,
        head_dim=config.head_dim, tie_embeddings=True,
    )
    return Supernet(cfg).to(device=dev, dtype=dtype).eval()


def _blocks_per_stack(variant: LayerVariant, config: SupernetConfig, width: int, target_bytes: int, max_blocks: int) -> int:
    """Enough distinct blocks that their weights do not all sit in cache (a real model's
    layers stream from memory): about ``target_bytes`` of weights, 1 to ``max_blocks``."""
    D, hd, d = variant.d_model, config.head_dim, variant
    per_block = D * hd * (2 * d.n_head + 2 * d.n_kv_head) + 3 * D * d.d_ff * max(1, d.n_expert)
    return max(1, min(max_blocks, math.ceil(target_bytes / max(1, per_block * width))))


def _run_blocks(blocks: Iterable[torch.nn.Module], dims: LayerDims, x: torch.Tensor, ctx: ForwardContext) -> None:
    """Prefill through a stack of blocks, as ``Supernet.run`` does (a fresh cache only
    stores keys and values, so none is passed)."""
    h = x
    for pos, block in enumerate(blocks):
        h = block(h, dims=dims, ctx=ctx, position=pos)


def _fit_line(raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(scale, offset) of ``measured ~ scale * raw + offset``; offset only for one point or
    when the points do not spread."""
    if len(raw) == 1 or max(raw) - min(raw) < 1e-6 * max(1.0, max(raw)):
        return 1.0, statistics.median(m - r for m, r in zip(measured, raw))
    mr, mm = statistics.fmean(raw), statistics.fmean(measured)
    sxx = sum((r - mr) ** 2 for r in raw)
    scale = sum((r - mr) * (m - mm) for r, m in zip(raw, measured)) / sxx
    return scale, mm - scale * mr


@dataclass(frozen=True)
class TableOptions:
    """How :meth:`LatencyTable.build` times things.

    ``repeats``/``warmup`` runs per layer variant (and per calibration model and round);
    each variant runs as a stack of about ``stack_bytes`` of distinct block weights (1 to
    ``max_blocks`` blocks, so that, as in a real model, weights stream from memory rather
    than sit in cache), all stacks together at most ``total_bytes``; calibration adds
    ``calibration_samples`` seeded random sub-networks to the largest and smallest and
    measures them in ``calibration_rounds`` interleaved passes.
    """

    repeats: int = 5
    warmup: int = 2
    calibration_samples: int = 2
    calibration_rounds: int = 2
    stack_bytes: int = 48 << 20
    max_blocks: int = 8
    total_bytes: int = 1 << 30
    seed: int = 0


@dataclass
class LatencyTable:
    """Per-device prefill latency lookup table of one supernet config.

    ``layer_ms`` maps :attr:`LayerVariant.key` to milliseconds per block; ``head_ms`` maps
    ``d_model`` to the embedding + RoPE tables + final norm + LM head. :meth:`predict`
    returns ``scale * (head_ms[d] + sum layer_ms) + offset_ms``.
    """

    fingerprint: str
    config: SupernetConfig
    prompt_len: int
    batch: int
    dtype: str
    threads: int
    layer_ms: dict[str, float]
    head_ms: dict[int, float]
    scale: float = 1.0
    offset_ms: float = 0.0
    calibration: list[dict[str, Any]] = field(default_factory=list)
    clock: str = "wall"
    build_s: float = 0.0

    # ----------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        model: Supernet,
        space: SearchSpace | None = None,
        *,
        prompt_len: int = 128,
        batch: int = 1,
        dtype: str | torch.dtype = "bf16",
        threads: int | None = None,
        clock: str = "wall",
        calibrate_on: Iterable[SubnetConfig] | None = None,
        options: TableOptions | None = None,
    ) -> LatencyTable:
        """Time every layer variant of ``space`` (default: the model's default space) once,
        plus the head per ``d_model``, then calibrate on whole extracted models
        (``calibrate_on``, default: the space's largest and smallest sub-networks and
        ``options.calibration_samples`` seeded random ones — mixed layer sizes run a
        little slower than the sum of homogeneous stacks; pass ``[]`` to skip).

        Each variant runs as a stack of distinct random blocks (see :class:`TableOptions`)
        on seeded ``(batch, prompt_len, d_model)`` activations — the sizes, code path and
        threads of the real prefill; the median run time divided by the stack depth is
        its per-block latency. All stacks stay in memory and are timed round-robin. ``clock``:
        ``wall`` or ``process`` (CPU time; with ``threads=1`` it stays meaningful on a
        CPU shared with other jobs); calibration and predictions use the same clock.
        """
        if not isinstance(model, Supernet):
            raise EvaluatorError(f"LatencyTable.build needs a Supernet, got {type(model).__name__}")
        opts = options or TableOptions()
        _check_counts(prompt_len=prompt_len, batch=batch, repeats=opts.repeats, warmup=opts.warmup)
        name, width = resolve_dtype(dtype)
        torch_dtype = parse_dtype(name)
        config = model.config
        space = space or SearchSpace.default(config, model.layer_rank)
        if space.config != config:
            raise EvaluatorError("the search space belongs to another supernet config; pass the model's own space")
        dev = model.lm_head_weight.device
        _clock(clock, dev)  # refuse a bad clock before any work
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(opts.seed)
        variants = space_variants(space)
        budget = min(opts.stack_bytes, max(1, opts.total_bytes // len(variants)))
        with _num_threads(threads) as n_threads, torch.inference_mode(), _quiet_gc():
            _check_clock(clock, n_threads)
            fingerprint = device_fingerprint(dev, name, threads=n_threads)
            positions = torch.arange(prompt_len, device=dev)
            runners: list[Callable[[], Any]] = []
            depths: list[int] = []
            for variant in variants:
                n = _blocks_per_stack(variant, config, width, budget, opts.max_blocks)
                stack = _stack_model(config, variant, n, torch_dtype, dev)
                x = torch.randn(batch, prompt_len, variant.d_model, generator=gen).to(dev, torch_dtype)
                cos, sin = stack.rope(positions, torch_dtype)
                runners.append(partial(_run_blocks, stack.layers, variant.dims, x, ForwardContext(cos=cos, sin=sin)))
                depths.append(n)
            for d_model in space.d_model_choices:
                runners.append(cls._head_runner(model, d_model, prompt_len, batch, torch_dtype, dev, gen))
            samples = _round_robin_ms(runners, dev, repeats=opts.repeats, warmup=opts.warmup, clock=clock)
            del runners
        medians = [statistics.median(s) for s in samples]
        layer_ms = {v.key: m / n for v, m, n in zip(variants, medians, depths)}
        head_ms = dict(zip(space.d_model_choices, medians[len(variants):]))
        table = cls(
            fingerprint=fingerprint, config=config, prompt_len=prompt_len, batch=batch, dtype=name,
            threads=n_threads, layer_ms=layer_ms, head_ms=head_ms, clock=clock,
        )
        if calibrate_on is not None:
            targets = list(calibrate_on)
        else:
            targets = [space.largest(), space.smallest()]
            # a seed stream of its own, so that calibration never reuses a caller's samples
            n_extra = opts.calibration_samples
            extra = random_subnets(space, n_extra + 2, seed=opts.seed + 7919) if n_extra else []
            targets += [s for s in extra if s not in targets][:n_extra]
        if targets:
            table.calibrate(
                model, targets, repeats=opts.repeats, warmup=opts.warmup, rounds=opts.calibration_rounds, seed=opts.seed
            )
        table.build_s = time.perf_counter() - start
        log.info("latency table: %d layer variants, %d calibration models, %.1f s", len(layer_ms), len(targets), table.build_s)
        return table

    @staticmethod
    def _head_runner(model: Supernet, d_model: int, prompt_len: int, batch: int, dtype: torch.dtype,
                     dev: torch.device, gen: torch.Generator) -> Callable[[], Any]:
        """Embedding lookup, RoPE tables, final norm and LM head (what a forward does outside its blocks)."""
        cfg = model.config
        weight = torch.randn(cfg.vocab_size, d_model, generator=gen).to(dev, dtype) * 0.02
        norm = torch.ones(d_model, device=dev, dtype=dtype)
        tokens = torch.randint(0, cfg.vocab_size, (batch, prompt_len), generator=gen).to(dev)
        positions = torch.arange(prompt_len, device=dev)

        def run_head() -> None:
            x = F.embedding(tokens, weight)  # (B, T, D)
            model.rope(positions, dtype)
            F.linear(rms_norm(x, norm, cfg.norm_eps), weight)  # (B, T, V)

        return run_head

    def calibrate(
        self, model: Supernet, subnets: Sequence[SubnetConfig], *, repeats: int = 5, warmup: int = 2,
        rounds: int = 2, seed: int = 0,
    ) -> None:
        """Fit ``scale`` and ``offset_ms`` so that predictions match whole extracted models
        measured with :func:`measure_prefill_ms` (offset only for a single model)."""
        if model.config != self.config:
            raise EvaluatorError("calibration model has another supernet config than the latency table")
        if not subnets:
            raise EvaluatorError("calibrate needs at least one sub-network")
        measured = measure_prefill_ms(
            model, subnets, prompt_len=self.prompt_len, batch=self.batch, rounds=rounds, repeats=repeats,
            warmup=warmup, dtype=self.dtype, threads=self.threads, clock=self.clock, seed=seed,
        )
        raw = [self.raw_ms(s) for s in subnets]
        self.scale, self.offset_ms = _fit_line(raw, measured)
        self.calibration = [
            {"subnet": s.to_json(), "raw_ms": round(r, 4), "measured_ms": round(m, 4)}
            for s, r, m in zip(subnets, raw, measured)
        ]

    # --------------------------------------------------------- predicting
    def raw_ms(self, subnet: SubnetConfig) -> float:
        """Uncalibrated sum: head plus every kept block."""
        check_subnet(self.config, subnet)
        if subnet.d_model not in self.head_ms:
            raise EvaluatorError(
                f"latency table has no entry for d_model={subnet.d_model} (has {sorted(self.head_ms)}); "
                "rebuild it with a search space whose d_model_choices include it"
            )
        total = self.head_ms[subnet.d_model]
        for variant in subnet_variants(self.config, subnet):
            try:
                total += self.layer_ms[variant.key]
            except KeyError:
                raise EvaluatorError(
                    f"latency table has no entry for layer variant {variant.key}; rebuild it with a search "
                    "space that contains this sub-network"
                ) from None
        return total

    def predict(self, subnet: SubnetConfig) -> float:
        """Predicted prefill latency in ms of ``batch x prompt_len`` tokens through ``subnet``."""
        return self.scale * self.raw_ms(subnet) + self.offset_ms

    # ------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
            "prompt_len": self.prompt_len,
            "batch": self.batch,
            "dtype": self.dtype,
            "threads": self.threads,
            "layer_ms": dict(sorted(self.layer_ms.items())),
            "head_ms": {str(k): v for k, v in sorted(self.head_ms.items())},
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "calibration": self.calibration,
            "clock": self.clock,
            "build_s": self.build_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        try:
            return cls(
                fingerprint=str(data["fingerprint"]),
                config=SupernetConfig.from_dict(data["config"]),
                prompt_len=int(data["prompt_len"]),
                batch=int(data["batch"]),
                dtype=resolve_dtype(data["dtype"])[0],
                threads=int(data["threads"]),
                layer_ms={str(k): float(v) for k, v in data["layer_ms"].items()},
                head_ms={int(k): float(v) for k, v in data["head_ms"].items()},
                scale=float(data.get("scale", 1.0)),
                offset_ms=float(data.get("offset_ms", 0.0)),
                calibration=list(data.get("calibration", [])),
                clock=str(data.get("clock", "wall")),
                build_s=float(data.get("build_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError, NasError) as exc:
            raise EvaluatorError(f"latency table entry is malformed ({exc!r}); rebuild it with LatencyTable.build") from None

    def save(self, path: str | Path) -> None:
        """Store under this table's device fingerprint in the JSON file ``path`` (tables of
        other devices already in the file are kept)."""
        path = Path(path)
        tables = _read_tables(path) if path.exists() else {}
        tables[self.fingerprint] = self.to_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format_version": TABLE_FORMAT_VERSION, "tables": tables}, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None, *, config: SupernetConfig | None = None) -> LatencyTable:
        """The table for ``fingerprint`` (default: this machine at bf16 and torch's current
        thread count) from ``path``; with ``config``, refuse a table of another supernet."""
        path = Path(path)
        if not path.is_file():
            raise EvaluatorError(f"latency table file {path} does not exist; build one with LatencyTable.build(...).save(path)")
        tables = _read_tables(path)
        key = fingerprint or device_fingerprint()
        if key not in tables:
            raise EvaluatorError(
                f"latency table file {path} has no table for device {key!r}; it has {sorted(tables)}. "
                "Build one on this device with LatencyTable.build"
            )
        table = cls.from_dict(tables[key])
        if config is not None and table.config != config:
            raise EvaluatorError(f"latency table in {path} for {key!r} was built for another supernet config; rebuild it")
        return table


def _read_tables(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluatorError(f"latency table file {path} is not readable JSON ({exc}); delete it and rebuild") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise EvaluatorError(f"latency table file {path} has no 'tables' mapping; delete it and rebuild")
    if data.get("format_version", 0) > TABLE_FORMAT_VERSION:
        raise EvaluatorError(f"latency table file {path} was written by a newer version of this tool; upgrade")
    return data["tables"]


def random_subnets(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetConfig]:
    """``n`` distinct seeded samples of ``space`` (fewer if the space is smaller)."""
    rng = random.Random(seed)
    seen: dict[str, SubnetConfig] = {}
    for _ in range(n * 20):
        if len(seen) == n:
            break
        s = space.sample(rng)
        seen.setdefault(s.hash, s)
    return list(seen.values())


__all__ = [
    "LatencyTable", "LayerVariant", "TableOptions", "device_fingerprint", "measure_latency", "measure_prefill_ms", "random_subnets",
    "space_variants", "subnet_variants",
]
