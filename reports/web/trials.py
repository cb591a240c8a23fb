"""The all-trials table of a study: filter, sort and page on the server, or download as CSV.

:class:`TrialQuery` is what the study page puts in its URL and sends to ``GET
/api/studies/{name}/trials`` (and ``.../trials.csv``): which fidelities, feasibility, the
plotted axes' front only, ranges on any numeric column (elastic dims, costs, metrics) and
an explicit set of trials (a box or lasso selection on the Pareto plot). It runs on the
cached study frame: a 1,000-trial study filters and sorts in a few milliseconds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.front import front_mask, resolve_column
from nas.metrics import ACCURACY
from reports.data import StudyView

#: The fidelity value that stands for "never scored" in a filter.
UNSCORED = "none"
MAX_RANGES = 16
MAX_SELECTED = 5_000


@dataclass(frozen=True)
class Range:
    column: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class TrialQuery:
    fidelity: tuple[str, ...] = ()  # fidelity names, or "none" for never scored; empty: any
    feasible: bool | None = None
    front_of: tuple[str, str] | None = None  # (x, y): only that front
    ranges: tuple[Range, ...] = ()
    trials: tuple[int, ...] | None = None  # an explicit selection (None: no selection)
    sort: str = "trial"
    descending: bool = False
    offset: int = 0
    limit: int = 50


def parse_range(text: str) -> Range:
    """``column:min:max`` (either bound may be empty; SI suffixes k M G T allowed)."""
    column, sep, rest = text.rpartition(":")
    column, sep2, low = column.rpartition(":")
    if not sep or not sep2 or not column:
        raise NasError(f"range {text!r} must read COLUMN:MIN:MAX, e.g. params:10M:50M or config.n_layer:12:")
    return Range(column, _number(low, text), _number(rest, text))


def _number(text: str, whole: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    scale = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1], 1.0)
    try:
        value = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise NasError(f"range {whole!r}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise NasError(f"range {whole!r}: bounds must be finite")
    return value


def parse_trials(text: str | None) -> tuple[int, ...] | None:
    """``"3,7,12-15"`` -> (3, 7, 12, 13, 14, 15); None or "" -> no selection."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            low, dash, high = part.partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if last < first or last - first > MAX_SELECTED:
                raise ValueError(part)
            out.extend(range(first, last + 1))
    except ValueError:
        raise NasError(f"trials {text[:40]!r} must be trial numbers or ranges (3,7,12-15) separated by commas") from None
    values = tuple(dict.fromkeys(out))
    if len(values) > MAX_SELECTED:
        raise NasError(f"at most {MAX_SELECTED} selected trials")
    return values


def _column(view: StudyView, name: str) -> str:
    if name == "trial":
        return name
    column = resolve_column(name, view.frame) or (name if name in view.frame.columns else None)
    if column is None or not pd.api.types.is_numeric_dtype(view.frame[column]):
        known = ", ".join(["trial", *view.value_columns, *view.dim_columns[:6]])
        raise NasError(f"study {view.name!r} has no numeric column {name!r}; use one of {known}, ...")
    return column


def select_trials(view: StudyView, q: TrialQuery) -> pd.DataFrame:
    """The rows of ``view`` that ``q`` keeps, sorted (missing values last); not paged."""
    frame = view.frame
    mask = pd.Series(True, index=frame.index)
    if q.fidelity:
        fid = frame["fidelity"].astype(object).where(frame["fidelity"].notna(), UNSCORED)
        mask &= fid.isin(q.fidelity)
    if q.feasible is not None:
        mask &= frame["feasible"].astype(bool) == q.feasible
    if q.front_of is not None:
        x, y = (view.objective_for(_column(view, c)) for c in q.front_of)
        mask &= front_mask(frame, (x, y))
    for r in q.ranges[:MAX_RANGES]:
        values = frame[_column(view, r.column)].astype(float)
        if r.min is not None:
            mask &= values >= r.min
        if r.max is not None:
            mask &= values <= r.max
    if q.trials is not None:
        mask &= frame["trial"].isin(q.trials)
    rows = frame[mask]
    key = _column(view, q.sort)
    return rows.sort_values([key, "trial"], ascending=[not q.descending, True], na_position="last", kind="stable")


def csv_text(view: StudyView, rows: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """The rows as CSV: trial, state, fidelity, feasible, front, config summary, accuracy with
    stderr, every metric and cost, the summary elastic dims, the config JSON (raw values)."""
    dims = [c for c in view.dim_columns if ".layer_" not in c]
    cols = list(columns or ["trial", "state", "fidelity", "feasible", "on_front", "tied", "summary", ACCURACY,
                            f"{ACCURACY}_stderr", *view.metric_columns, *view.cost_columns, *dims, "config_json"])
    cols = [c for c in cols if c in rows.columns]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(cols)
    for rec in rows[cols].itertuples(index=False):
        writer.writerow(["" if (isinstance(v, float) and not np.isfinite(v)) or v is None or v is pd.NA else v for v in rec])
    return out.getvalue()


__all__ = ["MAX_RANGES", "MAX_SELECTED", "Range", "TrialQuery", "UNSCORED", "csv_text", "parse_range", "parse_trials",
           "select_trials"]
