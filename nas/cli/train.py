"""`nas train CONFIG.yaml`: train (or heal) a once-for-all supernet with a live progress bar.

The training itself lives in :mod:`nas.training`; this module reads the YAML, applies the
command-line overrides, draws the rich progress bar (loss per arm, tokens/s, ETA) and
prints the summary. Under ``torchrun`` only rank 0 draws.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nas.errors import NasError

console = Console()


def _arm_text(arms: dict) -> str:
    """``L 3.41 | S 0.21 | R 0.12`` — each arm's objective (CE for the largest, KL for students)."""
    parts, randoms = [], []
    for name, s in arms.items():
        if name.startswith("random"):
            randoms.append(s.loss)
        else:
            parts.append(f"{name[0].upper()} {s.loss:.3f}")
    if randoms:
        parts.append(f"R {sum(randoms) / len(randoms):.3f}")
    return " | ".join(parts)


def train_cmd(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); see examples/train_tiny.yaml")],
    steps: Annotated[Optional[int], typer.Option(help="Override the budget: optimiser steps")] = None,
    tokens: Annotated[Optional[int], typer.Option(help="Override the budget: training tokens")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Override the output (supernet) directory")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the seed")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT")] = False,
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint file")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete OUT's old checkpoints and start over")] = False,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
) -> None:
    """Train a supernet with the sandwich rule and in-place distillation (or heal an imported one)."""
    # deferred: torch and the trainer load only when training runs (`nas --help` stays fast)
    import torch

    # deferred: torch and the trainer load only when training runs (`nas --help` stays fast)
    from nas.training import EvalReport, StepReport, list_checkpoints, load_train_config, train

    if resume and resume_from is not None:
        raise NasError("give --resume or --resume-from, not both")
    if fresh and (resume or resume_from is not None):
        raise NasError("--fresh starts over; it cannot be combined with --resume")
    cfg = load_train_config(config).with_overrides(
        steps=steps, tokens=tokens, out=None if out is None else str(out), seed=seed
    )
    existing = list_checkpoints(cfg.out)
    if existing and not (resume or resume_from or fresh):
        raise NasError(
            f"{cfg.out} already has training checkpoints (latest {existing[-1].name}); "
            "resume it (--resume) or start over (--fresh), or choose another --out"
        )
    if threads is not None:
        torch.set_num_threads(threads)
    total = cfg.total_steps()
    main = int(os.environ.get("RANK", "0")) == 0
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[arms]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=quiet or not main, transient=False) as bar:
        task = bar.add_task("train", total=total, arms="", speed="")

        def on_step(r: StepReport) -> None:
            bar.update(task, completed=r.step, arms=_arm_text(r.arms), speed=f"{r.tokens_per_s:,.0f} tok/s")

        def on_eval(r: EvalReport) -> None:
            losses = "  ".join(f"{k} {v:.3f}" for k, v in r.val_loss.items())
            bar.console.print(f"step {r.step}: validation loss  {losses}")

        result = train(
            cfg,
            resume="latest" if resume else resume_from,
            fresh=fresh,
            on_step=on_step,
            on_eval=on_eval,
        )
    if main:
        console.print(
            f"supernet [bold]{result.content_hash}[/] written to {result.out}: {result.steps} steps, "
            f"{result.tokens:,} tokens, {result.train_flops:.3g} training FLOP, {result.wall_time_s:.0f} s"
            + (f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else "")
        )
        console.print("logs: " + str(Path(result.out) / "train" / "log.jsonl"))


def register(app: typer.Typer) -> None:
    """Add ``nas train`` to the root app."""
    app.command("train")(train_cmd)


__all__ = ["register", "train_cmd"]
