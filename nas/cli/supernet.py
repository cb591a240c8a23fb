"""`nas supernet import | info | verify | rehash | engine-table`: turn a pretrained model into a supernet, inspect it, re-register changed weights, time its layers in llama.cpp."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
group = typer.Typer(help="Import, inspect, verify and rehash supernets.", no_args_is_help=True)

PARITY_TOLERANCE = 1e-4


@group.command("import")
def import_cmd(
    source: Annotated[str, typer.Argument(help="smollm2-135m, gemma3-270m, hf:<dir or id> or gguf:<file>")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the supernet to")],
    calibration: Annotated[Optional[Path], typer.Option(help="Plain-text calibration file (default: the Gutenberg corpus)")] = None,
    reorder: Annotated[bool, typer.Option("--reorder/--no-reorder", help="Importance-order heads, neurons and layers")] = True,
    calibration_tokens: Annotated[int, typer.Option(help="Calibration tokens to use")] = 32_768,
) -> None:
    """Import a pretrained LLaMA-family model as an (importance-ordered) supernet."""
    # deferred: torch, transformers and the importer load only when the command runs
    from nas.importing.sources import import_source
    from nas.model.directory import save_supernet
    from nas.model.space import SearchSpace

    start = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("importing", total=1.0)
        result = import_source(
            source,
            calibration=calibration,
            reorder=reorder,
            calibration_tokens=calibration_tokens,
            progress=lambda stage, fraction: bar.update(task, description=stage, completed=fraction),
        )
        bar.update(task, description="saving")
        model = result.model
        result.provenance["import_seconds"] = round(time.perf_counter() - start, 1)
        digest = save_supernet(
            model, out, space=SearchSpace.default(model.config, model.layer_rank),
            tokenizer=result.tokenizer, provenance=result.provenance,
        )
        bar.update(task, description="saved", completed=1.0)
    console.print(f"supernet [bold]{digest}[/] written to {out} in {time.perf_counter() - start:.0f} s")
    for line in _ordering_lines(result.provenance.get("ordering_check")):
        console.print(line)


@group.command("info")
def info_cmd(
    path: Annotated[Path, typer.Argument(help="Supernet directory")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Print the config, the search space and its size, and the sizes of its extremes."""
    # deferred: torch, transformers and the importer load only when the command runs
    from nas.model.directory import load_supernet

    loaded = load_supernet(path)
    model, space = loaded.model, loaded.space
    largest, smallest = space.largest(), space.smallest()
    info = {
        "path": str(path),
        "content_hash": loaded.content_hash,
        "config": model.config.to_dict(),
        "space": space.to_dict(),
        "space_size": space.size(),
        "largest": {"config": largest.to_dict(), "params": model.num_params(largest),
                    "non_embedding_params": model.num_params(largest, embedding=False)},
        "smallest": {"config": smallest.to_dict(), "params": model.num_params(smallest),
                     "non_embedding_params": model.num_params(smallest, embedding=False)},
        "provenance": loaded.provenance,
    }
    if json_out:
        typer.echo(json.dumps(info))
        return
    cfg = model.config
    console.print(f"[bold]supernet[/] {path}  hash {loaded.content_hash}")
    console.print(
        f"  {cfg.architecture}: {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads / {cfg.n_kv_head} KV heads "
        f"(head_dim {cfg.head_dim}), d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, rope_theta {cfg.rope_theta:g}, "
        f"tied embeddings {cfg.tie_embeddings}" + (f", {cfg.n_expert} experts top-{cfg.top_k}" if cfg.n_expert else "")
    )
    console.print("[bold]search space[/]")
    for line in space.describe().splitlines():
        console.print("  " + line)
    console.print(f"  size: {space.size():,} distinct sub-networks")
    for name, sub in (("largest", largest), ("smallest", smallest)):
        console.print(
            f"[bold]{name}[/] {sub.summary()}: {model.num_params(sub) / 1e6:.1f} M params "
            f"({model.num_params(sub, embedding=False) / 1e6:.1f} M non-embedding)"
        )
    for line in _ordering_lines(loaded.provenance.get("ordering_check")):
        console.print("[bold]importance ordering[/] " + line)


def _ordering_lines(check: dict | None) -> list[str]:
    """The import's ordering check in words: held-out loss of cut sub-networks in the original
    and in importance order (a supernet imported before channels were ranked has no d_model line)."""
    if not check:
        return []
    full = f"(full model {check['full_loss']:.3f})"
    lines = [
        "held-out loss with every d_ff halved: "
        f"{check['half_ffn_loss_original_order']:.3f} in the original order, "
        f"{check['half_ffn_loss_importance_order']:.3f} importance-ordered {full}"
    ]
    if "narrow_d_model" in check:
        lines.append(
            f"held-out loss at d_model {check['narrow_d_model']}: "
            f"{check['narrow_d_model_loss_original_order']:.3f} in the original order, "
            f"{check['narrow_d_model_loss_importance_order']:.3f} importance-ordered {full}"
        )
    return lines


