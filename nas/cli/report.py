"""`nas report`, `nas serve`, `nas pick`, `nas export`: look at a study, choose, ship.

* ``nas report STUDY [--out FILE.html] [--compare OTHER]`` writes one self-contained HTML
  file (plotly.js inline) with the Pareto views and the front members.
* ``nas serve [--host 127.0.0.1] [--port 8000]`` runs the web UI and JSON API.
* ``nas pick STUDY --max params=50e6 --max latency_ms=20 --metric hellaswag/acc_norm``
  ranks the feasible efficient candidates within the bounds.
* ``nas export STUDY TRIAL --out DIR [--verify]`` (or ``--pick`` with pick's options)
  writes a standalone dense model; ``--verify`` re-scores it against the stored scores.

Every command reads the database given by ``--storage`` (or ``NAS_STORAGE``; default the
SQLite file in the work dir).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nas.errors import NasError
from nas.front import aggregate_weights
from nas.metrics import ACCURACY
from nas.paths import work_dir
from nas.pick import Bound, describe_empty

console = Console()
_STORAGE_HELP = "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB (default: sqlite in NAS_WORK_DIR)"
StorageOpt = Annotated[Optional[str], typer.Option("--storage", envvar="NAS_STORAGE", help=_STORAGE_HELP)]
MaxOpt = Annotated[Optional[list[str]], typer.Option("--max", help="Upper bound NAME=VALUE (repeatable), e.g. params=50e6")]
MinOpt = Annotated[Optional[list[str]], typer.Option("--min", help="Lower bound NAME=VALUE (repeatable)")]
MetricOpt = Annotated[str, typer.Option("--metric", help="Rank by this: accuracy, a task, task/metric or a cost")]


def _pick_result(view: Any, metric: str, max_: list[str] | None, min_: list[str] | None, top: int | None) -> Any:
    """Parse --max/--min and pick within ``view``."""
    # deferred: reports loads pandas, sqlalchemy and plotly; `nas --help` stays fast
    from reports.data import pick_in_view

    bounds = [Bound.parse(t, "max") for t in (max_ or [])] + [Bound.parse(t, "min") for t in (min_ or [])]
    return pick_in_view(view, metric, bounds, top)


def report_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file (default: <work dir>/reports/STUDY.html)")] = None,
    compare: Annotated[Optional[list[str]], typer.Option("--compare", help="Overlay another study (repeatable)")] = None,
    storage_url: StorageOpt = None,
) -> None:
    """Write a self-contained HTML report of a study (works offline)."""
    # deferred: storage and reports load sqlalchemy, pandas and plotly
    import storage
    from reports.data import load_study
    from reports.html import write_report

    with storage.open_database(storage_url) as db:
        view = load_study(db, study)
        others = [load_study(db, name) for name in (compare or [])]
    path = write_report(view, out or work_dir() / "reports" / f"{study}.html", others)
    console.print(f"report of [bold]{study}[/] ({len(view.frame)} trials, {int(view.frame['on_front'].sum())} on the front) written to {path}")


def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to bind (non-loopback needs NAS_API_TOKEN)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    storage_url: StorageOpt = None,
) -> None:
    """Serve the web UI and JSON API (OpenAPI at /docs)."""
    # deferred: the web app loads fastapi, pandas and plotly
    from reports.web import serve, settings_from_env

    settings, generated = settings_from_env(storage_url, work_dir(), host=host)
    console.print(f"serving {settings.database_url.split('@')[-1]} on http://{host}:{port}  (API docs: /docs)")
    if generated:
        console.print(f"API token for this session (set NAS_API_TOKEN to choose one): [bold]{settings.token}[/]")
    serve(settings, host=host, port=port)


def pick_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    max_: MaxOpt = None,
    min_: MinOpt = None,
    metric: MetricOpt = "accuracy",
    top: Annotated[int, typer.Option("--top", min=1, help="How many candidates to list")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    storage_url: StorageOpt = None,
) -> None:
    """Rank the feasible, fully scored, efficient candidates of a study within bounds."""
    # deferred: storage and reports load sqlalchemy, pandas and plotly
    import storage
    from reports.data import load_study
    from reports.figures import format_value

    with storage.open_database(storage_url) as db:
        view = load_study(db, study)
    result = _pick_result(view, metric, max_, min_, top)
    if json_out:
        out = result.to_dict()
        out["study"] = study
        typer.echo(json.dumps(out, indent=2))
        return
    if not result.candidates:
        console.print(f"[yellow]{describe_empty(result)}[/]")
        raise typer.Exit(1)
    bounded = [b.column for b in result.bounds]
    several_tasks = len(aggregate_weights(view.metric_columns, view.spec)) > 1
    wanted = [*([ACCURACY] if several_tasks else []), *(c for c, _ in view.cost_objectives)]
    extra = [c for c in wanted if c in result.candidates[0].values and c not in (result.metric, *bounded)]
    table = Table(title=f"{study}: best by {result.metric} ({result.direction})"
                  + (f" within {', '.join(b.describe() for b in result.bounds)}" if result.bounds else ""))
    for col in ("rank", "trial", "config", result.metric, *bounded, *extra):
        table.add_column(col, justify="left" if col == "config" else "right")
    for c in result.candidates:
        score = f"{c.score:.4f}" + (f" ± {c.stderr:.4f}" if c.stderr else "")
        table.add_row(str(c.rank), str(c.trial), c.summary, score,
                      *(format_value(k, c.values.get(k)) for k in (*bounded, *extra)))
    console.print(table)
    console.print(
        f"{result.n_efficient} efficient of {result.n_within_bounds} within bounds "
        f"({result.n_eligible} feasible and scored at top fidelity, {result.n_trials} trials)"
    )


def export_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    trial: Annotated[Optional[int], typer.Argument(help="Trial number (omit with --pick)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory to write the model to")] = None,
    use_pick: Annotated[bool, typer.Option("--pick", help="Export the best candidate of `nas pick` with --max/--min/--metric")] = False,
    max_: MaxOpt = None,
    min_: MinOpt = None,
    metric: MetricOpt = "accuracy",
    verify: Annotated[bool, typer.Option("--verify", help="Re-score the export on the study's tasks and fidelity")] = False,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="bf16 or fp32 (default: as the supernet was saved)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out directory")] = False,
    storage_url: StorageOpt = None,
) -> None:
    """Export one sub-network of a study as a standalone dense model (safetensors, config,
    tokenizer, model card)."""
    # deferred: exports load torch, storage loads sqlalchemy
    import storage
    from nas.export import export_source, export_subnet, verify_export
    from reports.data import load_study

    if out is None:
        raise NasError("give --out DIR, the directory to write the exported model to")
    if (trial is None) == (not use_pick):
        raise NasError("give a TRIAL number or --pick (with --max/--min/--metric), not both")
    with storage.open_database(storage_url) as db:
        if use_pick:
            result = _pick_result(load_study(db, study), metric, max_, min_, 1)
            if not result.candidates:
                raise NasError(describe_empty(result))
            trial = result.candidates[0].trial
            console.print(f"picked trial {trial}: {result.candidates[0].summary} ({result.metric} {result.candidates[0].score:.4f})")
        assert trial is not None
        source = export_source(db, study, trial)
    if not source.feasible:
        console.print(f"[yellow]trial {trial} violates the study's constraints; exporting it anyway[/]")
    with console.status(f"exporting trial {trial} of {study}"):
        result = export_subnet(source, out, dtype=dtype, overwrite=overwrite)
    loads = "transformers AutoModelForCausalLM and nas.load_exported" if result.format == "hf-llama" else "nas.load_exported"
    console.print(f"exported {result.subnet.summary()} ({result.params:,} params, {result.format}) to {result.path}; loads with {loads}")
    if verify:
        with console.status("re-scoring the export"):
            report = verify_export(result.path, source)
        table = Table(title=f"parity at fidelity {report.fidelity} ({report.dtype})")
        for col in ("task", "metric", "stored", "re-scored", "rel diff", "ok"):
            table.add_column(col)
        for r in report.rows:
            table.add_row(r.task, r.metric, f"{r.stored:.6f}", "–" if r.rescored is None else f"{r.rescored:.6f}",
                          "–" if r.rel_diff is None else f"{r.rel_diff:.2e}", "yes" if r.ok else "[red]NO[/]")
        console.print(table)
        (result.path / "verify.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        if not report.ok:
            raise NasError(f"the export at {result.path} does not reproduce the stored scores (see the table); do not ship it")
        console.print("[green]parity: the export reproduces the stored scores[/]")


def register(app: typer.Typer) -> None:
    """Add report, serve, pick and export to the root app."""
    app.command("report")(report_cmd)
    app.command("serve")(serve_cmd)
    app.command("pick")(pick_cmd)
    app.command("export")(export_cmd)


__all__ = ["register"]
