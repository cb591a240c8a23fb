"""Healing a supernet: elastic distillation of its sub-networks from its frozen full model.

An imported, importance-ordered model (``nas supernet import``) is a good full model whose
smaller sub-networks were never trained as such: pruning costs them nats of loss. Healing
trains the shared weights with the sandwich rule over the search space a study will
search, every arm distilling from a frozen copy of the starting full model (Minitron and
Puzzle distil from the parent; Nemotron Elastic trains the nested family jointly).

This module is a thin, well-defaulted layer over :func:`nas.training.train`:

- :func:`plan_heal` builds the :class:`~nas.training.TrainConfig` from the supernet, the
  space and a budget (:class:`HealBudget`: tokens, or a wall time turned into steps by
  timing three real steps, an evaluation and a checkpoint, :class:`HealTiming`; the timing
  run and the run's evaluations and checkpoints count against it), with defaults per device (:func:`heal_settings`: minutes on a CPU,
  an hour on a GPU), and refuses what cannot work: a supernet trained from scratch (it has
  no parent; ``teacher="self"`` distils from its own full model, explicitly), a space
  outside the supernet, a time too short for one step, and a resume with other settings;
- :func:`run_heal` trains (resumable from ``OUT/train/checkpoints``), then records in the
  supernet's provenance what was healed from what: the parent's content hash, the
  teacher, the tokens, steps and data (``provenance["heal"]``);
- :func:`subnet_space` is the one-member space that heals a single sub-network (``nas
  export --heal``: the picked sub-network distils from the supernet's full model).

The settings of a heal live in ``OUT/train/heal.json`` from its first step on, so that a
resumed heal continues exactly (the trainer checks the model, space, tokenizer, data,
seed and shapes; this module the budget, optimiser and sampling settings too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.errors import NasError
from nas.model.directory import LoadedSupernet, load_supernet, update_provenance
from nas.model.precision import fast_dtype
from nas.model.space import LayerChoices, SearchSpace
from nas.model.subnet import SubnetConfig
from nas.training.checkpoints import list_checkpoints
from nas.training.config import TrainConfig, parse_train_config
from nas.training.sampling import ARM_DRAWS
from nas.training.trainer import EvalReport, StepReport, TrainResult, train

log = logging.getLogger(__name__)

HEAL_FILE = "heal.json"  # in OUT/train/
TEACHERS = ("parent", "self")
CALIBRATION_STEPS = 3
EVAL_SHARE = 0.1  # of a time budget, at most, for the held-out evaluations that show progress

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
_TOKENS = re.compile(r"^(?P<n>\d+(?:\.\d+)?(?:e\d+)?)(?P<unit>[kKMG]?)$")
_TOKEN_UNITS = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


# ================================================================== budget
def parse_duration(text: str, *, what: str = "--time") -> float:
    """Seconds in ``"90s"``, ``"30m"`` (or ``30min``), ``"1h"``, ``"1h30m"``."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.group(k) for k in "hms"):
        raise NasError(f"{what} {text!r} is not a duration; write it like 90s, 30m or 1h30m")
    seconds = 3600 * float(m["h"] or 0) + 60 * float(m["m"] or 0) + float(m["s"] or 0)
    if seconds <= 0:
        raise NasError(f"{what} {text!r} is no time at all; give a positive duration such as 30m")
    return seconds


def parse_tokens(text: str, *, what: str = "--tokens") -> int:
    """Tokens in ``"500000"``, ``"500k"``, ``"2M"``, ``"2e6"``, ``"1G"``."""
    m = _TOKENS.match(text.strip())
    if m is None:
        raise NasError(f"{what} {text!r} is not a token count; write it like 500000, 500k, 2M or 2e6")
    tokens = int(float(m["n"]) * _TOKEN_UNITS[m["unit"]])
    if tokens < 1:
        raise NasError(f"{what} {text!r} is no tokens at all; give a positive count")
    return tokens


