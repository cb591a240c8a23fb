"""Pick deployment candidates: the best feasible sub-networks of a study under a budget.

:func:`pick` ranks the rows of a study frame (one row per trial, as
``nas.front.annotate`` gives it) that

1. are feasible under the study's own constraints (``feasible``),
2. reached the study's top fidelity (``full_fidelity``, when the column exists) and
   completed (``state`` COMPLETE, when it exists),
3. satisfy every user bound (``params <= 50e6``, ``latency_ms <= 20`` ...), and
4. are *efficient* under this pick: no other candidate is at least as good on the ranking
   metric, on every bounded column (smaller is better) and on every ``tradeoffs`` column
   (usually the study's cost objectives), and strictly better on one. So each candidate
   is a real trade-off (the Pareto front of the metric against the costs that matter).

Candidates are ranked by the metric (best first), ties broken by the bounded columns
(smallest first), then by trial number. Column names are resolved by the caller (the CLI
and the web app accept aliases such as ``latency`` or a bare task name).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.front import confirmed_column, first_of_each_subnet, stderr_column
from nas.metrics import Direction
from nas.pareto import non_dominated_mask

_BOUND = re.compile(r"^\s*([A-Za-z0-9_./@-]+)\s*(?:=|<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")


@dataclass(frozen=True)
class Bound:
    """An inclusive bound on one column: ``min <= value <= max`` (either may be None)."""

    column: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise NasError(f"bound on {self.column!r} needs a max and/or a min")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise NasError(f"bound on {self.column!r}: min {self.min:g} is above max {self.max:g}; nothing can satisfy it")

    @classmethod
    def parse(cls, text: str, kind: Literal["max", "min"] = "max") -> Bound:
        """``"params=50e6"`` (or ``params<=50e6``) as a bound of the given kind."""
        m = _BOUND.match(text)
        if not m:
            raise NasError(f"--{kind} {text!r} is not NAME=NUMBER; write e.g. --{kind} params=50e6")
        try:
            value = float(m.group(2).replace("_", ""))
        except ValueError:
            raise NasError(f"--{kind} {text!r}: {m.group(2)!r} is not a number; write e.g. --{kind} params=50e6") from None
        if not math.isfinite(value):
            raise NasError(f"--{kind} {text!r}: the bound must be a finite number")
        return cls(m.group(1), max=value) if kind == "max" else cls(m.group(1), min=value)

    def admits(self, values: pd.Series) -> pd.Series:
        ok = values.notna()
        if self.max is not None:
            ok &= values <= self.max
        if self.min is not None:
            ok &= values >= self.min
        return ok

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g} <= {self.column} <= {self.max:g}"
        return f"{self.column} <= {self.max:g}" if self.max is not None else f"{self.column} >= {self.min:g}"


def merge_bounds(bounds: Sequence[Bound]) -> tuple[Bound, ...]:
    """One bound per column (the tightest of each kind)."""
    by_col: dict[str, tuple[float | None, float | None]] = {}
    for b in bounds:
        lo, hi = by_col.get(b.column, (None, None))
        if b.max is not None:
            hi = b.max if hi is None else min(hi, b.max)
        if b.min is not None:
            lo = b.min if lo is None else max(lo, b.min)
        by_col[b.column] = (lo, hi)
    return tuple(Bound(col, max=hi, min=lo) for col, (lo, hi) in by_col.items())


@dataclass(frozen=True)
class Candidate:
    """One ranked candidate with the numbers that matter for the decision."""

    rank: int
    trial: int
    score: float  # the confirmed score when the study has one, else the search score
    stderr: float | None
    config_hash: str
    summary: str
    values: dict[str, float | None] = field(default_factory=dict)
    interval: float | None = None  # z * stderr: the score is score ± interval
    search_score: float | None = None  # the search's score beside a confirmed one
    search_stderr: float | None = None
    tied_with: int | None = None  # the rank it is statistically tied with (paired interval covers 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "trial": self.trial,
            "score": self.score,
            "stderr": self.stderr,
            "interval": self.interval,
            "search_score": self.search_score,
            "search_stderr": self.search_stderr,
            "tied_with": self.tied_with,
            "config_hash": self.config_hash,
            "summary": self.summary,
            "values": dict(self.values),
        }


@dataclass(frozen=True)
class PickResult:
    """The ranking and how many trials each filter left."""

    metric: str
    direction: Direction
    bounds: tuple[Bound, ...]
    candidates: tuple[Candidate, ...]
    n_trials: int
    n_eligible: int  # feasible, complete, top fidelity, metric known
    n_within_bounds: int
    n_efficient: int
    confirmed: bool = False  # ranked by the score on the study's held-out confirmation documents
    z: float = 1.96  # intervals are ± z standard errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": self.direction,
            "confirmed": self.confirmed,
            "z": self.z,
            "bounds": [{"column": b.column, "max": b.max, "min": b.min} for b in self.bounds],
            "counts": {
                "trials": self.n_trials,
                "eligible": self.n_eligible,
                "within_bounds": self.n_within_bounds,
                "efficient": self.n_efficient,
            },
            "candidates": [c.to_dict() for c in self.candidates],
        }


def pick(
    frame: pd.DataFrame,
    *,
    metric: str,
    bounds: Sequence[Bound] = (),
    direction: Direction = "maximize",
    top: int | None = 5,
    show: Sequence[str] = (),
    tradeoffs: Sequence[tuple[str, Direction]] = (),
    z: float = 1.96,
    efficient_only: bool = True,
) -> PickResult:
    """Rank the efficient, feasible, top-fidelity trials of ``frame`` within ``bounds``.

    ``metric`` and every bound's column must be columns of ``frame``; ``show`` lists
    extra columns copied into each candidate's ``values`` (the metric and bounded
    columns always are). When ``frame`` holds the metric's confirmed score
    (``<metric>@confirmed``), candidates are ranked by it (the search score beside it).
    ``efficient_only=False`` ranks every eligible candidate within the bounds. Intervals
    are ``z`` standard errors. Raises :class:`NasError` for unknown columns or ``top < 1``.
    """
    if top is not None and top < 1:
        raise NasError(f"--top must be at least 1, got {top}")
    bounds = merge_bounds(bounds)
    known = [c for c in frame.columns if not c.endswith("_stderr")]
    for col in [metric, *(b.column for b in bounds), *(c for c, _ in tradeoffs)]:
        if col not in frame.columns:
            raise NasError(f"study has no column {col!r}; use one of: {', '.join(_nice(known))}")
    ranked = confirmed_column(metric)
    confirmed = ranked in frame.columns and bool(frame[ranked].notna().any())
    ranked = ranked if confirmed else metric
    eligible = frame["feasible"].astype(bool) & frame[ranked].notna()
    if "full_fidelity" in frame.columns:
        eligible &= frame["full_fidelity"].astype(bool)
    if "state" in frame.columns:
        eligible &= frame["state"].fillna("COMPLETE").eq("COMPLETE")
    eligible = first_of_each_subnet(frame, eligible)
    within = eligible.copy()
    for b in bounds:
        within &= b.admits(frame[b.column])
    rows = frame[within]
    sign = -1.0 if direction == "maximize" else 1.0
    # minimisation keys: the metric (best first), then every bounded column (smallest first)
    extra = [(c, d) for c, d in tradeoffs if c != metric and c not in {b.column for b in bounds}]
    keys = np.column_stack(
        [
            rows[ranked].to_numpy(dtype=float) * sign,
            *(rows[b.column].to_numpy(dtype=float) for b in bounds),
            *(rows[c].to_numpy(dtype=float) * (-1.0 if d == "maximize" else 1.0) for c, d in extra),
        ]
    ).reshape(len(rows), 1 + len(bounds) + len(extra))
    # rows missing a trade-off value compete on the metric and bounds only
    keep = non_dominated_mask(np.nan_to_num(keys, nan=np.inf)) if len(rows) else np.zeros(0, dtype=bool)
    order = np.lexsort((rows["trial"].to_numpy(), *[keys[:, i] for i in range(keys.shape[1] - 1, -1, -1)]))
    efficient = [int(i) for i in order if keep[i] or not efficient_only]
    chosen = efficient if top is None else efficient[:top]
    columns = list(dict.fromkeys([metric, *(b.column for b in bounds), *(c for c, _ in extra), *show]))
    candidates = []
    for rank, i in enumerate(chosen, start=1):
        r = rows.iloc[i]
        stderr = _num(r[stderr_column(ranked)]) if stderr_column(ranked) in rows.columns else None
        search_stderr = _num(r[stderr_column(metric)]) if stderr_column(metric) in rows.columns else None
        candidates.append(
            Candidate(
                rank=rank,
                trial=int(r["trial"]),
                score=float(r[ranked]),
                stderr=stderr,
                config_hash=str(r.get("config_hash", "")),
                summary=str(r.get("summary", "")),
                values={c: _num(r[c]) for c in columns if c in rows.columns},
                interval=None if stderr is None else z * stderr,
                search_score=_num(r[metric]) if confirmed else None,
                search_stderr=search_stderr if confirmed else None,
            )
        )
    return PickResult(
        metric=metric,
        direction=direction,
        bounds=bounds,
        candidates=tuple(candidates),
        n_trials=len(frame),
        n_eligible=int(eligible.sum()),
        n_within_bounds=int(within.sum()),
        n_efficient=len(efficient),
        confirmed=confirmed,
        z=z,
    )


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _nice(columns: Sequence[str]) -> list[str]:
    skip = {"state", "subnet_id", "config_hash", "config_json", "summary", "layers_glance", "fidelity"}
    return [c for c in columns if c not in skip and not c.startswith("config.")]


def describe_empty(result: PickResult) -> str:
    """Why nothing was picked, in one sentence with a fix."""
    if result.n_eligible == 0:
        return (
            f"no trial is feasible and scored at the study's top fidelity on {result.metric!r} yet; "
            "let the study run longer or pick another metric"
        )
    bounds = ", ".join(b.describe() for b in result.bounds)
    return f"none of the {result.n_eligible} scored feasible trials satisfies {bounds}; loosen the bounds"


def bounds_from_mapping(max_: Mapping[str, float] | None = None, min_: Mapping[str, float] | None = None) -> tuple[Bound, ...]:
    out = [Bound(k, max=float(v)) for k, v in (max_ or {}).items()]
    out += [Bound(k, min=float(v)) for k, v in (min_ or {}).items()]
    return tuple(out)


__all__ = ["Bound", "Candidate", "PickResult", "bounds_from_mapping", "describe_empty", "merge_bounds", "pick"]
