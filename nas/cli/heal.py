"""`nas heal SUPERNET --out DIR`: heal an imported supernet by elastic distillation from its
frozen full model, with a progress bar (tokens, loss of the largest and smallest
sub-network, time left).

The heal itself is :mod:`nas.training.heal` (a thin layer over ``nas train``'s trainer);
this module parses the options, draws the bar and prints the summary. :func:`heal_with_bar`
is shared with ``nas demo --heal`` and ``nas export --heal``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from time import monotonic, perf_counter  # not `time`: the command's --time option is called so
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nas.cli.train import _arm_text
from nas.errors import NasError
from nas.paths import work_dir

if TYPE_CHECKING:
    from nas.export.source import ExportSource
    from nas.model.directory import LoadedSupernet
    from nas.training.heal import HealBudget, HealPlan, HealResult

console = Console()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def heal_with_bar(plan: HealPlan, *, fresh: bool = False, quiet: bool = False, label: str = "heal") -> HealResult:
    """Run ``plan`` under a rich progress bar: tokens done of the budget, the training loss of
    the largest (L) and smallest (S) sub-network (KL to the frozen teacher; R: the random
    arms), tokens/s, elapsed and time left; each held-out evaluation prints a line."""
    # deferred: the trainer loads torch
    from nas.training import EvalReport, StepReport
    from nas.training.heal import run_heal

    total = plan.tokens
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.fields[tokens]}"),
        TextColumn("{task.fields[arms]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("left {task.fields[left]}"),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(label, total=total, tokens=f"0/{total:,} tokens", arms="", speed="", left="?")

        first: list[float] = []  # wall clock and training seconds at the first step seen

        def on_step(r: StepReport) -> None:
            # the steps' own ETA, scaled by the share of wall time the evaluations and checkpoints add
            now = monotonic()
            if not first:
                first.extend((now, r.elapsed_s))
            trained = r.elapsed_s - first[1]
            overhead = max(1.0, (now - first[0]) / trained) if trained > 0 else 1.0
            bar.update(task, completed=r.tokens, tokens=f"{r.tokens:,}/{total:,} tokens", arms=_arm_text(r.arms),
                       speed=f"{r.tokens_per_s:,.0f} tok/s", left=_clock(r.eta_s * overhead))

        def on_eval(r: EvalReport) -> None:
            losses = "  ".join(f"{k} {v:.3f}" for k, v in r.val_loss.items())
            bar.console.print(f"step {r.step}: held-out loss  {losses}")

        return run_heal(plan, fresh=fresh, on_step=on_step, on_eval=on_eval)


def budget_of(tokens: str | None, time: str | None) -> Any:
    """The :class:`~nas.training.heal.HealBudget` of ``--tokens``/``--time`` (None: the default)."""
    # deferred: the trainer loads torch
    from nas.training.heal import HealBudget, parse_duration, parse_tokens

    if tokens is not None and time is not None:
        raise NasError("give --tokens or --time, not both")
    if tokens is not None:
        return HealBudget(tokens=parse_tokens(tokens))
    if time is not None:
        return HealBudget(seconds=parse_duration(time))
    return None


def heal_cmd(
    supernet: Annotated[Path, typer.Argument(help="Supernet directory to heal (e.g. work/smollm2 from `nas supernet import`)")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the healed supernet (and its checkpoints)")],
    tokens: Annotated[Optional[str], typer.Option("--tokens", help="Budget in training tokens: 500k, 2M, 2e6")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Budget in wall time (steps, held-out evaluations, checkpoints, "
                                                               "the timing run): 90s, 30m, 1h (default 10m on a CPU, 1h on a GPU)")] = None,
    space: Annotated[Optional[Path], typer.Option("--space", help="Search space YAML to heal over (default: the supernet's own)")] = None,
    teacher: Annotated[str, typer.Option("--teacher", help="parent: the frozen full model of an imported supernet; "
                                                           "self: a supernet trained from scratch distils from its own")] = "parent",
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Training text (files, folders, hf:NAME; repeatable; "
                                                                     "default corpus/gutenberg under NAS_DATA_DIR)")] = None,
    text_field: Annotated[Optional[str], typer.Option("--text-field", help="Field holding the text in .jsonl --data files "
                                                                            "(default: text)")] = None,
    max_chars: Annotated[Optional[int], typer.Option(help="Characters of the text read (default 4M on a CPU, all on a GPU)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per step (default 4 on a CPU, 32 on a GPU)")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per sequence (default 256 on a CPU, 1024 on a GPU)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 1e-4)")] = None,
    n_random: Annotated[Optional[int], typer.Option(help="Random sub-networks per step besides the largest and smallest")] = None,
    arm_draw: Annotated[Optional[str], typer.Option(
        "--arm-draw", help="How random arms are drawn: uniform (each layer's sizes independently: draws pile up at "
                           "the middle of the space) or spread (one size level a draw: they cover the range)")] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option(help="Checkpoints kept (of 10 over the run; default 2)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted heal in --out (same settings)")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the interrupted heal in --out and start over")] = False,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
) -> None:
    """Heal an imported supernet: every sub-network of the space distils from the frozen full model."""
    # deferred: torch and the trainer load only when healing runs (`nas --help` stays fast)
    import torch

    from nas.training.heal import heal_settings, plan_heal

    if resume and fresh:
        raise NasError("--fresh starts over; it cannot be combined with --resume")
    if threads is not None:
        torch.set_num_threads(threads)
    budget = budget_of(tokens, time)
    settings = heal_settings(device, corpus=data, text_field=text_field, max_chars=max_chars, batch_size=batch_size, seq_len=seq_len, lr=lr,
                             n_random=n_random, arm_draw=arm_draw, keep_checkpoints=keep_checkpoints)
    if budget is None and not resume:
        budget = settings.budget
    if budget is not None and budget.seconds is not None and not resume:
        console.print(f"timing 3 heal steps, an evaluation and a checkpoint to fit the heal in --time {budget.describe()} ...")
    plan = plan_heal(supernet, out, budget=budget, space=space, settings=settings, teacher=teacher, resume=resume,
                     fresh=fresh)
    rec = plan.record
    console.print(
        f"healing [bold]{supernet}[/] ({rec['parent_hash']}) into {out}: {plan.steps} steps of "
        f"{plan.config.batch_size} x {plan.config.seq_len} tokens = {plan.tokens:,} tokens"
        + (f" (~{rec['timing']['step_s']:.2f} s a step, {rec['timing']['eval_s']:.1f} s an evaluation)"
           if rec.get("timing") else "")
        + f" on {settings.device}, teacher: the frozen full model of {'its parent' if teacher == 'parent' else 'itself'}"
    )
    start = perf_counter()
    result = heal_with_bar(plan, fresh=fresh, quiet=quiet)
    losses = ", ".join(f"{k} {v:.3f}" for k, v in result.val_loss.items())
    console.print(
        f"healed supernet [bold]{result.content_hash}[/] written to {result.out}: {result.tokens:,} tokens in "
        f"{perf_counter() - start:.0f} s ({result.wall_time_s:.0f} s of steps); held-out loss {losses}"
        + (f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else "")
    )
    console.print(f"search it: give `supernet: {result.out}` in a study spec; compare: nas report HEALED --compare UNHEALED")


@dataclass(frozen=True)
class HealedPick:
    """A picked sub-network healed for export: the healed supernet whose weights are
    written, the card's ``heal`` record, and the trial with its healed scores (for --verify)."""
    supernet: LoadedSupernet
    record: dict[str, Any]
    verify_source: ExportSource


