"""The study spec: a YAML file that says what to search, how to score it and within what budget.

A spec is validated by pydantic at the edge and then used as plain, frozen data. Every
error names the field and says how to fix it, e.g.::

    examples/study.yaml: objectives[1].metric: unknown objective 'latncy'; use one of ...

Minimal example (everything else has a default)::

    name: smollm2-arc
    supernet: work/smollm2
    tasks: [arc_easy, piqa]
    objectives: [accuracy, non_embedding_params]
    budget: {n_trials: 40}

Objectives and constraints name one of:

* ``accuracy`` — the aggregate of the tasks' main metrics (mean, or weighted by ``weight``);
* ``<task>`` or ``<task>/<metric>`` — one task's (main or named) metric;
* a cost: ``params``, ``non_embedding_params``, ``active_params``, ``flops_per_token``,
  ``weight_memory_bytes``, ``kv_cache_bytes``, ``memory`` (weights + KV cache),
  ``predicted_latency_ms`` (per-layer latency table) or ``latency_ms`` (measured prefill) of
  our torch model, or ``predicted_engine_latency_ms``: llama.cpp's prefill latency of the
  candidate's GGUF in its weight format (``quant``, else the study's dtype), from a per-device
  table calibrated on the engine's timings (:mod:`evaluators.engine_table`; built once per
  device, supernet and llama.cpp version by ``nas supernet engine-table SUPERNET_DIR --spec
  STUDY.yaml``). ``engine_latency_ms`` itself is measured by ``nas export --verify`` on an
  exported GGUF; a spec naming it is refused with a pointer to the predicted one.

``quant_choices`` (e.g. ``[bf16, q8_0, q4_0]``) makes the weight format a searchable
deployment choice: each candidate is a sub-network *and* a format, scored with its weights
passed through that format's quantise/dequantise and costed in its bytes
(:mod:`nas.search.quant`).

Constraints bound costs only, so that infeasible sub-networks are known before any
benchmark runs (``latency_ms`` is measured, still before any task is scored).

The built-in task ``heldout_loss`` (metric ``loss``, lower is better) scores the mean
next-token loss of a fixed, seeded batch of held-out sequences: a cheap but real
objective for tests and benchmarks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluators.types import Fidelity
from nas.errors import NasError
from nas.metrics import (
    ACCURACY,
    COST_ALIASES,
    COST_METRICS,
    HELDOUT_TASK,
    LOWER_IS_BETTER,
    MEASURED_ENGINE_COST,
    main_metric,
)
from nas.model.quant import parse_quant


def _engine_measured_message(where: str) -> str:
    return (f"{where}: engine_latency_ms is measured in llama.cpp on an exported GGUF (nas export --format gguf "
            "--verify), not during a search; bound or optimise predicted_engine_latency_ms instead (llama.cpp's prefill "
            "latency from a per-device table calibrated on the engine's timings; build it once with: "
            "nas supernet engine-table SUPERNET_DIR --spec STUDY.yaml)")


SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random", "qmc", "grid")

AGGREGATE = ACCURACY
#: What a study stores next to its spec's own fields: the supernet's content hash and each
#: task's scoring settings (the evaluation cache key's settings part).
BOOKKEEPING = ("supernet_hash", "scoring")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Model):
    """One task: its name, the metric that represents it, its weight in the aggregate.

    ``n_examples``/``seq_len``/``source`` only apply to ``heldout_loss``: how many
    sequences of how many tokens, from ``random`` tokens, ``wikitext`` (NAS_DATA_DIR)
    or a text file path.
    """

    name: str
    metric: str | None = None
    weight: float = Field(default=1.0, gt=0)
    n_examples: int = Field(default=64, ge=2)
    seq_len: int = Field(default=64, ge=2)
    source: str = "random"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"task name {v!r} must be a plain lm-eval task name such as arc_easy")
        return v

    @property
    def main_metric(self) -> str:
        return main_metric(self.name, self.metric)

    @property
    def is_heldout(self) -> bool:
        return self.name == HELDOUT_TASK


class ObjectiveSpec(_Model):
    """One objective: a metric name (see the module docstring) and its direction.

    ``reference`` is the worst value that still counts for the hypervolume (default:
    0 for maximised metrics, the largest sub-network's value for analytic costs, 1.1 x
    the worst observed value for other minimised objectives).
    """

    metric: str
    direction: Literal["maximize", "minimize"] | None = None
    reference: float | None = None


class ConstraintSpec(_Model):
    """Bounds on one cost: ``max`` and/or ``min`` (inclusive)."""

    metric: str
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ConstraintSpec:
        if self.max is None and self.min is None:
            raise ValueError(f"constraint on {self.metric!r} needs max and/or min, e.g. {{metric: {self.metric}, max: 1.0e8}}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(
                f"constraint on {self.metric!r} has min {self.min:g} above max {self.max:g}; nothing can be feasible, "
                "swap or widen the bounds"
            )
        return self


class SamplerSpec(_Model):
    """The Optuna sampler and its few knobs."""

    name: str = "tpe"
    population_size: int | None = Field(default=None, ge=2)
    n_startup_trials: int | None = Field(default=None, ge=0)
    batch: int | None = Field(default=None, ge=1)  #: trials asked at once, scored in prefix-reuse order (study.ask_batch)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        v = v.lower().replace("-", "").replace("_", "")
        aliases = {"nsgaii": "nsga2", "nsgaiii": "nsga3", "bruteforce": "grid", "sobol": "qmc"}
        v = aliases.get(v, v)
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {v!r}; use one of {', '.join(SAMPLERS)}")
        return v


class BudgetSpec(_Model):
    """How many trials (COMPLETE, over all runs and workers) and/or how much wall time per run."""

    n_trials: int | None = Field(default=None, ge=1)
    wall_time_s: float | None = Field(default=None, gt=0)

    @field_validator("wall_time_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = _DURATION.match(v)
            if not m:
                raise ValueError(f"wall_time_s {v!r} is not a duration; write e.g. 3600, '90m' or '2h'")
            return float(m.group(1)) * _UNITS[m.group(2)]
        return v

    @model_validator(mode="after")
    def _some(self) -> BudgetSpec:
        if self.n_trials is None and self.wall_time_s is None:
            raise ValueError("give n_trials and/or wall_time_s, e.g. budget: {n_trials: 50}")
        return self


class FidelitySpec(_Model):
    """One rung of the fidelity ladder: ``limit`` seeded examples per task (None: all)."""

    limit: int | None = Field(default=None, ge=1)
    seed: int = 0

    @property
    def label(self) -> str:
        return "full" if self.limit is None else f"n{self.limit}-s{self.seed}"


class PromotionSpec(_Model):
    """How a candidate climbs to the top fidelity.

    ``racing`` (default): documents are scored in chunks of ``chunk`` per task (each chunk
    adds to the last, nothing is scored twice); after each chunk the candidate stops if a
    front member at least as cheap on every cost objective is better on every scored
    objective by more than ``z`` standard errors of the *paired* difference (both scored
    on the same documents). ``ladder``: the fixed ``fidelities`` rungs, promoting when the
    candidate's optimistic bound (value + z * stderr) is not dominated by the front.
    Either way, until the front has ``min_top_trials`` members every candidate goes to the top.
    """

    mode: Literal["racing", "ladder"] = "racing"
    chunk: int = 25
    z: float = Field(default=2.0, ge=0)
    min_top_trials: int = Field(default=2, ge=0)

    @field_validator("chunk")
    @classmethod
    def _chunk(cls, v: int) -> int:
        if v < 2:
            raise ValueError(
                f"chunk {v} is too small: a paired test needs at least 2 documents per task and chunk; "
                "use e.g. chunk: 25"
            )
        return v


class ConfirmationSpec(_Model):
    """Held-out confirmation: ``examples`` documents of each task (the end of the task's
    seeded order) that the search never sees; the front and every candidate tied with it
    are scored on them when the budget is spent (``nas confirm``). ``z``: the width of the
    intervals reported and of the tie test (1.96: 95 %). ``max_tied``: at most this many
    tied candidates are confirmed beside the front (all of the front always is), those the
    front's evidence against is weakest first; None confirms every tied candidate."""

    examples: int = Field(default=100, ge=2)
    z: float = Field(default=1.96, gt=0)
    max_tied: int | None = Field(default=None, ge=0)


