"""`nas db upgrade [URL]` and `nas results STUDY`: the database schema and a study's results.

``nas results`` prints (or writes) one row per trial: the study's annotated results
(:func:`nas.search.results.load_results`, the same front and numbers as ``nas status``,
the report and the web pages) with ``pareto`` (bool) and ``pareto_rank`` (0 = front) over
the study's objectives: those given with ``--objective``, else those of the stored study
spec. Only complete, feasible trials at the study's top fidelity with every objective
known are ranked (one per sub-network); the others get ``pareto = False`` and no rank.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from nas.errors import NasError
from nas.front import annotate, pareto_ranks, resolve_column
from nas.metrics import Objective, objective

console = Console()
err_console = Console(stderr=True)
group = typer.Typer(help="Create or upgrade the results database.", no_args_is_help=True)

_STORAGE_HELP = "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB (default: sqlite in NAS_WORK_DIR)"
#: Columns of the results that are bookkeeping, not objectives.
_NON_OBJECTIVE = {"trial", "state", "feasible", "fidelity", "subnet_id", "config_hash", "config_json", "summary",
                  "full_fidelity", "pareto", "pareto_rank"}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@group.command("upgrade")
def upgrade_cmd(
    url: Annotated[Optional[str], typer.Argument(help=_STORAGE_HELP)] = None,
) -> None:
    """Create the database's tables or upgrade them to the newest schema (also done on every open).

    Unlike other commands, this adds the NAS tables to an existing SQLite file that holds
    other tables."""
    # deferred: storage loads sqlalchemy and alembic; `nas --help` stays fast
    import storage

    with storage.open_database(url, init=True) as db:  # explicit: may add our tables to any file
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
    # deferred: storage and the results load sqlalchemy; `nas --help` stays fast
    import storage
    from nas.search.results import load_results

    if fmt is OutputFormat.parquet and out is None:
        raise NasError("--format parquet writes a binary file: add --out FILE.parquet")
    with storage.open_database(storage_url, create=False) as db:
        results = load_results(db, study, device=device, all_fidelities=all_fidelities, fallback=False)
    frame, axes = results.frame, results.axes
    if objective:
        axes = replace(axes, objectives=tuple(_parse_objective(text, frame) for text in objective))
        frame = annotate(frame, axes)
    if axes.objectives:
        ranks = pareto_ranks(frame, axes.objectives)
        frame = frame.rename(columns={"on_front": "pareto"})
        frame["pareto_rank"] = ranks
    else:
        frame = frame.drop(columns=["on_front"])
        err_console.print(
            "note: no objectives known for this study; pass --objective COLUMN:max|min to mark Pareto members"
        )
    _write(frame, fmt, out, axes.objectives, title=f"study {study}")


def _parse_objective(text: str, frame: pd.DataFrame) -> Objective:
    """``COLUMN[:max|min]`` (default: the column's usual direction)."""
    column, sep, direction = text.rpartition(":")
    if not sep or direction not in ("max", "min", "maximize", "minimize"):
        column, direction = text, ""
    resolved = resolve_column(column, frame)
    if resolved is None or resolved not in frame.columns:
        known = [c for c in frame.columns if "/" in c and not c.endswith("_stderr")] + [
            c for c in frame.columns
            if c not in _NON_OBJECTIVE and "/" not in c and not c.startswith("config.") and not c.endswith("_stderr")
        ]
        raise NasError(
            f"--objective {text!r}: no column {column!r} in the results; use one of {', '.join(known) or '(none yet)'}"
        )
    if not direction:
        return objective(resolved)
    return objective(resolved, "maximize" if direction.startswith("max") else "minimize")


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
