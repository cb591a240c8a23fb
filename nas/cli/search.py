"""`nas search SPEC.yaml`, `nas worker STUDY --storage URL`, `nas status STUDY`.

* ``nas search`` creates the study described by the spec, or resumes it (same name in the
  same database), and runs trials until the budget's ``n_trials`` are complete.
* ``nas worker`` joins a running study from another process or host: it reads the spec
  the study was created with from the database.
* ``nas status`` prints trials done/total, the Pareto front and its hypervolume.
* ``nas confirm`` scores the front and the candidates tied with it on the study's held-out
  confirmation documents (``nas search`` does it when the budget is met).

Ctrl-C once finishes the running trial and stops; twice aborts it (the trial is marked
failed and the study can be resumed).
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from nas.search.driver import RunSummary, Search, TrialOutcome
    from nas.search.status import StudyStatus

console = Console()


def quiet_optuna() -> None:
    # deferred: optuna loads only when a search command runs
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _format_values(names: tuple[str, ...] | list[str], values: tuple[float, ...] | None) -> str:
    if not values:
        return ""
    return "  ".join(f"{n}={_fmt(v)}" for n, v in zip(names, values))


def _fmt(v: float) -> str:
    if abs(v) >= 1e4:
        return f"{v:,.0f}" if abs(v) < 1e6 else f"{v / 1e6:,.3f}M"
    return f"{v:.4f}"


def run_search(search: Search, *, n_trials: int | None, wall_time_s: float | None, quiet: bool) -> RunSummary:
    """Run ``search`` with a rich progress bar and the two-stage Ctrl-C."""
    names = [o.metric for o in search.spec.objectives]
    total = search.n_trials
    interrupted = {"count": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["count"] += 1
        if interrupted["count"] == 1:
            search.request_stop()
            console.print("[yellow]stopping after the running trial (Ctrl-C again to abort it)[/]")
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}")]
    try:
        with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
            task = bar.add_task(search.name, total=total, last="", completed=search.state_counts()["COMPLETE"])

            def on_trial(o: TrialOutcome) -> None:
                tag = {"rejected": "low-fidelity only", "infeasible": "infeasible", "cached": "cache hit"}.get(o.promotion, o.fidelity or "")
                last = f"#{o.number} {o.summary} {tag} {_format_values(names, o.values)}" if o.state == "COMPLETE" else f"#{o.number} {o.state.lower()}"
                bar.update(task, completed=o.complete, last=last[:110])

            summary = search.optimize(on_trial=on_trial, max_trials=n_trials, wall_time_s=wall_time_s)
            bar.update(task, completed=summary.complete)
    finally:
        signal.signal(signal.SIGINT, previous)
    return summary


def print_summary(summary: RunSummary) -> None:
    total = "∞" if summary.n_trials is None else str(summary.n_trials)
    console.print(
        f"study [bold]{summary.study}[/]: {summary.complete}/{total} trials complete "
        f"({summary.trials_run} run now in {summary.seconds:.0f} s; {summary.stopped or 'done'})"
    )
    console.print(
        f"  this run: {summary.evaluations} evaluations ({summary.model_calls} model calls), "
        f"{summary.cache_hits} answered from the cache, {summary.infeasible} infeasible (never scored), "
        f"promotion saved {summary.full_evaluations_saved} full-fidelity evaluations"
    )


def _print_status(status: StudyStatus, *, as_json: bool) -> None:
    if as_json:
        data = {k: getattr(status, k) for k in status.__dataclass_fields__}
        data["full_evaluations_saved"] = status.full_evaluations_saved
        console.print_json(json.dumps(data, default=str))
        return
    total = "∞" if status.n_trials is None else str(status.n_trials)
    console.print(f"study [bold]{status.name}[/] on supernet {status.supernet_hash} ({status.storage})")
    console.print(
        f"trials: {status.complete}/{total} complete, {status.running} running, {status.waiting} waiting, "
        f"{status.failed} failed, {status.pruned} pruned"
        + (f", {status.unstarted} left unscored by a stopped run (queued again)" if status.unstarted else "")
        + f"; sampler {status.sampler}"
    )
    console.print(
        f"  {status.infeasible} infeasible (never scored), {status.top_fidelity} scored at the top fidelity, "
        f"{status.low_fidelity_only} stopped at a lower fidelity (full evaluations saved by promotion), "
        f"{status.cache_hit_trials} answered from the cache, {status.model_calls} model calls"
    )
    ref = ", ".join(_fmt(r) for r in status.reference)
    console.print(f"Pareto front: {len(status.front)} sub-networks; hypervolume {status.hypervolume:.4f} (reference {ref})")
    if status.confirmation:
        console.print(f"confirmation: {status.confirmation}" + (f" ({status.confirmed} candidates)" if status.confirmed else ""))
    if status.front:
        table = Table(show_header=True, header_style="bold")
        table.add_column("trial", justify="right")
        table.add_column("sub-network")
        for name, direction in zip(status.objectives, status.directions):
            table.add_column(f"{name} ({'max' if direction == 'maximize' else 'min'})", justify="right")
        for row in status.front:
            table.add_row(str(row["trial"]), row["subnet"], *(_fmt(row[n]) for n in status.objectives))
        console.print(table)


def search_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Study spec (see examples/study_*.yaml)")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="Database URL (overrides the spec's)")] = None,
    n_trials: Annotated[Optional[int], typer.Option("--max-trials", help="Run at most this many trials now")] = None,
    wall_time: Annotated[Optional[float], typer.Option("--wall-time", help="Stop starting trials after this many seconds")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    init: Annotated[bool, typer.Option("--init", help="Add the NAS tables to an existing SQLite file holding other tables")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Trials asked at once and scored in prefix-reuse order (default: the spec's sampler.batch, else a generation for nsga2/nsga3, 8 for random/qmc/grid, 1 for tpe/gp)")] = None,
) -> None:
    """Create the study of SPEC.yaml, or resume it, and run trials until its budget is met."""
    # deferred: the search loads torch and optuna
    from nas.search.spec import load_spec
    from nas.search.status import study_status
    from nas.search.study import open_search
    from storage import open_database

    quiet_optuna()
    spec = load_spec(spec_path)
    if storage:
        spec = spec.model_copy(update={"storage": storage})
    spec = _with_batch(spec, batch)
    if init:
        open_database(spec.storage, init=True).close()
    with console.status("loading the supernet and opening the study"):
        search = open_search(spec)
    summary = run_search(search, n_trials=n_trials, wall_time_s=wall_time, quiet=quiet)
    print_summary(summary)
    if summary.stopped == "budget met" and spec.confirmation is not None and spec.needs_scores:
        run_confirm(spec.name, search.db.url, loaded=search.setup.loaded, scorers=search.scorers, quiet=quiet)
    _print_status(study_status(spec.name, search.db.url), as_json=False)


def _with_batch(spec: Any, batch: int | None) -> Any:
    """``spec`` with ``sampler.batch`` set from ``--batch`` (unchanged without it)."""
    return spec if batch is None else spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"batch": batch})})


def run_confirm(study: str, storage: str | None, *, examples: int | None = None, max_tied: int | None = None,
                loaded: Any = None, scorers: Any = None, quiet: bool = False) -> Any:
    """Confirm a study's front on its held-out documents, with a progress bar; print what it did."""
    # deferred: confirmation loads torch and optuna
    from nas.search.confirm import confirm_study

    with Progress(TextColumn("[bold]confirming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("confirm", total=None)
        done = confirm_study(study, storage, examples=examples, max_tied=max_tied, loaded=loaded, scorers=scorers,
                             progress=lambda i, n: bar.update(task, completed=i, total=n))
    if done.added_split:
        console.print(f"study [bold]{study}[/] predates confirmation sets: added one of {done.examples} documents per "
                      "task that its search never reached")
    console.print(
        f"confirmed {len(done.front)} front members and {len(done.tied)} tied candidates on {done.examples} held-out "
        f"documents per task ({done.fidelity}): {done.evaluations} evaluations, {done.cache_hits} from the cache, "
        f"{done.seconds:.0f} s"
    )
    if done.unconfirmed:
        console.print(f"{len(done.unconfirmed)} more tied candidates not confirmed (confirmation.max_tied; "
                      f"`nas confirm {study} --max-tied N` adds them): trials {', '.join(map(str, done.unconfirmed))}")
    return done


def confirm_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="Database URL (default: SQLite in the work dir)")] = None,
    examples: Annotated[Optional[int], typer.Option("--examples", help="Confirmation documents per task (default: all)")] = None,
    max_tied: Annotated[Optional[int], typer.Option("--max-tied", min=0, help="Most tied candidates confirmed beside the front (default: the spec's confirmation.max_tied; unset: all)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """Score the front, and every candidate tied with it, on documents the search never saw."""
    # deferred: storage loads sqlalchemy
    from storage import require_database

    quiet_optuna()
    require_database(storage)
    run_confirm(study, storage, examples=examples, max_tied=max_tied, quiet=quiet)


def worker_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    storage: Annotated[str, typer.Option("--storage", help="Database URL the study lives in")],
    supernet: Annotated[Optional[Path], typer.Option("--supernet", help="Supernet directory on this host (default: the study's)")] = None,
    n_trials: Annotated[Optional[int], typer.Option("--max-trials", help="Run at most this many trials")] = None,
    wall_time: Annotated[Optional[float], typer.Option("--wall-time", help="Stop starting trials after this many seconds")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Trials asked at once and scored in prefix-reuse order (default: the spec's sampler.batch, else a generation for nsga2/nsga3, 8 for random/qmc/grid, 1 for tpe/gp)")] = None,
) -> None:
    """Join a running study and evaluate candidates until its budget is met."""
    # deferred: the search loads torch and optuna
    from nas.search.study import open_search, stored_spec
    from storage import require_database

    quiet_optuna()
    require_database(storage)  # joins a study: never creates a database
    spec = stored_spec(study, storage)
    if supernet is not None:
        spec = spec.model_copy(update={"supernet": str(supernet.expanduser().resolve())})
    search = open_search(_with_batch(spec, batch), worker=True)
    summary = run_search(search, n_trials=n_trials, wall_time_s=wall_time, quiet=quiet)
    print_summary(summary)


def status_cmd(
    study: Annotated[str, typer.Argument(help="Study name")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="Database URL (default: SQLite in the work dir)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Trials done/total, the Pareto front (top-fidelity results only) and its hypervolume."""
    # deferred: the status loads optuna and pandas
    from nas.search.status import study_status
    from storage import require_database

    quiet_optuna()
    require_database(storage)  # only reads: a mistyped path must not create a database
    _print_status(study_status(study, storage), as_json=as_json)


def register(app: typer.Typer) -> None:
    """Add ``search``, ``worker``, ``status`` and ``confirm`` to the root app."""
    app.command("search")(search_cmd)
    app.command("worker")(worker_cmd)
    app.command("status")(status_cmd)
    app.command("confirm")(confirm_cmd)


__all__ = ["print_summary", "quiet_optuna", "register", "run_search"]