class FaultToleranceSpec(_Model):
    """Optuna trial heartbeats and retries of trials whose worker died."""

    heartbeat_interval_s: int = Field(default=10, ge=1)
    grace_period_s: int | None = Field(default=None, ge=1)
    max_retry: int = Field(default=3, ge=0)


class StudySpec(_Model):
    """A validated study spec (see the module docstring)."""

    name: str
    supernet: str
    space: str | dict[str, Any] | None = None
    tasks: tuple[TaskSpec, ...]
    aggregation: Literal["mean", "weighted"] = "mean"
    objectives: tuple[ObjectiveSpec, ...] = (ObjectiveSpec(metric=AGGREGATE), ObjectiveSpec(metric="non_embedding_params"))
    constraints: tuple[ConstraintSpec, ...] = ()
    sampler: SamplerSpec = SamplerSpec()
    budget: BudgetSpec
    seed: int = 0
    fidelities: tuple[FidelitySpec, ...] = (FidelitySpec(),)
    promotion: PromotionSpec = PromotionSpec()
    confirmation: ConfirmationSpec | None = ConfirmationSpec()
    fault_tolerance: FaultToleranceSpec = FaultToleranceSpec()
    storage: str | None = None
    #: ``auto``: bf16 where native, else fp32 (nas.model.precision); stored resolved at creation
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    batch_size: int = Field(default=16, ge=1)
    recheck_nats: float = Field(default=0.0, ge=0, allow_inf_nan=False)  #: bf16 close calls re-scored in fp32 (evaluators.recheck)
    #: how bf16 lm-eval scores are computed around the matmuls (evaluators.harness.ScoringOptions): ``mixed``
    #: (fp32 residual stream and decisive logits) or ``model`` (all bf16, as HFLM); ``auto``: mixed
    #: for a new study, what a stored study was created with on resume (model before the option)
    numerics: Literal["auto", "mixed", "model"] = "auto"
    device: str = "cpu"
    context_len: int = Field(default=512, ge=1)
    quant_choices: tuple[str, ...] = ()  #: weight formats a candidate may be deployed in (nas.search.quant): a search axis

    # ------------------------------------------------------------ coercions
    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("tasks"), (str, dict)):
            data["tasks"] = [data["tasks"]]
        if isinstance(data.get("tasks"), list):
            data["tasks"] = [{"name": t} if isinstance(t, str) else t for t in data["tasks"]]
        if isinstance(data.get("objectives"), list):
            data["objectives"] = [{"metric": o} if isinstance(o, str) else o for o in data["objectives"]]
        if isinstance(data.get("sampler"), str):
            data["sampler"] = {"name": data["sampler"]}
        if isinstance(data.get("budget"), int) and not isinstance(data.get("budget"), bool):
            data["budget"] = {"n_trials": data["budget"]}
        if isinstance(data.get("constraints"), dict):
            data["constraints"] = [{"metric": k, **(v if isinstance(v, dict) else {"max": v})} for k, v in data["constraints"].items()]
        if isinstance(data.get("fidelities"), list):
            data["fidelities"] = [_fidelity_item(f, data.get("seed", 0)) for f in data["fidelities"]]
        return data

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not _NAME.match(v) or len(v) > 200:
            raise ValueError(f"study name {v!r} must be letters, digits, '_', '-' or '.' (at most 200 characters)")
        return v

    @field_validator("quant_choices")
    @classmethod
    def _quants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        try:
            names = tuple(dict.fromkeys(parse_quant(q).name for q in v))
        except NasError as exc:
            raise ValueError(str(exc)) from None
        return names

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[TaskSpec, ...]) -> tuple[TaskSpec, ...]:
        if not v:
            raise ValueError("list at least one task, e.g. tasks: [arc_easy, piqa]")
        names = [t.name for t in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task(s) {dup} are listed twice; list each task once")
        return v

    @field_validator("fidelities")
    @classmethod
    def _ladder(cls, v: tuple[FidelitySpec, ...]) -> tuple[FidelitySpec, ...]:
        if not v:
            raise ValueError("give at least one fidelity, e.g. fidelities: [full] or [100, full]")
        limits = [f.limit if f.limit is not None else float("inf") for f in v]
        if any(b <= a for a, b in zip(limits, limits[1:])):
            raise ValueError(
                f"fidelities {[f.label for f in v]} must grow strictly (e.g. [100, 400, full]); "
                "the last rung is the one the Pareto front is built from"
            )
        if any(f.limit is None for f in v[:-1]):
            raise ValueError("only the last fidelity may be 'full'")
        return v

    @model_validator(mode="after")
    def _confirmation_seed(self) -> StudySpec:
        seeds = sorted({f.seed for f in self.fidelities})
        if self.confirmation is not None and len(seeds) > 1:
            raise ValueError(
                f"fidelities use seeds {seeds}: with a confirmation set every rung must draw from the same seeded "
                "order; give them one seed"
            )
        return self

    @model_validator(mode="after")
    def _objectives(self) -> StudySpec:
        if not self.objectives:
            raise ValueError("objectives: list at least one objective, e.g. [accuracy, non_embedding_params]")
        resolved: list[ObjectiveSpec] = []
        for i, obj in enumerate(self.objectives):
            kind, name, default_dir = self._classify(obj.metric, f"objectives[{i}].metric")
            resolved.append(obj.model_copy(update={"metric": name, "direction": obj.direction or default_dir}))
        names = [o.metric for o in resolved]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"objectives: {dup} listed twice; list each objective once")
        object.__setattr__(self, "objectives", tuple(resolved))
        fixed: list[ConstraintSpec] = []
        for i, con in enumerate(self.constraints):
            name = COST_ALIASES.get(con.metric, con.metric)
            if name == MEASURED_ENGINE_COST:
                raise ValueError(_engine_measured_message(f"constraints[{i}].metric"))
            if name not in COST_METRICS:
                raise ValueError(
                    f"constraints[{i}].metric: {con.metric!r} is not a cost; constraints bound costs, use one of "
                    f"{', '.join(COST_METRICS)}"
                )
            fixed.append(con.model_copy(update={"metric": name}))
        object.__setattr__(self, "constraints", tuple(fixed))
        heldout = [t for t in self.tasks if t.is_heldout]
        if heldout and len(self.tasks) > 1 and any(o.metric == AGGREGATE for o in self.objectives):
            raise ValueError(
                "objectives: 'accuracy' cannot mix heldout_loss (lower is better) with benchmark tasks; "
                "use per-task objectives such as heldout_loss and arc_easy"
            )
        if any(o.metric == AGGREGATE for o in self.objectives):
            bad = [t.name for t in self.tasks if t.main_metric in LOWER_IS_BETTER and not t.is_heldout]
            if bad:
                raise ValueError(
                    f"objectives: 'accuracy' averages higher-is-better metrics but task(s) {bad} use a "
                    "lower-is-better metric; make them per-task objectives instead"
                )
        return self

    def _classify(self, metric: str, where: str) -> tuple[str, str, str]:
        """(kind, canonical name, default direction) of an objective name."""
        task_names = {t.name: t for t in self.tasks}
        if metric == AGGREGATE:
            task = next(iter(task_names.values()))
            lower = len(task_names) == 1 and task.main_metric in LOWER_IS_BETTER
            return "aggregate", metric, "minimize" if lower else "maximize"
        name = COST_ALIASES.get(metric, metric)
        if name in COST_METRICS:
            return "cost", name, "minimize"
        if name == MEASURED_ENGINE_COST:
            raise ValueError(_engine_measured_message(where))
        task, _, sub = metric.partition("/")
        if task in task_names:
            m = sub or task_names[task].main_metric
            return "metric", f"{task}/{m}", "minimize" if m in LOWER_IS_BETTER else "maximize"
        raise ValueError(
            f"{where}: unknown objective {metric!r}; use 'accuracy', a task of this spec "
            f"({', '.join(task_names)}, optionally as task/metric) or a cost ({', '.join(COST_METRICS)})"
        )

    # --------------------------------------------------------------- helpers
    @property
    def top_fidelity(self) -> FidelitySpec:
        return self.fidelities[-1]

    @property
    def holdout(self) -> int:
        """Documents per task held out of the search for confirmation (0: none)."""
        return self.confirmation.examples if self.confirmation is not None else 0

    def fidelity(self, rung: FidelitySpec) -> Fidelity:
        """The documents a rung scores: its prefix of the search documents."""
        return Fidelity(rung.limit, rung.seed, holdout=self.holdout)

    @property
    def top(self) -> Fidelity:
        """The fidelity the front is built from (the ladder's last rung)."""
        return self.fidelity(self.top_fidelity)

    def confirm_fidelity(self, examples: int | None = None) -> Fidelity:
        """The confirmation documents (all of them, or the first ``examples``)."""
        if self.confirmation is None:
            raise NasError(f"study {self.name!r} has no confirmation set (confirmation: null in its spec)")
        if examples is not None and not 2 <= examples <= self.holdout:
            raise NasError(
                f"--examples {examples}: study {self.name!r} holds out {self.holdout} confirmation documents per task; "
                f"ask for 2 to {self.holdout}"
            )
        limit = None if examples in (None, self.holdout) else examples
        return Fidelity(limit, self.top_fidelity.seed, holdout=self.holdout, confirm=True)

    def objective_kind(self, objective: ObjectiveSpec) -> str:
        """``aggregate``, ``metric`` or ``cost``."""
        if objective.metric == AGGREGATE:
            return "aggregate"
        return "cost" if objective.metric in COST_METRICS else "metric"

    @property
    def needs_scores(self) -> bool:
        """True when some objective needs a benchmark (not only costs)."""
        return any(self.objective_kind(o) != "cost" for o in self.objectives)

    @property
    def cost_metrics(self) -> tuple[str, ...]:
        """Every cost named by an objective or a constraint, in spec order."""
        names = [o.metric for o in self.objectives if o.metric in COST_METRICS]
        names += [c.metric for c in self.constraints]
        return tuple(dict.fromkeys(names))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed study must share with the one in the database."""
        data = self.to_dict()
        keep = ("supernet", "space", "tasks", "aggregation", "objectives", "constraints", "fidelities", "dtype", "context_len",
                "confirmation", "quant_choices", "recheck_nats", "numerics")
        return {k: data[k] for k in keep}


def _fidelity_item(item: Any, seed: Any) -> Any:
    seed = seed if isinstance(seed, int) else 0
    if isinstance(item, bool):
        return item
    if item is None or (isinstance(item, str) and item.strip().lower() == "full"):
        return {"limit": None, "seed": seed}
    if isinstance(item, int):
        return {"limit": item, "seed": seed}
    if isinstance(item, str):
        m = re.match(r"^n(\d+)-s(\d+)$", item.strip())
        if m:
            return {"limit": int(m.group(1)), "seed": int(m.group(2))}
        if item.strip().isdigit():
            return {"limit": int(item), "seed": seed}
        return item  # pydantic reports it
    if isinstance(item, dict):
        return {"seed": seed, **item}
    return item


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = _loc(err.get("loc", ()))
        msg = err.get("msg", "invalid")
        kind = err.get("type", "")
        msg = msg.removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling (see `nas search --help` / examples/study_*.yaml)"
        elif kind == "missing":
            msg = "required field is missing; add it"
        elif kind == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"{loc}: {msg}" if loc else msg)
    head = f"{source}: " if source else ""
    return head + ("; ".join(lines) if len(lines) <= 1 else "\n  " + "\n  ".join(lines))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union", "str", "dict")) or part in ("list[...]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_spec(data: Any, *, source: str = "study spec") -> StudySpec:
    """Validate a spec mapping; raise :class:`NasError` naming every bad field and its fix."""
    if not isinstance(data, dict):
        raise NasError(f"{source}: expected a mapping of fields (name, supernet, tasks, objectives, budget, ...)")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise NasError(_format_errors(exc, source)) from None


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML (or JSON) study spec file."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"study spec {path} does not exist; see examples/study_*.yaml for a template")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NasError(f"study spec {path} is not valid YAML: {exc}") from None
    spec = parse_spec(data, source=str(path))
    return resolve_paths(spec, base=path.parent)


def resolve_paths(spec: StudySpec, *, base: Path | None = None) -> StudySpec:
    """Make the supernet (and a space file) absolute: relative to the current directory,
    or else to ``base`` (the spec's directory) when that is where it exists."""

    def resolve(p: str) -> str:
        cand = Path(p).expanduser()
        if cand.is_absolute():
            return str(cand)
        if not cand.exists() and base is not None and (base / cand).exists():
            return str((base / cand).resolve())
        return str(cand.resolve())

    update: dict[str, Any] = {"supernet": resolve(spec.supernet)}
    if isinstance(spec.space, str):
        update["space"] = resolve(spec.space)
    return spec.model_copy(update=update)


def spec_from_json(text: str | dict[str, Any]) -> StudySpec:
    """A spec stored in the database (``StudySpec.to_dict``) back as a :class:`StudySpec`.

    Studies created before confirmation sets and racing existed keep their behaviour: no
    held-out documents (until ``nas confirm`` adds some from the documents the search never
    reached), the fixed ladder, and bf16 scores computed all in bf16 (``numerics: model``)."""
    data = dict(json.loads(text) if isinstance(text, str) else text)
    for key in BOOKKEEPING:
        data.pop(key, None)
    data.setdefault("confirmation", None)
    data.setdefault("numerics", "model")
    if isinstance(data.get("promotion"), dict) and "mode" not in data["promotion"]:
        data["promotion"] = {**data["promotion"], "mode": "ladder"}
    return parse_spec(data, source="stored study spec")


__all__ = [
    "AGGREGATE", "BOOKKEEPING", "SAMPLERS", "BudgetSpec", "ConfirmationSpec", "ConstraintSpec", "FaultToleranceSpec",
    "FidelitySpec", "ObjectiveSpec", "PromotionSpec", "SamplerSpec", "StudySpec", "TaskSpec", "load_spec", "parse_spec",
    "resolve_paths", "spec_from_json",
]