@group.command("verify")
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="Supernet directory")],
    against: Annotated[str, typer.Option("--against", help="The source it was imported from (as for import)")],
    tokens: Annotated[int, typer.Option(help="Tokens of English text to compare on")] = 256,
) -> None:
    """Compare the supernet's full-model logits with transformers on the source weights (fp32).

    Prints one JSON line with max_abs_logit_diff; exits 1 above 1e-4.
    """
    # deferred: torch, transformers and the importer load only when the command runs
    import torch

    from nas.importing import importance
    from nas.importing.sources import load_hf
    from nas.model.directory import load_supernet

    loaded = load_supernet(path, dtype="fp32")
    hf_model, tokenizer, _ = load_hf(against)
    text = importance.held_out_text(None) if importance.has_corpus() else "The quick brown fox jumps over the lazy dog. " * 64
    # as the model is run: with the BOS a tokenizer adds (Gemma's activations blow up without it)
    ids = tokenizer(text)["input_ids"][:tokens]
    batch = torch.tensor([ids])
    with torch.no_grad():
        ours = loaded.model(batch).float()
        theirs = hf_model(batch).logits.float()
    diff = float((ours - theirs).abs().max())
    ok = diff <= PARITY_TOLERANCE
    typer.echo(json.dumps({"max_abs_logit_diff": diff, "tokens": len(ids), "tolerance": PARITY_TOLERANCE, "ok": ok}))
    if not ok:
        raise typer.Exit(1)


@group.command("rehash")
def rehash_cmd(
    path: Annotated[Path, typer.Argument(help="Supernet directory whose weights were changed on purpose")],
) -> None:
    """Register changed weights as a new supernet: recompute the content hash from the
    weights now in DIR and record it in DIR/supernet.json (results stored under the old
    hash stay with the old model)."""
    # deferred: torch loads only when the command runs
    from nas.model.directory import rehash_supernet

    old, new = rehash_supernet(path)
    if old == new:
        console.print(f"{path}: the weights match the recorded content hash {new}; nothing to do")
    else:
        console.print(f"{path}: content hash {old} -> [bold]{new}[/]; studies on it start afresh (no cached results of {old})")


@group.command("engine-table")
def engine_table_cmd(
    path: Annotated[Path, typer.Argument(help="Supernet directory")],
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Study spec: time its space and formats")] = None,
    quant: Annotated[Optional[str], typer.Option(help="Comma-separated formats (default: the spec's, else bf16,q8_0,q4_0)")] = None,
    prompt: Annotated[int, typer.Option(help="Prefill tokens timed")] = 128,
    repeats: Annotated[int, typer.Option(help="Timed runs per file (median)")] = 3,
    calibration: Annotated[int, typer.Option(help="Whole sub-networks timed per format for the calibration line")] = 4,
    check: Annotated[int, typer.Option(help="Held-out random sub-networks timed per format, not fitted (held-out MAPE)")] = 2,
    threads: Annotated[int, typer.Option(help="llama.cpp threads")] = 1,
    clock: Annotated[str, typer.Option(help="process (CPU time, 1 thread; robust on a shared CPU) or wall")] = "process",
    out: Annotated[Optional[Path], typer.Option(help="Table file (default: NAS_WORK_DIR/engine_latency_tables.json)")] = None,
) -> None:
    """Time the space's layer variants in llama.cpp on this device, in each weight format, and
    store the lookup table that predicted_engine_latency_ms objectives and constraints use."""
    # deferred: torch, gguf and llama.cpp load only when the command runs
    from evaluators.engine_table import ENGINE_TABLE_FILE
    from nas.export.engine_table import EngineTableOptions, build_engine_table, table_inputs
    from nas.paths import work_dir

    formats = [q.strip() for q in quant.split(",") if q.strip()] if quant else None
    loaded, space, fmts = table_inputs(path, spec_path=spec, quant=formats)
    opts = EngineTableOptions(prompt_len=prompt, repeats=repeats, calibration=calibration, checks=check, threads=threads,
                              clock=clock)
    with console.status(f"timing {path} in llama.cpp ({', '.join(fmts)})"):
        table = build_engine_table(loaded, space, fmts, options=opts)
    target = out or work_dir() / ENGINE_TABLE_FILE
    table.save(target)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    console.print(f"engine latency table for {table.fingerprint}: {sum(len(v) for v in table.layer_ms.values())} layer "
                  f"timings in {', '.join(table.formats)}, {len(table.calibration)} calibration models (leave-one-out "
                  f"MAPE {pct(table.loo_mape)}), {len(table.checks)} held-out (MAPE {pct(table.check_mape)}), "
                  f"{table.build_s:.0f} s -> {target}")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="supernet")
