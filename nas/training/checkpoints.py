"""Training checkpoints: list, save and load them, and refuse a resume that would not be exact.

Training is exactly resumable: a checkpoint holds the model, the optimiser, the LR
scheduler, the sub-network sampler's RNG state and the data position (samples
consumed; batches are a pure function of it, see :class:`nas.training.data.TokenBatches`), so a
run killed and resumed ends with the same weights as an uninterrupted one. Checkpoints
live in ``OUT/train/checkpoints/step_<step>.pt`` (written atomically; only the newest
``keep_checkpoints`` stay) and also record what must match on resume: the supernet
config, layer rank, search space, tokenizer, corpus, seed, batch size, sequence length, dtype
and schedule (the sandwich's and ERNIE's settings).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.training.config import TrainConfig

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint saves: the live training objects and the run's counters, with
    the fingerprints of the tokenizer and the corpus it was trained on."""
    model: Supernet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rng: random.Random  # the sub-network sampler's
    space: SearchSpace
    step: int
    samples: int  # consumed so far: the data position
    tokens: int
    train_flops: float
    elapsed_s: float
    tok_fp: str
    corpus_key: str


def checkpoint_dir(out: str | Path) -> Path:
    """Where the run writing the supernet ``out`` keeps its checkpoints."""
    return Path(out) / "train" / "checkpoints"


def list_checkpoints(out: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(out)
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise NasError(f"checkpoint {path} cannot be read ({exc}); resume from an earlier one") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NasError(f"{path} is not a training checkpoint of this tool (format {CHECKPOINT_FORMAT})")
    return state


def save_checkpoint(out: str | Path, state: TrainingState, *, config: TrainConfig) -> Path:
    """Write ``state`` as the checkpoint of its step (atomically) and delete all but the
    newest ``config.keep_checkpoints``. Returns the new checkpoint's path."""
    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    version, internal, gauss = state.rng.getstate()
    record = {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "samples": state.samples,
        "tokens": state.tokens,
        "train_flops": state.train_flops,
        "elapsed_s": state.elapsed_s,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "dtype": config.dtype,
        "schedule": _schedule(config),
        "optim": _optim(config),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "sample_rng": [version, list(internal), gauss],
        "supernet_config": state.model.config.to_dict(),
        "layer_rank": list(state.model.layer_rank),
        "space": state.space.to_dict(),
        "tokenizer": state.tok_fp,
        "corpus": state.corpus_key,
    }
    path = folder / f"step_{state.step:08d}.pt"
    tmp = folder / f".{path.name}.tmp"
    torch.save(record, tmp)
    tmp.replace(path)
    for old in list_checkpoints(out)[: -config.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def config_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The first few keys on which two config dicts differ, as ``key: a vs b``."""
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")


def _sections(config: TrainConfig, *names: str) -> dict[str, Any]:
    """The settings of ``config``'s sections ``names``, flat (``sandwich.n_random``, ``optim.lr``, ...)."""
    return {f"{name}.{k}": v for name in names for k, v in getattr(config, name).model_dump(mode="json").items()}


def _schedule(config: TrainConfig) -> dict[str, Any]:
    """What decides a step's arms and how they learn: the schedule and its two sections."""
    return {"schedule": config.schedule} | _sections(config, "sandwich", "ernie")


def _optim(config: TrainConfig) -> dict[str, Any]:
    """The optimiser and LR-schedule settings: a resume restores the optimiser's and
    scheduler's state, so a run that differs in them would silently mix two settings."""
    return _sections(config, "optim")


#: settings added after checkpoints recorded their schedule, at the value every earlier run had
LEGACY_DEFAULTS = {"sandwich.arm_draw": "uniform"}


def check_compatible(
    state: dict[str, Any],
    path: Path | None,
    *,
    model: Supernet,
    space: SearchSpace,
    tok_fp: str,
    corpus_key: str,
    config: TrainConfig,
) -> None:
    """Refuse (one clear error) to resume from checkpoint ``state`` (read from ``path``)
    into a run that differs in anything an exact resume depends on."""
    mine = model.config.to_dict()
    if state["supernet_config"] != mine:
        raise NasError(
            f"checkpoint {path} was written for another supernet config ({config_difference(state['supernet_config'], mine)}); "
            "resume with the config that wrote it, or start a fresh run with another --out"
        )
    if list(state["layer_rank"]) != list(model.layer_rank) or state["space"] != space.to_dict():
        raise NasError(f"checkpoint {path} was written for another search space or layer rank; resume with the same space")
    if state["tokenizer"] != tok_fp:
        raise NasError(f"checkpoint {path} was written with another tokenizer; resume with the same tokenizer")
    if state["corpus"] != corpus_key:
        raise NasError(f"checkpoint {path} was written on another corpus (or tokenisation); resume with the same data")
    if state["seed"] != config.seed or state["batch_size"] != config.batch_size or state["seq_len"] != config.seq_len:
        raise NasError(f"checkpoint {path} used another seed, batch_size or seq_len; an exact resume needs the same values")
    for key, mine_now, what, why in (
        ("schedule", _schedule(config), "another schedule", ""),
        ("optim", _optim(config), "other optimiser settings",
         "a resume restores the checkpoint's optimiser and LR schedule, so "),
    ):
        legacy = {k: v for k, v in LEGACY_DEFAULTS.items() if k in mine_now}
        saved = {**legacy, **state[key]} if key in state else mine_now  # written before the key: not checked
        if saved != mine_now:
            raise NasError(
                f"checkpoint {path} was trained with {what} ({config_difference(saved, mine_now)}); "
                f"{why}an exact resume needs the same: resume with the settings that wrote it, or start a fresh run with another --out"
            )
    if state.get("dtype", config.dtype) != config.dtype:  # checkpoints written before the key: not checked
        raise NasError(
            f"checkpoint {path} was trained in dtype {state['dtype']}, this run would use {config.dtype} "
            f"(dtype: auto picks the machine's fast dtype); an exact resume needs the same: set dtype: {state['dtype']}"
        )


__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingState",
    "check_compatible",
    "checkpoint_dir",
    "config_difference",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