@dataclass(frozen=True)
class HealBudget:
    """How long a heal trains: ``tokens``, or ``seconds`` of wall time (turned into a number
    of steps by timing a step, an evaluation and a checkpoint; the timing run, the start,
    the evaluations and the checkpoints count against it: :class:`HealTiming`)."""
    tokens: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.seconds is None):
            raise NasError("a heal budget is tokens or time: give one of them (e.g. --tokens 2M or --time 30m)")

    @classmethod
    def parse(cls, text: str, *, what: str = "--heal") -> HealBudget:
        """``"2M"``/``"500000"`` (tokens) or ``"30m"``/``"90s"``/``"1h"`` (time)."""
        text = text.strip()
        if text and text[-1] in "hms" or text.endswith("min"):
            return cls(seconds=parse_duration(text, what=what))
        try:
            return cls(tokens=parse_tokens(text, what=what))
        except NasError:
            raise NasError(f"{what} {text!r} is neither a token count (500k, 2M) nor a duration (90s, 30m, 1h)") from None

    def describe(self) -> str:
        if self.tokens is not None:
            return f"{self.tokens:,} tokens"
        assert self.seconds is not None
        return f"{self.seconds / 60:g} min" if self.seconds >= 60 else f"{self.seconds:g} s"

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "seconds": self.seconds}


# ================================================================ settings
#: settings added after heals recorded theirs, at the value every earlier heal had: left out of
#: HealSettings.resumable() at that value, and filled in when a resume compares settings
RESUMABLE_DEFAULTS = {"text_field": "text", "arm_draw": "uniform"}


@dataclass(frozen=True)
class HealSettings:
    """The numbers of a heal besides its budget (see :func:`heal_settings` for the defaults)."""
    device: str
    budget: HealBudget  # used when the caller gives none
    batch_size: int
    seq_len: int
    lr: float
    n_random: int
    arm_draw: str = "uniform"  # how random arms are drawn (sandwich.arm_draw): uniform or spread
    dtype: str = "bf16"
    corpus: tuple[str, ...] = ("corpus/gutenberg",)
    text_field: str = "text"  # the field holding the text in .jsonl files of the corpus
    max_chars: int | None = None
    val_fraction: float = 0.02
    temperature: float = 1.0
    seed: int = 0
    eval_tokens: int = 8192
    evals: int = 10  # held-out evaluations of the largest and smallest over the run
    checkpoints: int = 10  # checkpoints over the run
    keep_checkpoints: int = 2

    def resumable(self) -> dict[str, Any]:
        """The settings a resumed heal must share with the heal it continues."""
        out = dataclasses.asdict(self)
        out.pop("budget")
        out.pop("keep_checkpoints")
        out["corpus"] = list(self.corpus)
        for key, value in RESUMABLE_DEFAULTS.items():  # heals recorded before the setting existed resume
            if out[key] == value:
                out.pop(key)
        return out


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise NasError(f"heal device {device!r} is not cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise NasError("heal device cuda asked for, but torch sees no GPU; use --device cpu")
    return device


def heal_settings(device: str = "auto", **overrides: Any) -> HealSettings:
    """Defaults for ``device`` (``auto``: cuda when torch sees a GPU), with ``overrides``
    (fields of :class:`HealSettings`; None values are ignored).

    CPU (minutes): 10 min of 4 x 256-token steps, one random arm besides the largest and
    the smallest, the first 4 M characters of the Gutenberg corpus (a 2-core CPU heals
    SmolLM2-135M at 100-200 tokens/s: ``bench/heal_step.py`` measured 107-110 on a slow EPYC
    with ``avx512_bf16``). GPU (an hour): 1 h of 32 x 1024-token steps, two
    random arms, the whole corpus.
    The dtype is the device's fast one (:func:`nas.model.dtypes.fast_dtype`:
    bf16 autocast where bf16 is native, else fp32).
    """
    device = _device(device)
    if device == "cuda":
        base = HealSettings(device=device, budget=HealBudget(seconds=3600.0), batch_size=32, seq_len=1024, lr=1e-4,
                            n_random=2, eval_tokens=65_536, dtype=fast_dtype(device)[0])
    else:
        base = HealSettings(device=device, budget=HealBudget(seconds=600.0), batch_size=4, seq_len=256, lr=1e-4,
                            n_random=1, max_chars=4_000_000, dtype=fast_dtype(device)[0])
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(HealSettings)})
    if unknown:
        raise TypeError(f"heal_settings: unknown setting(s) {unknown}")
    if changes.get("arm_draw", "uniform") not in ARM_DRAWS:
        raise NasError(f"--arm-draw {changes['arm_draw']!r} is not one of {', '.join(ARM_DRAWS)}")
    if "corpus" in changes:
        changes["corpus"] = (changes["corpus"],) if isinstance(changes["corpus"], str) else tuple(changes["corpus"])
    return dataclasses.replace(base, **changes)


