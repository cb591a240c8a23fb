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
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nas.errors import NasError
from nas.front import aggregate_weights, resolve_column
from nas.metrics import ACCURACY
from nas.paths import work_dir
from nas.pick import Bound, describe_empty

console = Console()
err_console = Console(stderr=True)
_STORAGE_HELP = "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB (default: sqlite in NAS_WORK_DIR)"
StorageOpt = Annotated[Optional[str], typer.Option("--storage", envvar="NAS_STORAGE", help=_STORAGE_HELP)]
MaxOpt = Annotated[Optional[list[str]], typer.Option("--max", help="Upper bound NAME=VALUE (repeatable), e.g. params=50e6")]
MinOpt = Annotated[Optional[list[str]], typer.Option("--min", help="Lower bound NAME=VALUE (repeatable)")]
MetricOpt = Annotated[str, typer.Option("--metric", help="Rank by this: accuracy, a task, task/metric or a cost")]


def _pick_result(view: Any, metric: str, max_: list[str] | None, min_: list[str] | None, top: int | None,
                 db: Any = None) -> Any:
    """Parse --max/--min and pick within ``view``; a bound given twice for one column is refused."""
    # deferred: reports loads pandas, sqlalchemy and plotly; `nas --help` stays fast
    from reports.data import pick_in_view

    seen: dict[tuple[str, str], str] = {}
    bounds = []
    for kind, texts in (("max", max_ or []), ("min", min_ or [])):
        for text in texts:
            bound = Bound.parse(text, kind)  # type: ignore[arg-type]
            column = resolve_column(bound.column, view.frame) or bound.column
            earlier = seen.get((kind, column))
            if earlier is not None:
                raise NasError(
                    f"--{kind} {text!r}: {column} is already bounded by --{kind} {earlier!r}; give each bound once"
                )
            seen[(kind, column)] = text
            bounds.append(bound)
    return pick_in_view(view, metric, bounds, top, db=db)


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

    with storage.open_database(storage_url, create=False) as db:
        view = load_study(db, study)
        others = [load_study(db, name) for name in (compare or [])]
    path = write_report(view, out or work_dir() / "reports" / f"{study}.html", others)
    console.print(f"report of [bold]{study}[/] ({len(view.frame)} trials, {int(view.frame['on_front'].sum())} on the front) written to {path}")


