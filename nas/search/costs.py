"""The costs a study uses and its constraints on them.

:class:`StudyCosts` gives every candidate its analytic costs (always), its predicted
latency (a per-device lookup table, when an objective or constraint names
``predicted_latency_ms``), its predicted llama.cpp prefill latency (the device's engine
table, when one names ``predicted_engine_latency_ms``) and its measured prefill latency
(when one names ``latency_ms``) — all before any benchmark runs, so infeasible
sub-networks are never scored. :func:`constraint_violation` is what Optuna is told; :func:`check_feasible_extremes`
refuses constraints that no sub-network of the space can meet.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from evaluators.cost import cost_value, costs
from evaluators.engine_table import (
    BUILD_COMMAND,
    ENGINE_COST,
    ENGINE_TABLE_FILE,
    EngineLatencyTable,
    engine_format,
    variant_key,
)
from evaluators.errors import EvaluatorError
from evaluators.latency import LatencySetup, device_fingerprint, measure_latency
from evaluators.latency_table import LatencyTable
from evaluators.types import CostValue
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.paths import work_dir
from nas.search.spec import StudySpec

log = logging.getLogger(__name__)


class StudyCosts:
    """The costs a study uses: analytic (always), predicted latency (when named) and
    measured prefill latency (when named)."""

    def __init__(
        self,
        config: SupernetConfig,
        *,
        context_len: int,
        dtype: str,
        model: Any = None,
        space: SearchSpace | None = None,
        needs: Sequence[str] = (),
        latency_table_path: Path | None = None,
        quant_choices: Sequence[str] = (),
        engine_table_path: Path | None = None,
    ) -> None:
        self.config = config
        self.context_len = context_len
        self.dtype = dtype
        self.model = model
        self.needs = tuple(needs)
        self.latency_setup = LatencySetup(dtype=dtype)  # measured and predicted latency alike
        self.analytic_device = f"analytic/ctx{context_len}/{dtype}"
        self.table: LatencyTable | None = None
        self.measured_device: str | None = None
        if "predicted_latency_ms" in self.needs:
            self.table = self._latency_table(space, latency_table_path)
        self.engine_table: EngineLatencyTable | None = None
        if ENGINE_COST in self.needs:
            # the formats candidates run in: the spec's quant_choices, else the study's dtype
            formats = tuple(dict.fromkeys(engine_format(q, dtype) for q in (quant_choices or ("",))))
            self.engine_table = self._engine_table(space, formats, engine_table_path)
        if "latency_ms" in self.needs:
            if model is None:
                raise NasError("the latency_ms objective/constraint measures the model; load the supernet first")
            self.measured_device = device_fingerprint(dtype=dtype)

    def _latency_table(self, space: SearchSpace | None, path: Path | None) -> LatencyTable:
        path = path or work_dir() / "latency_tables.json"
        fingerprint = device_fingerprint(dtype=self.dtype)
        try:
            return LatencyTable.load(path, fingerprint, config=self.config)
        except EvaluatorError:
            if self.model is None:
                raise NasError(
                    f"predicted_latency_ms needs a latency table for {fingerprint} in {path}; run the search once "
                    "on this device to build it"
                ) from None
        log.warning("building a latency table for %s (once per device)", fingerprint)
        table = LatencyTable.build(self.model, space, setup=self.latency_setup)
        table.save(path)
        return table

    def _engine_table(self, space: SearchSpace | None, formats: tuple[str, ...], path: Path | None) -> EngineLatencyTable:
        """This device's engine latency table of the supernet, checked to hold every format
        and layer variant the study can ask for (one error naming the build command)."""
        path = path or work_dir() / ENGINE_TABLE_FILE
        try:
            table = EngineLatencyTable.load(path, self.config)
        except EvaluatorError as exc:
            raise NasError(f"{ENGINE_COST}: {exc}") from None
        missing_fmt = [f for f in formats if f not in table.layer_ms]
        if missing_fmt:
            raise NasError(f"{ENGINE_COST}: the engine latency table in {path} ({table.fingerprint}) has no timings in "
                           f"{missing_fmt} (it has {list(table.formats)}); rebuild it with them: {BUILD_COMMAND}")
        if space is not None:
            q = self.config.q_per_kv
            wanted = {variant_key(d, h, h // q, f) for layer in space.layers for d in space.d_model_choices
                      for h in layer.n_head for f in layer.d_ff}
            missing = sorted(wanted - set(table.layer_ms[formats[0]]))
            heads = [d for d in space.d_model_choices if d not in table.head_ms[formats[0]]]
            if missing or heads:
                shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                raise NasError(f"{ENGINE_COST}: the engine latency table in {path} was timed on another search space "
                               f"(no layer variants {shown or '-'}, no d_model {heads or '-'}); rebuild it for this "
                               f"study's space: {BUILD_COMMAND}")
        log.info("engine latency table %s (leave-one-out MAPE %s)", table.fingerprint, table.loo_mape)
        return table

    def device_of(self, value: CostValue, name: str = "") -> str:
        """The device label a cost (named ``name``) is recorded under."""
        if name == ENGINE_COST and self.engine_table is not None:
            return self.engine_table.fingerprint
        if value.method == "analytic":
            return self.analytic_device
        if value.method == "measured":
            return self.measured_device or "cpu"
        return self.table.fingerprint if self.table is not None else "predicted"

    def before_scoring(self, subnet: SubnetConfig) -> dict[str, CostValue]:
        """Analytic costs (plus predicted latency with a table): no model run."""
        result = costs(self.config, subnet, context_len=self.context_len, dtype=self.dtype, table=self.table,
                       quant=subnet.quant or None)  # a quantised candidate (spec quant_choices): its format's bytes
        values = dict(result.values)
        if self.engine_table is not None:
            fmt = engine_format(subnet.quant, self.dtype)
            t = self.engine_table
            try:
                ms = t.predict(subnet, fmt)
            except EvaluatorError as exc:
                raise NasError(f"{ENGINE_COST}: {exc}") from None
            values[ENGINE_COST] = CostValue(
                value=ms, method="predicted", unit="ms",
                note=f"llama.cpp prefill of {t.prompt_len} tokens as {fmt} GGUF, {t.threads} thread(s), {t.clock} clock; "
                     "per-layer engine lookup table",
            )
        return values

    def measured(self, subnet: SubnetConfig) -> dict[str, CostValue]:
        """The measured prefill latency of ``subnet`` (runs the model)."""
        result = measure_latency(self.model, subnet, setup=self.latency_setup, decode_tokens=0)
        return {"prefill_latency_ms": result.values["prefill_latency_ms"]}

    @staticmethod
    def value(name: str, values: Mapping[str, CostValue]) -> float:
        """A spec cost (see :data:`nas.metrics.COST_METRICS`) from cost-model values."""
        try:
            return cost_value(name, values)
        except EvaluatorError as exc:
            raise NasError(str(exc)) from None


def constraint_violation(value: float, *, lower: float | None, upper: float | None) -> float:
    """Relative violation of ``lower <= value <= upper`` (> 0: violated, <= 0: satisfied)."""
    out = -math.inf
    if upper is not None:
        out = max(out, (value - upper) / abs(upper) if upper else value - upper)
    if lower is not None:
        out = max(out, (lower - value) / abs(lower) if lower else lower - value)
    return float(out)


def check_feasible_extremes(spec: StudySpec, costs: StudyCosts, space: SearchSpace) -> None:
    """Refuse constraints that no sub-network can meet, judged on the space's extremes
    (every cost grows with every dimension, so the smallest sub-network has the smallest
    costs and the largest the largest)."""
    if not spec.constraints:
        return
    small, large = space.smallest(), space.largest()
    # with a quantisation axis, every format of the extremes: bytes fall with bits per weight,
    # but the engine's latency need not (a format's kernels may be slower than a wider one's)
    smalls = [replace(small, quant=q) for q in spec.quant_choices] or [small]
    larges = [replace(large, quant=q) for q in spec.quant_choices] or [large]
    lo_vals, hi_vals = [costs.before_scoring(s) for s in smalls], [costs.before_scoring(s) for s in larges]
    problems = []
    for i, con in enumerate(spec.constraints):
        if con.metric == "latency_ms":
            continue
        lo_all = [StudyCosts.value(con.metric, v) for v in lo_vals]
        hi_all = [StudyCosts.value(con.metric, v) for v in hi_vals]
        lo, hi = min(lo_all), max(hi_all)
        small, large = smalls[lo_all.index(lo)], larges[hi_all.index(hi)]
        if con.max is not None and lo > con.max:
            problems.append(
                f"constraints[{i}]: {con.metric} <= {con.max:g} but even the smallest sub-network ({small.summary()}) "
                f"has {lo:,.6g}; raise max to at least {lo:,.6g}"
            )
        if con.min is not None and hi < con.min:
            problems.append(
                f"constraints[{i}]: {con.metric} >= {con.min:g} but even the largest sub-network ({large.summary()}) "
                f"has {hi:,.6g}; lower min to at most {hi:,.6g}"
            )
    if problems:
        raise NasError("no sub-network of the search space can satisfy the constraints: " + "; ".join(problems))


__all__ = ["StudyCosts", "check_feasible_extremes", "constraint_violation"]