# ================================================================== spaces
def subnet_space(loaded: LoadedSupernet, subnet: SubnetConfig) -> SearchSpace:
    """The search space whose only member is ``subnet`` (a sub-network of ``loaded``): the
    space that heals one sub-network, every step distilling it from the full model."""
    subnet.check_fits(loaded.config)
    n = len(subnet.layers)
    rank = loaded.model.layer_rank
    if tuple(subnet.layers) != tuple(sorted(rank[:n])):
        raise NasError(
            f"sub-network {subnet.summary()} keeps layers {list(subnet.layers)}, not the {n} highest-ranked layers of "
            f"{loaded.path} ({sorted(rank[:n])}); it cannot be healed as a member of a search space over this supernet"
        )
    pos = {layer: i for i, layer in enumerate(subnet.layers)}
    layers = []
    for i in range(loaded.config.n_layer):
        full = loaded.config.layer(i)
        if i not in pos:
            layers.append(LayerChoices((full.n_head,), (full.d_ff,), (full.n_expert,) if full.n_expert else (0,),
                                       (full.top_k,) if full.n_expert else (0,)))
            continue
        p = pos[i]
        moe = bool(full.n_expert)
        layers.append(LayerChoices((subnet.n_head[p],), (subnet.d_ff[p],), (subnet.n_expert[p],) if moe else (0,),
                                   (subnet.top_k[p],) if moe else (0,)))
    space = SearchSpace(loaded.config, layer_rank=rank, n_layer_choices=[n], layers=layers, d_model_choices=[subnet.d_model])
    if space.largest() != subnet:
        raise NasError(f"sub-network {subnet.summary()} cannot be written as a search space over {loaded.path}")
    return space


def _resolve_space(loaded: LoadedSupernet, space: str | Path | Mapping[str, Any] | SearchSpace | None) -> SearchSpace:
    if space is None:
        return loaded.space
    if isinstance(space, SearchSpace):
        if space.config != loaded.config:
            raise NasError(f"the search space given is over another supernet than {loaded.path}")
        return space
    what = f"--space {space}" if not isinstance(space, Mapping) else "the search space given"
    try:
        return SearchSpace.resolve(space, loaded.config, loaded.model.layer_rank, loaded.space)
    except NasError as exc:
        raise NasError(f"{what} does not fit the supernet {loaded.path} ({exc}); give choices within it "
                       f"(see {loaded.path / 'space.yaml'})") from None


# ==================================================================== plan
@dataclass(frozen=True)
class HealPlan:
    """A resolved heal: the training config and what its provenance will record."""
    config: TrainConfig
    record: dict[str, Any]  # OUT/train/heal.json and provenance["heal"]
    resume: bool

    @property
    def steps(self) -> int:
        return self.config.total_steps()

    @property
    def tokens(self) -> int:
        return self.steps * self.config.tokens_per_step


@dataclass(frozen=True)
class HealResult:
    out: Path
    content_hash: str
    parent_hash: str
    steps: int
    tokens: int
    wall_time_s: float
    val_loss: dict[str, float]
    record: dict[str, Any]
    resumed_from: str | None = None
    stopped_early: bool = False