def heal_pick(source: ExportSource, budget: HealBudget, text: str, *, corpus: list[str] | None = None,
              text_field: str | None = None, quiet: bool = False) -> HealedPick:
    """``nas export --heal``: distil ``source``'s sub-network from its supernet's frozen full
    model (a one-member space: every step trains just that sub-network), then score it before
    and after on the study's documents and continue the fixed prompts with both. The heal
    is kept in the work dir (``heal/export/...``): a rerun reuses it, an interrupted one resumes."""
    # deferred: healing loads torch, the trainer and the scorers
    from nas.export.heal import continuations, heal_fidelity, heal_record, healed_scores, score_changes
    from nas.model.directory import load_supernet
    from nas.training import list_checkpoints
    from nas.training.heal import HEAL_FILE, heal_settings, plan_heal, subnet_space, teacher_kind

    if not source.supernet_path or not Path(source.supernet_path).is_dir():
        raise NasError(f"the supernet of study {source.study!r} is not at {source.supernet_path or '(no path stored)'}; "
                       "--heal needs its weights")
    loaded = load_supernet(source.supernet_path)
    if loaded.content_hash != source.supernet_hash:
        raise NasError(f"the supernet at {loaded.path} has content hash {loaded.content_hash}, but study "
                       f"{source.study!r} was run on {source.supernet_hash}; point the study at the right supernet")
    space = subnet_space(loaded, source.subnet)
    try:
        teacher = teacher_kind(loaded, "parent")
    except NasError:  # trained from scratch: the pick distils from the supernet's own full model
        teacher = "self"
    settings = heal_settings(n_random=0, corpus=corpus or None, text_field=text_field)
    label = f"{budget.tokens}tok" if budget.tokens is not None else f"{int(budget.seconds or 0)}s"
    # the settings in the folder's name: a heal on other text (or another device's dtype) is not reused
    label += "-" + hashlib.sha256(json.dumps(settings.resumable(), sort_keys=True).encode()).hexdigest()[:8]
    out = work_dir() / "heal" / "export" / f"{source.supernet_hash}-{source.subnet.hash}-{label}"
    done = (out / "supernet.json").is_file() and "heal" in load_supernet(out, verify=False).provenance
    if done:
        console.print(f"healed sub-network found in {out} (delete it to heal again)")
    else:
        resume = bool(list_checkpoints(out)) and (out / "train" / HEAL_FILE).is_file()
        plan = plan_heal(loaded.path, out, budget=None if resume else budget, space=space,
                         settings=settings, teacher=teacher, resume=resume, fresh=not resume, loaded=loaded)
        console.print(f"healing {source.subnet.summary()} from the full model of {source.supernet_hash}: {plan.steps} "
                      f"steps, {plan.tokens:,} tokens" + (" (resumed)" if resume else ""))
        heal_with_bar(plan, fresh=not resume, quiet=quiet, label="heal the pick")
    healed = load_supernet(out)
    fidelity = heal_fidelity(source)
    changes = []
    if fidelity is not None and (source.scores or source.confirmed):
        dtype = source.spec.get("dtype")
        with console.status(f"scoring {source.subnet.summary()} before and after healing ({fidelity})"):
            changes = score_changes(source, load_supernet(loaded.path, dtype=dtype), load_supernet(out, dtype=dtype), fidelity)
    with console.status("greedy continuations before and after"):
        texts = continuations(loaded, healed, source.subnet, loaded.load_tokenizer())
    record = heal_record(healed.provenance["heal"], changes, texts, budget=text, healed_hash=healed.content_hash, z=source.z)
    if changes:
        table = Table(title=f"before and after healing, fidelity {changes[0].fidelity} (± {source.z:g} se; change paired)")
        for col in ("task", "metric", "before", "after", "change"):
            table.add_column(col, justify="left" if col in ("task", "metric") else "right")
        for c in changes:
            pm = (lambda se: "" if se is None else f" ± {source.z * se:.4f}")
            table.add_row(c.task, c.metric, f"{c.before:.4f}{pm(c.before_stderr)}", f"{c.after:.4f}{pm(c.after_stderr)}",
                          f"{c.diff:+.4f}{pm(c.diff_stderr)}")
        console.print(table)
    for t in texts:
        console.print(f"{t['prompt']!r}\n  before: {t['before']!r}\n  after:  {t['after']!r}")
    verify_source = replace(source, scores=healed_scores(source, changes), fidelity=fidelity)
    return HealedPick(supernet=healed, record=record, verify_source=verify_source)


def register(app: typer.Typer) -> None:
    """Add ``nas heal`` to the root app."""
    app.command("heal")(heal_cmd)


__all__ = ["HealedPick", "budget_of", "heal_cmd", "heal_pick", "heal_with_bar", "register"]
