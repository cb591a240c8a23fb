"""Predicted latency of a sub-network *in llama.cpp*: a per-device lookup table calibrated
on the engine's own timings (the engine counterpart of :mod:`evaluators.latency_table`).

:class:`EngineLatencyTable` holds, per weight format (``f32``, ``bf16``, ``q8_0``, ``q4_0``,
...), llama.cpp's prefill milliseconds of one block of every layer variant of a search space
(``d_model``, query heads, KV heads, ``d_ff``) and of the rest of the model (embedding
lookup, final norm, LM head for the last position) per ``d_model``. A sub-network's
predicted prefill latency in a format is ``scale * (head + sum of its blocks) + offset``,
the line fitted per format on whole sub-networks exported as GGUF and timed in the engine
(it absorbs what the per-block timings miss: per-call overhead, the per-layer ``deci``
graph, cache effects). Its error is the leave-one-out MAPE over those calibration models
(:attr:`EngineLatencyTable.loo_mape`) and, when held-out models were timed with it, their
MAPE (:attr:`EngineLatencyTable.check_mape`).

Building a table needs GGUF exports and llama-cpp-python, so it lives in
:mod:`nas.export.engine_table` (``nas supernet engine-table SUPERNET_DIR``); this module is
torch-free and only looks values up, so the search and the cost model can use a table
without the engine. A table is tagged with :func:`engine_fingerprint`: the CPU, its core
count, the threads and clock it was timed with and the llama-cpp-python version (which
pins the llama.cpp it was built with), and stored per supernet config.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from evaluators.errors import EvaluatorError
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.quant import parse_quant
from nas.model.subnet import SubnetConfig
from nas.stats import fit_line

#: How to install the engine on a CPU like the ones this is developed on (the default native
#: build picks AVX-512/AMX kernels that crash at the first decode there; see DESIGN.md).
INSTALL_HINT = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
                ".venv/bin/pip install 'llama-cpp-python==0.3.36'  (or: pip install -e '.[engine]')")
#: The command that builds a table on this device (named by every "no table" error).
BUILD_COMMAND = "nas supernet engine-table SUPERNET_DIR [--spec STUDY.yaml] [--quant bf16,q8_0,q4_0]"
ENGINE_TABLE_FILE = "engine_latency_tables.json"
ENGINE_TABLE_FORMAT_VERSION = 1
#: The spec cost this table predicts (method ``predicted``).
ENGINE_COST = "predicted_engine_latency_ms"


def engine_package_version() -> str:
    """``llama-cpp-python <version>``, read from the installed package's metadata (the
    engine itself is not imported), or an :class:`EvaluatorError` naming the install."""
    try:
        return f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    except metadata.PackageNotFoundError:
        raise EvaluatorError(f"llama-cpp-python is not installed, and engine latency is measured and calibrated in it; "
                             f"install it with: {INSTALL_HINT}") from None


def _cpu_model() -> str:
    cpu = platform.processor() or platform.machine() or "unknown-cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((" ".join(line.split(":", 1)[1].split()) for line in fh if line.lower().startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def engine_fingerprint(threads: int, clock: str) -> str:
    """Where an engine timing was taken, e.g.
    ``cpu:AMD EPYC 7B13|cores=2|threads=1|llama-cpp-python 0.3.36|process``."""
    return f"{engine_device()}|threads={threads}|{engine_package_version()}|{clock}"


def engine_device() -> str:
    """The hardware part of :func:`engine_fingerprint` (CPU model and logical cores)."""
    return f"cpu:{_cpu_model()}|cores={os.cpu_count()}"


def variant_key(d_model: int, n_head: int, n_kv_head: int, d_ff: int) -> str:
    return f"d{d_model}.h{n_head}.kv{n_kv_head}.ff{d_ff}"


def subnet_variant_keys(config: SupernetConfig, subnet: SubnetConfig) -> list[str]:
    """The :func:`variant_key` of every kept layer of ``subnet``, in order."""
    out = []
    for pos in range(subnet.n_layer):
        d = subnet.layer_dims(pos, config.q_per_kv)
        out.append(variant_key(subnet.d_model, d.n_head, d.n_kv_head, d.d_ff))
    return out


def engine_format(quant: str, dtype: str) -> str:
    """The GGUF format a candidate runs in: its ``quant`` (``SubnetConfig.quant``), else the
    study's dtype (``bf16`` -> ``bf16``, ``fp32`` -> ``f32``)."""
    return parse_quant(quant or dtype).name