def teacher_kind(loaded: LoadedSupernet, teacher: str) -> str:
    """``teacher`` checked against the supernet's provenance: ``parent`` (default) needs a
    supernet that has one (imported, or itself healed from one)."""
    if teacher not in TEACHERS:
        raise NasError(f"teacher {teacher!r} is not one of {', '.join(TEACHERS)}")
    prov = loaded.provenance
    scratch = prov.get("source") in ("nas train", "nas heal") and not prov.get("init_from")
    if scratch and teacher == "parent":
        raise NasError(
            f"{loaded.path} was trained from scratch by `nas train`: it has no pretrained parent to distil from, and "
            "its sub-networks already learned from its largest while it trained. Heal it anyway with --teacher self "
            "(its own full model, frozen, as the teacher), or heal an imported supernet (`nas supernet import`)"
        )
    return teacher


def _eval_every(steps: int, s: HealSettings) -> int:
    """Steps between held-out evaluations during the run (0: only the final one)."""
    every = max(1, steps // s.evals) if s.evals else 0
    return every if every < steps else 0


def _checkpoint_every(steps: int, s: HealSettings) -> int:
    return max(1, steps // s.checkpoints) if s.checkpoints else 0


def _train_config(supernet: Path, out: Path, space: SearchSpace, settings: HealSettings, steps: int, *,
                  keep: int) -> TrainConfig:
    s = settings
    return parse_train_config({
        "out": str(out),
        "seed": s.seed,
        "init_from": str(supernet),
        "data": {"corpus": list(s.corpus), "text_field": s.text_field, "val_fraction": s.val_fraction,
                 "max_chars": s.max_chars},
        "space": {"layers": {}, **space.to_dict()},  # all of it: nothing of the supernet's own space leaks in
        "sandwich": {"teacher": "frozen", "n_random": s.n_random, "temperature": s.temperature, "arm_draw": s.arm_draw},
        "optim": {"lr": s.lr, "warmup_fraction": 0.05, "weight_decay": 0.0, "min_lr_ratio": 0.1},
        "steps": steps,
        "batch_size": s.batch_size,
        "seq_len": s.seq_len,
        "dtype": s.dtype,
        "device": s.device,
        "checkpoint_every": _checkpoint_every(steps, s),
        "keep_checkpoints": keep,
        "eval_every": _eval_every(steps, s),
        "eval_tokens": s.eval_tokens,
        "log_every": max(1, min(10, steps // 20)),
    }, source="nas heal")


@dataclass(frozen=True)
class HealTiming:
    """What a heal's parts take on this device (:func:`measure_heal_timing`): a step, one
    held-out evaluation (largest and smallest), one checkpoint, and the start of a run
    (loading the models and the data)."""
    step_s: float
    eval_s: float = 0.0
    checkpoint_s: float = 0.0
    startup_s: float = 0.0

    def run_s(self, steps: int, settings: HealSettings) -> float:
        """Wall seconds of a heal of ``steps`` steps: the steps, the evaluations during the run
        and the final one, the checkpoints (every ``checkpoint_every`` steps and the last) and
        the healed supernet's files (timed as a checkpoint)."""
        eval_every, checkpoint_every = _eval_every(steps, settings), _checkpoint_every(steps, settings)
        evals = ((steps - 1) // eval_every if eval_every else 0) + 1
        checkpoints = (-(-steps // checkpoint_every) if checkpoint_every else 0) + 1  # and the supernet written at the end
        return self.startup_s + steps * self.step_s + evals * self.eval_s + checkpoints * self.checkpoint_s

    def evals_within(self, seconds: float, settings: HealSettings) -> int:
        """How many held-out evaluations (``settings.evals`` at most, the final one included)
        a run of ``seconds`` makes: they only show progress, so they take at most a tenth
        of the time (on a slow CPU, ten of them could take half of a 10-minute heal)."""
        if not settings.evals or self.eval_s <= 0:
            return settings.evals
        return min(settings.evals, int(EVAL_SHARE * seconds / self.eval_s))

    def steps_within(self, seconds: float, settings: HealSettings) -> int:
        """The most steps whose whole run fits in ``seconds`` (0 if not even one). Not
        monotone in steps (fewer steps evaluate more often), so the count is searched down."""
        steps = int(seconds // self.step_s)
        while steps >= 1 and self.run_s(steps, settings) > seconds:
            steps -= 1
        return max(steps, 0)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in dataclasses.asdict(self).items()}


def measure_heal_timing(config: TrainConfig) -> HealTiming:
    """Time ``config``'s parts on real work in a scratch directory: three steps (the first,
    which warms up, left out), with one held-out evaluation and one checkpoint after the
    second. The start of a run is what the probe took besides them."""
    parent = Path(config.out).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".heal-calibrate-", dir=parent))
    steps: list[tuple[float, float]] = []  # (wall clock, training seconds so far) after each step
    evals: list[float] = []  # wall clock after each evaluation
    began = time.perf_counter()
    try:
        probe = config.with_overrides(out=str(scratch / "out"), steps=CALIBRATION_STEPS + 1, checkpoint_every=2,
                                      eval_every=2, keep_checkpoints=1)
        train(probe, stop_after=CALIBRATION_STEPS, on_step=lambda r: steps.append((time.perf_counter(), r.elapsed_s)),
              on_eval=lambda r: evals.append(time.perf_counter()))
        ended = time.perf_counter()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (_, e1), (w2, e2), (w3, e3) = steps
    eval_s = evals[0] - w2
    checkpoint_s = max(0.0, (w3 - evals[0]) - (e3 - e2))  # between the evaluation and step 3, less the step
    return HealTiming(step_s=(e3 - e1) / 2, eval_s=eval_s, checkpoint_s=checkpoint_s,
                      startup_s=max(0.0, (ended - began) - e3 - eval_s - checkpoint_s))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return out


def plan_heal(
    supernet: str | Path,
    out: str | Path,
    *,
    budget: HealBudget | None = None,
    space: str | Path | Mapping[str, Any] | SearchSpace | None = None,
    settings: HealSettings | None = None,
    teacher: str = "parent",
    resume: bool = False,
    fresh: bool = False,
    loaded: LoadedSupernet | None = None,
    measure: Callable[[TrainConfig], HealTiming] = measure_heal_timing,
) -> HealPlan:
    """Resolve a heal of ``supernet`` into ``out`` (see the module docstring). With
    ``resume``, the settings recorded by the heal being continued are used, and any given
    ``budget``, ``space`` or ``settings`` that differ from them are refused, naming them."""
    source = Path(supernet)
    out = Path(out)
    if out.resolve() == source.resolve():
        raise NasError(f"--out {out} is the supernet being healed; write the healed supernet to a new directory")
    loaded = loaded or load_supernet(source)
    kind = teacher_kind(loaded, teacher)
    the_space = _resolve_space(loaded, space)
    settings = settings or heal_settings()
    existing = list_checkpoints(out)
    record_file = out / "train" / HEAL_FILE
    previous = json.loads(record_file.read_text()) if resume and record_file.is_file() else None
    if resume and not existing:
        raise NasError(f"nothing to resume: {out} has no heal checkpoints in train/checkpoints; start it without --resume")
    if existing and not (resume or fresh):
        raise NasError(f"{out} already holds an interrupted heal (latest checkpoint {existing[-1].name}); "
                       "continue it with --resume or start over with --fresh")
    if budget is None:
        budget = HealBudget(**previous["budget"]) if previous else settings.budget
    wanted = {"parent_hash": loaded.content_hash, "teacher": kind, "budget": budget.to_dict(),
              "space": the_space.to_dict(), "settings": settings.resumable()}
    if previous is not None:
        old = {k: previous.get(k) for k in wanted}
        old["settings"] = {**RESUMABLE_DEFAULTS, **(old["settings"] or {})}
        diffs = _differences(old, {**wanted, "settings": {**RESUMABLE_DEFAULTS, **wanted["settings"]}})
        if diffs:
            raise NasError(
                f"{out} holds a heal started with other settings ({'; '.join(diffs[:3])}"
                f"{' ...' if len(diffs) > 3 else ''}); resume it with the settings it was started with, "
                "or start over with --fresh"
            )
    keep = max(settings.keep_checkpoints, 1)
    evals = settings.evals  # a time budget may make fewer (HealTiming.evals_within); a resume makes as many
    if budget.tokens is not None:
        steps = budget.tokens // (settings.batch_size * settings.seq_len)
        if steps < 1:
            raise NasError(
                f"a budget of {budget.tokens:,} tokens is less than one heal step ({settings.batch_size} x "
                f"{settings.seq_len} = {settings.batch_size * settings.seq_len:,} tokens); raise it or lower the batch"
            )
        timing = None
    elif previous is not None:
        steps, timing = int(previous["steps"]), previous.get("timing")
        evals = int(previous.get("evals", evals))
    else:
        assert budget.seconds is not None
        probe = _train_config(source, out, the_space, settings, CALIBRATION_STEPS, keep=keep)
        began = time.perf_counter()
        measured = measure(probe)
        left = budget.seconds - (time.perf_counter() - began)  # the timing run is part of the budget
        evals = measured.evals_within(left, settings)
        steps = measured.steps_within(left, dataclasses.replace(settings, evals=evals))
        if steps < 1:
            least = (time.perf_counter() - began) + measured.run_s(1, settings)
            raise NasError(
                f"--time {budget.describe()} is shorter than one heal step with its timing run, evaluation and "
                f"checkpoint ({measured.step_s:.2f} s a step of {settings.batch_size} x {settings.seq_len} tokens on "
                f"{settings.device}, {measured.eval_s:.2f} s an evaluation); give at least --time {math.ceil(least)}s, "
                "or a --tokens budget"
            )
        timing = measured.to_dict()
    config = _train_config(source, out, the_space, dataclasses.replace(settings, evals=evals), steps, keep=keep)
    record = {
        **wanted,
        "parent_path": str(source),
        "steps": steps,
        "tokens": steps * config.tokens_per_step,
        "timing": timing,  # a time budget's measured parts (HealTiming), None for a token budget
        "evals": evals,  # held-out evaluations over the run, the final one included
        "data": {"corpus": list(settings.corpus), "text_field": settings.text_field, "max_chars": settings.max_chars,
                 "val_fraction": settings.val_fraction},
    }
    return HealPlan(config=config, record=record, resume=resume)


# ===================================================================== run
def run_heal(
    plan: HealPlan,
    *,
    fresh: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
    stop_after: int | None = None,
) -> HealResult:
    """Train ``plan`` (continuing its latest checkpoint when it was planned with resume)
    and record the heal in the healed supernet's provenance."""
    out = Path(plan.config.out)
    run_dir = out / "train"
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / HEAL_FILE).write_text(json.dumps(plan.record, indent=2) + "\n")
    result: TrainResult = train(plan.config, resume="latest" if plan.resume else None, on_step=on_step,
                                on_eval=on_eval, stop_after=stop_after)
    record = {**plan.record, "steps": result.steps, "tokens": result.tokens, "wall_time_s": round(result.wall_time_s, 2),
              "val_loss": result.val_loss}
    if not result.stopped_early:
        update_provenance(out, source="nas heal", heal=record)
    return HealResult(
        out=out, content_hash=result.content_hash, parent_hash=plan.record["parent_hash"], steps=result.steps,
        tokens=result.tokens, wall_time_s=result.wall_time_s, val_loss=result.val_loss, record=record,
        resumed_from=result.resumed_from, stopped_early=result.stopped_early,
    )


def heal(supernet: str | Path, out: str | Path, **kwargs: Any) -> HealResult:
    """:func:`plan_heal` then :func:`run_heal` (``on_step``, ``on_eval``, ``stop_after`` go to the run)."""
    run_args = {k: kwargs.pop(k) for k in ("on_step", "on_eval", "stop_after") if k in kwargs}
    plan = plan_heal(supernet, out, **kwargs)
    return run_heal(plan, fresh=bool(kwargs.get("fresh")), **run_args)


__all__ = [
    "HEAL_FILE",
    "HealBudget",
    "HealPlan",
    "HealResult",
    "HealSettings",
    "heal",
    "heal_settings",
    "HealTiming",
    "measure_heal_timing",
    "parse_duration",
    "parse_tokens",
    "plan_heal",
    "run_heal",
    "subnet_space",
    "teacher_kind",
]
