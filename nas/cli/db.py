"""`nas db upgrade [URL]` and `nas results STUDY`: the database schema and a study's results.

``nas results`` prints (or writes) one row per trial from :func:`storage.study_results`
and adds ``pareto`` (bool) and ``pareto_rank`` (0 = front) computed with
:mod:`nas.pareto` over the study's objectives: those given with ``--objective``, else
those of the stored study spec. Only complete, feasible trials at the study's top
fidelity with every objective known are ranked; the others get ``pareto = False`` and
no rank.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from nas.errors import NasError

console = Console()
err_console = Console(stderr=True)
group = typer.Typer(help="Create or upgrade the results database.", no_args_is_help=True)

_STORAGE_HELP = "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB (default: sqlite in NAS_WORK_DIR)"
# Metrics where lower is better, for --objective without an explicit direction.
_LOWER_IS_BETTER = {"loss", "nll", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ppl"}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@dataclass(frozen=True)
class Objective:
    """A column of the results frame and which way is better."""

    column: str
    direction: str  # "minimize" | "maximize"


@group.command("upgrade")
def upgrade_cmd(
    url: Annotated[Optional[str], typer.Argument(help=_STORAGE_HELP)] = None,
) -> None:
    """Create the database's tables or upgrade them to the newest schema (also done on every open)."""
    import storage

    with storage.open_database(url) as db:
        revision = storage.current_revision(db.engine)
        console.print(
            f"{db.safe_url}: schema at revision {revision} (newest: {storage.head_revision()})", soft_wrap=True
        )


def results_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    storage_url: Annotated[Optional[str], typer.Option("--storage", help=_STORAGE_HELP)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format")] = OutputFormat.table,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of the terminal")] = None,
    objective: Annotated[
        Optional[list[str]],
        typer.Option(
            "--objective",
            "-O",
            help="COLUMN[:max|min] to rank Pareto members by (repeat; default: the study spec's objectives)",
        ),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="Only costs measured on this device fingerprint")] = None,
    all_fidelities: Annotated[
        bool, typer.Option("--all-fidelities", help="Add <task>/<metric>@<fidelity> columns")
    ] = False,
) -> None:
    """One row per trial: state, config dims, every metric and cost, and Pareto membership."""
    import storage

    if fmt is OutputFormat.parquet and out is None:
        raise NasError("--format parquet writes a binary file: add --out FILE.parquet")
    with storage.open_database(storage_url) as db:
        frame = storage.study_results(db, study, device=device, all_fidelities=all_fidelities)
        row = storage.get_study(db, study)
    spec = dict(row.spec) if row is not None else {}
    objectives, top_fidelity, frame = resolve_objectives(frame, spec, objective or [])
    if objectives:
        frame = add_pareto_columns(frame, objectives, top_fidelity)
    else:
        err_console.print(
            "note: no objectives known for this study; pass --objective COLUMN:max|min to mark Pareto members"
        )
    _write(frame, fmt, out, objectives, title=f"study {study}")


def resolve_objectives(
    frame: pd.DataFrame, spec: dict[str, Any], explicit: Sequence[str]
) -> tuple[list[Objective], str | None, pd.DataFrame]:
    """The objectives (and top fidelity label, when the spec says) to rank ``frame`` by.

    ``explicit`` entries are ``COLUMN[:max|min]``. Without them the study spec's
    objectives are used: ``accuracy`` becomes a column (the tasks' main metrics averaged
    as the spec says), costs made of several parts (``memory``) are summed. Returns the
    frame with any such derived columns added.
    """
    top_fidelity = None
    parsed = _parse_spec(spec)
    if parsed is not None:
        top_fidelity = parsed.top_fidelity.label
    if explicit:
        objectives = [_parse_objective(text, frame) for text in explicit]
        return objectives, top_fidelity, frame
    if parsed is None:
        return [], None, frame
    from nas.spec import AGGREGATE, COST_METRICS

    frame = frame.copy()
    objectives = []
    for obj in parsed.objectives:
        name, direction = obj.metric, obj.direction or "minimize"
        if name == AGGREGATE:
            weights = {t.name: (t.weight if parsed.aggregation == "weighted" else 1.0) for t in parsed.tasks}
            columns = {t.name: f"{t.name}/{t.main_metric}" for t in parsed.tasks}
            frame[name] = _weighted_mean(frame, columns, weights)
        elif name in COST_METRICS and name not in frame.columns:
            parts = COST_METRICS[name][0]
            frame[name] = frame[list(parts)].sum(axis=1, min_count=len(parts)) if set(parts) <= set(frame.columns) else np.nan
        elif name not in frame.columns:
            frame[name] = np.nan
        objectives.append(Objective(name, direction))
    return objectives, top_fidelity, frame


