"""Predicted latency of sub-networks on one device: a per-device lookup table (HAT /
Once-for-All style).

:class:`LatencyTable` times each distinct layer variant of a search space once, in a
stack of identical blocks fed the same (batch, prompt_len, d_model) activations as in the
real model, and the embedding + final norm + LM head once per ``d_model``. A
sub-network's predicted prefill latency is the sum of its parts, mapped through a line
``scale * sum + offset`` fitted on a couple of whole extracted models measured with
:func:`evaluators.latency.measure_prefill_ms` (the calibration absorbs what isolated
timings miss: the model's own per-call overhead and cache effects).
"""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evaluators.cost import check_subnet, resolve_dtype
from evaluators.errors import EvaluatorError
from evaluators.latency import (
    LatencySetup,
    check_clock,
    check_counts,
    device_fingerprint,
    measure_prefill_ms,
    num_threads,
    quiet_gc,
    round_robin_ms,
    timer,
)
from nas.errors import NasError
from nas.model.config import LayerDims, SupernetConfig
from nas.model.directory import parse_dtype
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import ForwardContext, Supernet, rms_norm
from nas.stats import fit_line

log = logging.getLogger(__name__)

TABLE_FORMAT_VERSION = 1


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
    """``n`` random blocks of one variant (tiny vocabulary: only the blocks are timed). The
    blocks attend globally: a table's prompts are shorter than the sliding windows of the
    models it serves, where a window hides nothing and costs nothing."""
    dims = variant.dims
    cfg = config.replace(
        vocab_size=8, d_model=variant.d_model, n_layer=n, n_head=dims.n_head, n_kv_head=dims.n_kv_head,
        d_ff=dims.d_ff, n_expert=dims.n_expert, top_k=dims.top_k, moe_layers=None, layer_dims=(dims,) * n,
        head_dim=config.head_dim, tie_embeddings=True, sliding_window=0, sliding_layers=None,
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

    @property
    def setup(self) -> LatencySetup:
        """What this table was measured on (what :meth:`calibrate` measures with)."""
        return LatencySetup(
            prompt_len=self.prompt_len, batch=self.batch, dtype=self.dtype, threads=self.threads, clock=self.clock
        )

    # ----------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        model: Supernet,
        space: SearchSpace | None = None,
        *,
        setup: LatencySetup | None = None,
        calibrate_on: Iterable[SubnetConfig] | None = None,
        options: TableOptions | None = None,
        **settings: Any,
    ) -> LatencyTable:
        """Time every layer variant of ``space`` (default: the model's default space) once,
        plus the head per ``d_model``, then calibrate on whole extracted models
        (``calibrate_on``, default: the space's largest and smallest sub-networks and
        ``options.calibration_samples`` seeded random ones — mixed layer sizes run a
        little slower than the sum of homogeneous stacks; pass ``[]`` to skip).

        ``setup`` (default :class:`~evaluators.latency.LatencySetup`) is what the table is
        measured on; keyword ``settings`` are fields of it that override those of
        ``setup`` (``prompt_len=16, threads=1``; an unknown name is a ``TypeError``).
        Each variant runs as a stack of distinct random blocks (see :class:`TableOptions`)
        on seeded ``(batch, prompt_len, d_model)`` activations — the sizes, code path and
        threads of the real prefill; the median run time divided by the stack depth is
        its per-block latency. All stacks stay in memory and are timed round-robin. The
        clock (``wall`` or ``process``: CPU time; with ``threads=1`` it stays meaningful
        on a CPU shared with other jobs) is used for calibration and predictions too.
        """
        setup = replace(setup if setup is not None else LatencySetup(), **settings)  # unknown names: TypeError
        prompt_len, batch, clock = setup.prompt_len, setup.batch, setup.clock
        if not isinstance(model, Supernet):
            raise EvaluatorError(f"LatencyTable.build needs a Supernet, got {type(model).__name__}")
        opts = options or TableOptions()
        check_counts(prompt_len=prompt_len, batch=batch, repeats=opts.repeats, warmup=opts.warmup)
        name, width = resolve_dtype(setup.dtype)
        torch_dtype = parse_dtype(name)
        config = model.config
        space = space or SearchSpace.default(config, model.layer_rank)
        if space.config != config:
            raise EvaluatorError("the search space belongs to another supernet config; pass the model's own space")
        dev = model.lm_head_weight.device
        timer(clock, dev)  # refuse a bad clock before any work
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(opts.seed)
        variants = space_variants(space)
        budget = min(opts.stack_bytes, max(1, opts.total_bytes // len(variants)))
        with num_threads(setup.threads) as n_threads, torch.inference_mode(), quiet_gc():
            check_clock(clock, n_threads)
            fingerprint = device_fingerprint(dev, name, threads=n_threads)
            runners: list[Callable[[], Any]] = []
            depths: list[int] = []
            for variant in variants:
                n = _blocks_per_stack(variant, config, width, budget, opts.max_blocks)
                stack = _stack_model(config, variant, n, torch_dtype, dev)
                x = torch.randn(batch, prompt_len, variant.d_model, generator=gen).to(dev, torch_dtype)
                ctx = stack.context(batch, prompt_len, dtype=torch_dtype, device=dev)
                runners.append(partial(_run_blocks, stack.layers, variant.dims, x, ctx))
                depths.append(n)
            for d_model in space.d_model_choices:
                runners.append(cls._head_runner(model, d_model, prompt_len, batch, torch_dtype, dev, gen))
            samples = round_robin_ms(runners, dev, repeats=opts.repeats, warmup=opts.warmup, clock=clock)
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
            F.linear(rms_norm(x, norm, cfg.norm_eps, cfg.norm_offset), weight)  # (B, T, V)

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
        measured = measure_prefill_ms(model, subnets, setup=self.setup, rounds=rounds, repeats=repeats, warmup=warmup, seed=seed)
        raw = [self.raw_ms(s) for s in subnets]
        self.scale, self.offset_ms = fit_line(raw, measured)
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


__all__ = ["LatencyTable", "LayerVariant", "TableOptions", "random_subnets", "space_variants", "subnet_variants"]
