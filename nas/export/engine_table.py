"""Building the per-device engine latency table (:class:`evaluators.engine_table.EngineLatencyTable`)
from llama.cpp's own timings: ``nas supernet engine-table SUPERNET_DIR``.

For every weight format and every layer variant of the search space (``d_model``, query
heads, KV heads, ``d_ff``), a *stack* — a uniform sub-network of the supernet with
``depth`` layers of that variant — is written as a GGUF (:func:`nas.export.gguf.write_gguf`,
real weights and tokenizer) and timed in llama-cpp-python: prefill of ``prompt_len``
tokens, 1 thread, process-CPU clock by default (close to the idle-machine latency on a
CPU shared with other jobs), all files of a format timed round-robin so that load hits
them alike. Each variant is timed at ``depth`` and at ``depth // 2`` blocks (not at one
block, whose weights may sit in cache unlike a real model's); the head (embedding, final norm, LM head for the last
position) is where the line through the two meets depth 0, the median over the variants
of a ``d_model``:

    head      = median over v of  T_half(v) - half * (T_depth(v) - T_half(v)) / (depth - half)
    block(v)  = (T_depth(v) - head) / depth

This head is an intercept: on SmolLM2 at q4_0 it came out slightly negative (-0.3 to -1 ms
against ~3-5 ms per block in three builds), as a block's time still grows a little with
depth; the calibration line absorbs it. Then whole sub-networks (the space's largest and smallest and a few seeded random ones)
are exported and timed in the same rounds, and a line per format maps the table's sums to
their measured latency; every calibration model's leave-one-out prediction is kept, so
the table carries its own error (``loo_mape``).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluators.engine_table import EngineLatencyTable, engine_fingerprint, variant_key
from evaluators.latency_table import random_subnets
from nas.errors import NasError
from nas.export.engine import prefill_round_robin, require_llama_cpp
from nas.export.gguf import gguf_problem, write_gguf
from nas.model.directory import LoadedSupernet, load_supernet
from nas.model.precision import resolve_dtype
from nas.model.quant import parse_quant
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.search.quant import check_quant_space
from nas.search.spec import load_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineTableOptions:
    """How :func:`build_engine_table` times: ``prompt_len`` prefill tokens, ``repeats`` runs
    after ``warmup`` per file, ``threads`` llama.cpp threads, ``clock`` (``process`` needs
    ``threads=1``), stacks of ``depth`` blocks, ``calibration`` whole models per format (the
    largest, the smallest and seeded random ones; at least 3 for a leave-one-out error), and
    ``checks`` held-out random ones timed with them but not fitted (a held-out error)."""

    prompt_len: int = 128
    repeats: int = 3
    warmup: int = 1
    threads: int = 1
    clock: str = "process"
    depth: int = 8
    calibration: int = 4
    checks: int = 0
    seed: int = 0


def space_variants(space: SearchSpace) -> list[tuple[int, int, int, int]]:
    """Every distinct (d_model, n_head, n_kv_head, d_ff) a sub-network of ``space`` can hold."""
    q = space.config.q_per_kv
    found = {(d, h, h // q, f) for layer in space.layers for d in space.d_model_choices for h in layer.n_head for f in layer.d_ff}
    return sorted(found)


def _stack(variant: tuple[int, int, int, int], depth: int) -> SubnetConfig:
    d_model, n_head, _, d_ff = variant
    return SubnetConfig(layers=tuple(range(depth)), n_head=(n_head,) * depth, d_ff=(d_ff,) * depth, d_model=d_model)


def calibration_subnets(space: SearchSpace, n: int, *, seed: int = 0, exclude: Sequence[SubnetConfig] = ()) -> list[SubnetConfig]:
    """The space's largest and smallest sub-networks and seeded random ones, ``n`` in all,
    none of ``exclude`` (a benchmark's held-out models)."""
    skip = {s.hash for s in exclude}
    out = [s for s in (space.largest(), space.smallest()) if s.hash not in skip][:n]
    for s in random_subnets(space, 4 * n + 8, seed=seed + 7919):
        if len(out) >= n:
            break
        if s.hash not in skip and all(s.hash != o.hash for o in out):
            out.append(s)
    return out


def build_engine_table(loaded: LoadedSupernet, space: SearchSpace, formats: Sequence[str], *,
                       options: EngineTableOptions | None = None,
                       calibrate_on: Sequence[SubnetConfig] | None = None,
                       check_on: Sequence[SubnetConfig] = ()) -> EngineLatencyTable:
    """Time ``space``'s layer variants and calibration models in llama.cpp in every format
    of ``formats`` (see the module docstring); ``calibrate_on`` replaces the default
    calibration models; ``check_on`` are held-out models timed in the same rounds and
    recorded with the table's predictions (:meth:`EngineLatencyTable.check`), not fitted. Refuses, before any work: llama-cpp-python missing, a supernet
    llama.cpp cannot run, widths a block format cannot store, ``clock="process"`` with
    more than one thread."""
    opts = options or EngineTableOptions()
    require_llama_cpp()
    fmts = list(dict.fromkeys(parse_quant(f).name for f in formats))
    if not fmts:
        raise NasError("engine table: give at least one weight format (e.g. --quant q8_0,q4_0)")
    if space.config != loaded.config:
        raise NasError("engine table: the search space belongs to another supernet config")
    problem = gguf_problem(loaded.config)
    if problem:
        raise NasError(f"engine table: llama.cpp cannot run this supernet: {problem}")
    if loaded.tokenizer_dir is None:
        raise NasError(f"engine table: supernet {loaded.path} has no tokenizer/ directory, which a GGUF carries; "
                       "import the supernet with one")
    check_quant_space(fmts, space)
    if opts.clock not in ("wall", "process") or opts.threads < 1:
        raise NasError(f"engine table: clock must be 'process' or 'wall' and threads >= 1, got {opts.clock!r} and "
                       f"{opts.threads}")
    if opts.clock == "process" and opts.threads != 1:
        raise NasError(f"clock 'process' measures latency only with one thread (CPU time adds up over threads); "
                       f"use --threads 1 or --clock wall (threads is {opts.threads})")
    if opts.prompt_len < 1 or opts.repeats < 1 or opts.calibration < 0:
        raise NasError("engine table: prompt_len and repeats must be >= 1, calibration >= 0")
    depth = max(2, min(opts.depth, loaded.config.n_layer))
    if loaded.config.n_layer < 2:
        raise NasError("engine table: the supernet needs at least 2 layers (the head is a 1- and a 2-layer stack apart)")
    start = time.perf_counter()
    variants = space_variants(space)
    stacks = [_stack(v, depth) for v in variants]
    half = depth // 2  # the head is where the line through a half-depth and a full-depth stack meets depth 0
    head_stacks = [_stack(v, half) for v in variants]
    targets = list(calibrate_on) if calibrate_on is not None else calibration_subnets(space, opts.calibration, seed=opts.seed)
    checks = list(check_on)
    if not checks and opts.checks:
        pool = calibration_subnets(space, len(targets) + opts.checks + 2, seed=opts.seed + 1, exclude=targets)
        checks = [c for c in pool if c.hash not in {s.hash for s in (space.largest(), space.smallest())}][:opts.checks]
    for s in [*targets, *checks]:
        s.check_fits(loaded.config)
    table = EngineLatencyTable(
        fingerprint=engine_fingerprint(opts.threads, opts.clock), config=loaded.config, prompt_len=opts.prompt_len,
        threads=opts.threads, clock=opts.clock, layer_ms={}, head_ms={}, stack_depth=depth, repeats=opts.repeats,
    )
    measured: list[tuple[SubnetConfig, str, float]] = []
    held_out: list[tuple[SubnetConfig, str, float]] = []
    for fmt in fmts:
        models = [*stacks, *head_stacks, *targets, *checks]
        with tempfile.TemporaryDirectory(prefix="engine-table-") as tmp:
            paths = []
            for i, subnet in enumerate(models):
                with torch.no_grad():
                    dense = loaded.model.extract(subnet).float().eval()
                path = Path(tmp) / f"m{i}-{fmt}.gguf"
                write_gguf(dense, path, quant=fmt, tokenizer_dir=loaded.tokenizer_dir, name=f"engine table {subnet.summary()}")
                del dense
                paths.append(path)
            log.info("engine table %s: %d files written, timing", fmt, len(paths))
            samples = prefill_round_robin(paths, prompt_len=opts.prompt_len, repeats=opts.repeats, warmup=opts.warmup,
                                          n_threads=opts.threads, clock=opts.clock, seed=opts.seed)
        ms = [statistics.median(s) for s in samples]
        n_s, n_h = len(stacks), len(head_stacks)
        n_t = len(targets)
        t_stack, t_one = ms[:n_s], ms[n_s:n_s + n_h]
        t_targets, t_checks = ms[n_s + n_h:n_s + n_h + n_t], ms[n_s + n_h + n_t:]
        per_variant: dict[int, list[float]] = {}
        for v, th, td in zip(variants, t_one, t_stack):
            per_variant.setdefault(v[0], []).append(th - half * (td - th) / (depth - half))
        head = {d_model: statistics.median(hs) for d_model, hs in per_variant.items()}
        table.layer_ms[fmt] = {variant_key(*v): (t - head[v[0]]) / depth for v, t in zip(variants, t_stack)}
        table.head_ms[fmt] = head
        measured += [(s, fmt, t) for s, t in zip(targets, t_targets)]
        held_out += [(s, fmt, t) for s, t in zip(checks, t_checks)]
    if measured:
        table.calibrate(measured)
    if held_out:
        table.check(held_out)
    table.build_s = time.perf_counter() - start
    log.info("engine table: %d variants x %d formats, %d calibration models, %.1f s, leave-one-out MAPE %s, held-out "
             "MAPE %s", len(variants), len(fmts), len(targets), table.build_s, table.loo_mape, table.check_mape)
    return table


def table_inputs(supernet_dir: str | Path, *, spec_path: str | Path | None = None,
                 quant: Sequence[str] | None = None) -> tuple[LoadedSupernet, SearchSpace, list[str]]:
    """What ``nas supernet engine-table`` times: the supernet at ``supernet_dir``, the space
    (a study spec's, else the supernet's own) and the formats (``quant``, else the spec's
    ``quant_choices``, else its dtype's format; without a spec ``bf16, q8_0, q4_0``)."""
    loaded = load_supernet(supernet_dir, dtype="fp32")
    space = loaded.space
    formats = list(quant or [])
    if spec_path is not None:
        spec = load_spec(spec_path)
        if Path(spec.supernet).resolve() != Path(supernet_dir).resolve():
            raise NasError(f"study spec {spec_path} searches the supernet at {spec.supernet}, not {supernet_dir}; "
                           "give the spec's supernet directory")
        space = SearchSpace.resolve(spec.space, loaded.config, loaded.model.layer_rank, loaded.space)
        formats = formats or list(spec.quant_choices) or [parse_quant(resolve_dtype(spec.dtype, spec.device)).name]
    return loaded, space, formats or ["bf16", "q8_0", "q4_0"]


__all__ = ["EngineTableOptions", "build_engine_table", "calibration_subnets", "space_variants", "table_inputs"]