def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to bind (non-loopback needs NAS_API_TOKEN)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    supernet_dir: Annotated[Optional[list[Path]], typer.Option(
        "--supernet-dir", help="A directory whose supernets API-launched studies may use (repeatable; the work "
                               "and data dirs always are; also NAS_SUPERNET_DIRS)")] = None,
    storage_url: StorageOpt = None,
) -> None:
    """Serve the web UI and JSON API (OpenAPI at /docs)."""
    # deferred: the web app loads fastapi, pandas and plotly
    from reports.web import serve, settings_from_env

    settings, generated = settings_from_env(storage_url, work_dir(), host=host, supernet_dirs=supernet_dir or ())
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

    with storage.open_database(storage_url, create=False) as db:
        view = load_study(db, study)
        result = _pick_result(view, metric, max_, min_, top, db=db)
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
    which = "confirmed on held-out documents" if result.confirmed else "search documents"
    table = Table(title=f"{study}: best by {result.metric} ({result.direction}, {which})"
                  + (f" within {', '.join(b.describe() for b in result.bounds)}" if result.bounds else ""))
    score_col = f"{result.metric} ± {result.z:g} se"
    columns = ["rank", "trial", "config", score_col, *(["search score"] if result.confirmed else []), "tied with",
               *bounded, *extra]
    for col in columns:
        table.add_column(col, justify="left" if col == "config" else "right")
    for c in result.candidates:
        score = f"{c.score:.4f}" + (f" ± {c.interval:.4f}" if c.interval else "")
        search = [f"{c.search_score:.4f}" if c.search_score is not None else "–"] if result.confirmed else []
        table.add_row(str(c.rank), str(c.trial), c.summary, score, *search, f"#{c.tied_with}" if c.tied_with else "",
                      *(format_value(k, c.values.get(k)) for k in (*bounded, *extra)))
    console.print(table)
    console.print(
        f"{result.n_efficient} efficient of {result.n_within_bounds} within bounds "
        f"({result.n_eligible} feasible and scored at top fidelity, {result.n_trials} trials)"
    )
    tied = [c for c in result.candidates if c.tied_with]
    if tied:
        console.print(f"{len(tied)} candidate(s) are statistically tied with #1 (the paired interval of the "
                      "difference covers 0): choose among them on cost")


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
    fmt: Annotated[str, typer.Option("--format", help="auto (transformers or nas-dense safetensors) or gguf (llama.cpp)")] = "auto",
    quant: Annotated[Optional[str], typer.Option("--quant", help="GGUF weights: f32, bf16, q8_0, q5_1, q5_0, q4_1, q4_0")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export at --out (as a whole)")] = False,
    heal: Annotated[Optional[str], typer.Option(
        "--heal", help="Distil the sub-network from the supernet's full model before writing it, for a budget of "
                       "tokens (500k, 2M) or time (90s, 10m); the card gets its scores and continuations before and after")] = None,
    heal_data: Annotated[Optional[list[str]], typer.Option(
        "--heal-data", help="Text to heal on (files, folders; repeatable; default corpus/gutenberg under NAS_DATA_DIR)")] = None,
    heal_text_field: Annotated[Optional[str], typer.Option(
        "--heal-text-field", help="Field holding the text in .jsonl --heal-data files (default: text)")] = None,
    storage_url: StorageOpt = None,
) -> None:
    """Export one sub-network of a study as a standalone dense model (safetensors, config,
    tokenizer, model card)."""
    # deferred: exports load torch, storage loads sqlalchemy
    import storage
    from nas.export import export_source, verify_export
    from reports.data import load_study
    from reports.web.security import export_target_problem

    if out is None:
        raise NasError("give --out DIR, the directory to write the exported model to")
    if (trial is None) == (not use_pick):
        raise NasError("give a TRIAL number or --pick (with --max/--min/--metric), not both")
    gguf = _gguf_options(fmt, quant, dtype, verify)
    budget = None
    if heal is not None:
        # deferred: the trainer loads torch
        from nas.training.heal import HealBudget

        budget = HealBudget.parse(heal)
        if gguf is not None:
            raise NasError("--heal writes a safetensors export; export the healed model without --format gguf")
    # a GGUF may join an earlier export of the same sub-network (export_gguf checks that it is one)
    problem = export_target_problem(out, overwrite=overwrite or (gguf is not None and (out / "nas_export.json").is_file()))
    if problem is not None:
        raise NasError(problem.replace("pass overwrite", "pass --overwrite"))
    with storage.open_database(storage_url, create=False) as db:
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
    if gguf is not None:
        _export_gguf(source, out, gguf or source.subnet.quant or "f32", verify=verify, overwrite=overwrite)
        return
    if source.subnet.quant:
        console.print(f"[yellow]trial {trial} was scored with {source.subnet.quant} weights; this export holds the "
                      f"unquantised weights (deploy what was scored with --format gguf)[/]")
    healed = None
    if budget is not None:
        # deferred: healing loads torch, the trainer and the scorers
        from nas.cli.heal import heal_pick

        healed = heal_pick(source, budget, heal, corpus=heal_data, text_field=heal_text_field)
    with console.status(f"exporting trial {trial} of {study}"):
        result = _export_beside(source, out, dtype=dtype, healed=None if healed is None else healed.supernet,
                                heal=None if healed is None else healed.record)
    loads = "transformers AutoModelForCausalLM and nas.load_exported" if result.format == "hf-llama" else "nas.load_exported"
    console.print(f"exported {result.subnet.summary()} ({result.params:,} params, {result.format}) to {result.path}; loads with {loads}")
    if verify:
        with console.status("re-scoring the export"):
            # a healed export is checked against the healed sub-network's own scores
            report = verify_export(result.path, source if healed is None else healed.verify_source)
        table = Table(title=f"parity at fidelity {report.fidelity} ({report.dtype})")
        for col in ("task", "metric", "stored", "re-scored", "rel diff", "ok"):
            table.add_column(col)
        for r in report.rows:
            table.add_row(r.task, r.metric, f"{r.stored:.6f}", "–" if r.rescored is None else f"{r.rescored:.6f}",
                          "–" if r.rel_diff is None else f"{r.rel_diff:.2e}", "yes" if r.ok else "[red]NO[/]")
        console.print(table)
        (result.path / "verify.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        if not report.ok:
            err_console.print(f"[red]the export at {result.path} does not reproduce the stored scores (see the table); do not ship it[/]")
            raise typer.Exit(1)
        console.print("[green]parity: the export reproduces the stored scores[/]")


def _gguf_options(fmt: str, quant: str | None, dtype: str | None, verify: bool) -> str | None:
    """The GGUF quantisation asked for (None: a safetensors export; "": the trial's own format),
    checked before any work."""
    # deferred: the CLI imports its commands' libraries when they run
    from nas.model.quant import parse_quant

    if fmt not in ("auto", "gguf"):
        raise NasError(f"--format {fmt!r} is not a format; use auto (safetensors) or gguf")
    if fmt != "gguf":
        if quant is not None:
            raise NasError("--quant applies to GGUF exports; add --format gguf")
        return None
    if dtype is not None:
        raise NasError("--dtype applies to safetensors exports; a GGUF's weights are set by --quant")
    name = parse_quant(quant).name if quant else ""  # "": the trial's own format (f32 if it has none)
    if verify:
        # deferred: exports load torch
        from nas.export.engine import require_llama_cpp

        require_llama_cpp()  # before any work: --verify runs the export in llama.cpp
    return name


def _export_gguf(source: Any, out: Path, quant: str, *, verify: bool, overwrite: bool) -> None:
    """``nas export --format gguf``: write the GGUF; with --verify, run it in llama.cpp against ours."""
    # deferred: exports load torch
    from nas.export.engine import engine_latency, verify_gguf
    from nas.export.gguf import export_gguf, record_verification
    from nas.model.directory import load_supernet

    supernet = load_supernet(source.supernet_path) if source.supernet_path and Path(source.supernet_path).is_dir() else None
    with console.status(f"exporting trial {source.trial} of {source.study} as GGUF ({quant})"):
        result = export_gguf(source, out, quant=quant, overwrite=overwrite, supernet=supernet)
    console.print(f"exported {result.subnet.summary()} ({result.params:,} params) to {result.file} "
                  f"({quant}, llama.cpp architecture {result.architecture}, {result.file_bytes:,} bytes)")
    if not verify:
        return
    assert supernet is not None
    with console.status("running the export in llama.cpp"):
        fake = None
        if quant != "f32":
            # deferred: exports load torch
            from nas.model.fakequant import fake_quantized

            fake = fake_quantized(supernet.model.float(), quant)
        report = verify_gguf(result.file, supernet.model.float(), source.subnet, quant=quant,
                             tokenizer=supernet.load_tokenizer(), fake_quant=fake)
    with console.status("timing the export in llama.cpp"):
        latency = engine_latency(result.file, prompt_len=128, decode_tokens=32, repeats=3)
    record_verification(out, quant, {**report.to_dict(), "engine_latency": latency.to_dict()})
    console.print(f"engine_latency_ms {latency.prefill_ms:.1f} (prefill of 128 tokens, median of 3), decode "
                  f"{latency.decode_tokens_per_s:.1f} tokens/s on {latency.device}")
    if quant == "f32":
        console.print(f"llama.cpp vs ours on {report.n_tokens} tokens: max |log-prob diff| {report.logprob_max_abs_diff:.2e} "
                      f"(tolerance 1e-3), greedy 32 tokens {'identical' if report.greedy_identical else 'DIFFERENT'}")
    else:
        console.print(f"llama.cpp ({quant}) vs ours (unquantised) on {report.n_tokens} tokens: mean KL {report.kl_mean:.4f}, "
                      f"top-1 agreement {report.top1_agree:.3f}; vs our {quant} scoring: mean KL {report.kl_vs_fake_quant:.4f}, "
                      f"top-1 agreement {report.top1_vs_fake_quant:.3f}")
    if report.tokenizer_agrees is False:
        console.print("[yellow]llama.cpp tokenises the check text differently from our tokenizer (see README)[/]")
    if not report.ok:
        err_console.print(f"[red]{result.file} does not reproduce our model in llama.cpp; do not ship it[/]")
        raise typer.Exit(1)
    console.print("[green]verified in llama.cpp[/]")


def _export_beside(source: Any, out: Path, *, dtype: str | None, healed: Any = None, heal: dict | None = None) -> Any:
    """Export into a new directory beside ``out``, then rename it into place: an earlier
    export at ``out`` is replaced as a whole (moved aside, then deleted), never merged, and
    a failed export leaves it untouched. ``healed``/``heal``: see ``export_subnet``."""
    # deferred: exports load torch
    from nas.export import export_subnet

    out = out.expanduser().absolute()
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return export_subnet(source, out, dtype=dtype, overwrite=True, healed=healed, heal=heal)
    tag = uuid.uuid4().hex[:8]
    staging, old = out.parent / f".{out.name}.new-{tag}", out.parent / f".{out.name}.old-{tag}"
    try:
        result = export_subnet(source, staging, dtype=dtype, healed=healed, heal=heal)
        out.rename(old)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return replace(result, path=out)


def register(app: typer.Typer) -> None:
    """Add report, serve, pick and export to the root app."""
    app.command("report")(report_cmd)
    app.command("serve")(serve_cmd)
    app.command("pick")(pick_cmd)
    app.command("export")(export_cmd)


__all__ = ["register"]