def config_key(config: SupernetConfig) -> str:
    """A short stable digest of a supernet config (tables are stored per config)."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class EngineLatencyTable:
    """llama.cpp prefill latency lookup table of one supernet config on one device.

    ``layer_ms[fmt][variant_key]``: ms per block; ``head_ms[fmt][d_model]``: ms of the rest;
    ``line[fmt] = (scale, offset_ms)``; ``calibration``: one entry per whole model timed
    (sub-network JSON, format, raw sum, measured and leave-one-out predicted ms)."""

    fingerprint: str
    config: SupernetConfig
    prompt_len: int
    threads: int
    clock: str
    layer_ms: dict[str, dict[str, float]]
    head_ms: dict[str, dict[int, float]]
    line: dict[str, tuple[float, float]] = field(default_factory=dict)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    #: held-out whole models timed in the same rounds but not fitted (:meth:`check`)
    checks: list[dict[str, Any]] = field(default_factory=list)
    stack_depth: int = 0
    repeats: int = 0
    build_s: float = 0.0
    built_at: float = field(default_factory=time.time)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(sorted(self.layer_ms))

    # --------------------------------------------------------- predicting
    def raw_ms(self, subnet: SubnetConfig, fmt: str) -> float:
        """Uncalibrated sum of ``subnet``'s head and blocks in format ``fmt``."""
        try:
            subnet.check_fits(self.config)
        except NasError as exc:
            raise EvaluatorError(f"sub-network {subnet.summary()} does not fit the engine table's supernet: {exc}") from None
        fmt = parse_quant(fmt).name
        if fmt not in self.layer_ms:
            raise EvaluatorError(f"the engine latency table for {self.fingerprint} has no {fmt} timings (it has "
                                 f"{list(self.formats)}); rebuild it with {fmt} among the formats: {BUILD_COMMAND}")
        heads = self.head_ms[fmt]
        if subnet.d_model not in heads:
            raise EvaluatorError(f"the engine latency table has no entry for d_model={subnet.d_model} (has {sorted(heads)}); "
                                 f"rebuild it for a space that holds it: {BUILD_COMMAND}")
        total = heads[subnet.d_model]
        layers = self.layer_ms[fmt]
        for key in subnet_variant_keys(self.config, subnet):
            if key not in layers:
                raise EvaluatorError(f"the engine latency table has no {fmt} timing of layer variant {key}; rebuild it "
                                     f"for a space that contains this sub-network: {BUILD_COMMAND}")
            total += layers[key]
        return total

    def predict(self, subnet: SubnetConfig, fmt: str) -> float:
        """Predicted llama.cpp prefill latency (ms) of ``prompt_len`` tokens through ``subnet``
        stored in format ``fmt``."""
        raw = self.raw_ms(subnet, fmt)
        scale, offset = self.line.get(parse_quant(fmt).name, (1.0, 0.0))
        return scale * raw + offset

    def calibrate(self, measured: Sequence[tuple[SubnetConfig, str, float]]) -> None:
        """Fit each format's line on whole models ``(sub-network, format, measured ms)`` and
        record every model's leave-one-out prediction (the line refitted without it)."""
        by_fmt: dict[str, list[tuple[SubnetConfig, float, float]]] = {}
        for subnet, fmt, ms in measured:
            by_fmt.setdefault(parse_quant(fmt).name, []).append((subnet, self.raw_ms(subnet, fmt), float(ms)))
        self.calibration = []
        for fmt, rows in sorted(by_fmt.items()):
            raws, meas = [r for _, r, _ in rows], [m for _, _, m in rows]
            self.line[fmt] = fit_line(raws, meas)
            for k, (subnet, raw, ms) in enumerate(rows):
                loo = None
                if len(rows) > 2:  # a line through the others
                    scale, offset = fit_line(raws[:k] + raws[k + 1:], meas[:k] + meas[k + 1:])
                    loo = scale * raw + offset
                self.calibration.append({"subnet": subnet.to_json(), "quant": fmt, "raw_ms": round(raw, 4),
                                         "measured_ms": round(ms, 4), "loo_predicted_ms": None if loo is None else round(loo, 4)})

    def check(self, measured: Sequence[tuple[SubnetConfig, str, float]]) -> None:
        """Record held-out whole models ``(sub-network, format, measured ms)`` with the
        table's prediction for each (they are not fitted)."""
        self.checks = [{"subnet": s.to_json(), "quant": parse_quant(f).name, "measured_ms": round(float(ms), 4),
                        "predicted_ms": round(self.predict(s, f), 4)} for s, f, ms in measured]

    @property
    def check_mape(self) -> float | None:
        """MAPE of the predictions of the held-out models (None without any)."""
        errs = [abs(c["predicted_ms"] - c["measured_ms"]) / c["measured_ms"] for c in self.checks if c["measured_ms"] > 0]
        return statistics.fmean(errs) if errs else None

    @property
    def loo_mape(self) -> float | None:
        """Mean absolute percentage error of the leave-one-out predictions of the
        calibration models (None with fewer than three models per format)."""
        errs = [abs(c["loo_predicted_ms"] - c["measured_ms"]) / c["measured_ms"] for c in self.calibration
                if c.get("loo_predicted_ms") is not None and c["measured_ms"] > 0]
        return statistics.fmean(errs) if errs else None

    # ------------------------------------------------------------ storage
    @property
    def key(self) -> str:
        return f"{self.fingerprint}|config={config_key(self.config)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "config": self.config.to_dict(), "prompt_len": self.prompt_len,
            "threads": self.threads, "clock": self.clock,
            "layer_ms": {f: dict(sorted(v.items())) for f, v in sorted(self.layer_ms.items())},
            "head_ms": {f: {str(k): ms for k, ms in sorted(v.items())} for f, v in sorted(self.head_ms.items())},
            "line": {f: list(v) for f, v in sorted(self.line.items())}, "calibration": self.calibration,
            "loo_mape": self.loo_mape, "checks": self.checks, "check_mape": self.check_mape, "stack_depth": self.stack_depth, "repeats": self.repeats,
            "build_s": self.build_s, "built_at": self.built_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineLatencyTable:
        try:
            return cls(
                fingerprint=str(data["fingerprint"]), config=SupernetConfig.from_dict(data["config"]),
                prompt_len=int(data["prompt_len"]), threads=int(data["threads"]), clock=str(data["clock"]),
                layer_ms={str(f): {str(k): float(ms) for k, ms in v.items()} for f, v in data["layer_ms"].items()},
                head_ms={str(f): {int(k): float(ms) for k, ms in v.items()} for f, v in data["head_ms"].items()},
                line={str(f): (float(v[0]), float(v[1])) for f, v in data.get("line", {}).items()},
                calibration=list(data.get("calibration", [])), checks=list(data.get("checks", [])), stack_depth=int(data.get("stack_depth", 0)),
                repeats=int(data.get("repeats", 0)), build_s=float(data.get("build_s", 0.0)),
                built_at=float(data.get("built_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, NasError) as exc:
            raise EvaluatorError(f"engine latency table entry is malformed ({exc!r}); rebuild it: {BUILD_COMMAND}") from None

    def save(self, path: str | Path) -> None:
        """Store under :attr:`key` in the JSON file ``path`` (other tables in it are kept)."""
        path = Path(path)
        tables = _read_tables(path) if path.exists() else {}
        tables[self.key] = self.to_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format_version": ENGINE_TABLE_FORMAT_VERSION, "tables": tables}, indent=1,
                                  sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, config: SupernetConfig, *, fingerprint: str | None = None) -> EngineLatencyTable:
        """The table of ``config`` timed on this device with the installed engine (the newest
        one when several thread counts or clocks were timed), or the one of ``fingerprint``.
        Every miss is one :class:`EvaluatorError` naming :data:`BUILD_COMMAND`."""
        path = Path(path)
        where = fingerprint or f"{engine_device()} with {engine_package_version()}"  # (refuses a missing engine)
        if not path.is_file():
            raise EvaluatorError(f"no engine latency table for {where}: {path} does not exist; build one on this device "
                                 f"with: {BUILD_COMMAND}")
        tables = _read_tables(path)
        ck = config_key(config)
        if fingerprint is not None:
            found = [t for k, t in tables.items() if k == f"{fingerprint}|config={ck}"]
        else:
            device, version = engine_device(), engine_package_version()
            found = [t for k, t in tables.items()
                     if k.startswith(device + "|") and f"|{version}|" in k and k.endswith(f"|config={ck}")]
        if not found:
            have = sorted({str(t.get("fingerprint")) for t in tables.values() if isinstance(t, dict)})
            raise EvaluatorError(f"{path} has no engine latency table for {where} and this supernet (config {ck}); it has "
                                 f"{have or 'none'}. Build one on this device with: {BUILD_COMMAND}")
        return cls.from_dict(max(found, key=lambda t: float(t.get("built_at", 0.0))))


def _read_tables(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluatorError(f"engine latency table file {path} is not readable JSON ({exc}); delete it and rebuild: "
                             f"{BUILD_COMMAND}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise EvaluatorError(f"engine latency table file {path} has no 'tables' mapping; delete it and rebuild: {BUILD_COMMAND}")
    if data.get("format_version", 0) > ENGINE_TABLE_FORMAT_VERSION:
        raise EvaluatorError(f"engine latency table file {path} was written by a newer version of this tool; upgrade")
    return data["tables"]


__all__ = ["BUILD_COMMAND", "ENGINE_COST", "ENGINE_TABLE_FILE", "INSTALL_HINT", "EngineLatencyTable", "config_key",
           "engine_device", "engine_fingerprint", "engine_format", "engine_package_version",
           "subnet_variant_keys", "variant_key"]