def add_pareto_columns(frame: pd.DataFrame, objectives: Sequence[Objective], top_fidelity: str | None) -> pd.DataFrame:
    """Add ``pareto`` (bool) and ``pareto_rank`` (nullable int, 0 = front) to a results frame."""
    from nas.pareto import non_dominated_ranks

    frame = frame.copy()
    values = frame[[o.column for o in objectives]].to_numpy(dtype=float)
    eligible = (frame["state"] == "COMPLETE") & frame["feasible"] & np.isfinite(values).all(axis=1)
    if top_fidelity is not None:
        eligible &= frame["fidelity"] == top_fidelity
    eligible = eligible.to_numpy(dtype=bool)
    ranks = pd.array([pd.NA] * len(frame), dtype="Int64")
    if eligible.any():
        ranks[eligible] = non_dominated_ranks(values[eligible], [o.direction for o in objectives])
    frame["pareto_rank"] = ranks
    frame["pareto"] = (frame["pareto_rank"] == 0).fillna(False).astype(bool)
    return frame


def _parse_spec(spec: dict[str, Any]) -> Any:
    """The stored spec as a ``nas.spec.StudySpec``, or ``None`` if it is not one."""
    if not spec:
        return None
    try:
        from nas.spec import spec_from_json

        return spec_from_json({k: v for k, v in spec.items() if k != "supernet_hash"})
    except Exception:  # noqa: BLE001 - a foreign or older spec: fall back to --objective
        return None


def _parse_objective(text: str, frame: pd.DataFrame) -> Objective:
    column, sep, direction = text.rpartition(":")
    if not sep or direction not in ("max", "min", "maximize", "minimize"):
        column, direction = text, ""
    if column not in frame.columns:
        known = [c for c in frame.columns if "/" in c and not c.endswith("_stderr")] + [
            c for c in frame.columns if c not in _NON_OBJECTIVE and "/" not in c and not c.startswith("config.")
        ]
        raise NasError(
            f"--objective {text!r}: no column {column!r} in the results; use one of {', '.join(known) or '(none yet)'}"
        )
    if not direction:
        metric = column.rsplit("/", 1)[-1]
        direction = "maximize" if "/" in column and metric not in _LOWER_IS_BETTER else "minimize"
    return Objective(column, "maximize" if direction.startswith("max") else "minimize")


_NON_OBJECTIVE = {"trial", "state", "feasible", "fidelity", "subnet_id", "config_hash", "config_json", "pareto", "pareto_rank"}


def _weighted_mean(frame: pd.DataFrame, columns: dict[str, str], weights: dict[str, float]) -> pd.Series:
    if not all(c in frame.columns for c in columns.values()):
        return pd.Series(np.nan, index=frame.index)
    total = sum(weights[t] * frame[c] for t, c in columns.items())
    return total / sum(weights.values())


def _write(frame: pd.DataFrame, fmt: OutputFormat, out: Path | None, objectives: Sequence[Objective], title: str) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    if fmt is OutputFormat.parquet:
        assert out is not None
        frame.to_parquet(out, index=False)
    elif fmt is OutputFormat.csv:
        text = frame.to_csv(index=False)
        _emit(text, out)
    elif fmt is OutputFormat.json:
        _emit(frame.to_json(orient="records", indent=1) + "\n", out)
    else:
        table, width = _table(frame, objectives, title)
        if out is None:
            Console(width=max(console.width, width)).print(table)  # never truncate cells
        else:
            with out.open("w") as fh:
                Console(file=fh, width=width).print(table)
    if out is not None:
        err_console.print(f"{len(frame)} trials written to {out}", soft_wrap=True)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def _table(frame: pd.DataFrame, objectives: Sequence[Objective], title: str) -> tuple[Table, int]:
    """A rich table of the main columns, and the width it needs to show every cell whole."""
    objective_cols = [o.column for o in objectives]
    shown = ["trial", "state", "feasible", "fidelity"]
    if "pareto" in frame.columns:
        shown.append("pareto")
    shown += objective_cols
    shown += [
        c
        for c in frame.columns
        if c not in shown and c not in _NON_OBJECTIVE and not c.startswith("config.") and not c.endswith("_stderr")
    ]
    table = Table(title=f"{title}: {len(frame)} trials", header_style="bold")
    cells = [[_cell(rec[c]) for c in shown] for _, rec in frame.iterrows()]
    width = 1
    for i, col in enumerate(shown):
        arrow = {"maximize": " ↑", "minimize": " ↓"}.get(next((o.direction for o in objectives if o.column == col), ""), "")
        header = col + arrow
        table.add_column(header, justify="left" if col in ("state", "fidelity") else "right", no_wrap=True)
        width += 3 + max([len(header), *(len(row[i]) for row in cells)])
    for row, pareto in zip(cells, frame.get("pareto", pd.Series(False, index=frame.index))):
        table.add_row(*row, style="bold green" if bool(pareto) else None)
    return table, width


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return str(value)


def register(app: typer.Typer) -> None:
    """Add `nas db ...` and `nas results` to the root app."""
    app.add_typer(group, name="db")
    app.command("results")(results_cmd)
