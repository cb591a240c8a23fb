"""The costs a study uses and its constraints on them.

:class:`StudyCosts` gives every candidate its analytic costs (always), its predicted
latency (a per-device lookup table, when an objective or constraint names
``predicted_latency_ms``) and its measured prefill latency (when one names
``latency_ms``) — all before any benchmark runs, so infeasible sub-networks are never
scored. :func:`constraint_violation` is what Optuna is told; :func:`check_feasible_extremes`
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
from evaluators.errors import EvaluatorError
from evaluators.latency import LatencySetup, device_fingerprint, measure_latency
from evaluators.latency_table import LatencyTable
from evaluators.types import CostValue
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.quant import extreme_quants
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

    def device_of(self, value: CostValue) -> str:
        """The device label a cost is recorded under."""
        if value.method == "analytic":
            return self.analytic_device
        if value.method == "measured":
            return self.measured_device or "cpu"
        return self.table.fingerprint if self.table is not None else "predicted"

    def before_scoring(self, subnet: SubnetConfig) -> dict[str, CostValue]:
        """Analytic costs (plus predicted latency with a table): no model run."""
        result = costs(self.config, subnet, context_len=self.context_len, dtype=self.dtype, table=self.table,
                       quant=subnet.quant or None)  # a quantised candidate (spec quant_choices): its format's bytes
        return dict(result.values)

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
    if spec.quant_choices:  # the extremes of a quantisation axis: the fewest and the most bytes per weight
        cheapest, dearest = extreme_quants(spec.quant_choices)
        small, large = replace(small, quant=cheapest), replace(large, quant=dearest)
    lo_vals, hi_vals = costs.before_scoring(small), costs.before_scoring(large)
    problems = []
    for i, con in enumerate(spec.constraints):
        if con.metric == "latency_ms":
            continue
        lo, hi = StudyCosts.value(con.metric, lo_vals), StudyCosts.value(con.metric, hi_vals)
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
