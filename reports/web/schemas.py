"""Pydantic bodies and responses of the JSON API (validated at the edge, 422 on error)."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_COLUMN = r"^[A-Za-z0-9_.\-/@]{1,200}$"
_STUDY = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite_bounds(values: dict[str, float]) -> dict[str, float]:
    if len(values) > 32:
        raise ValueError("at most 32 bounds")
    for key, value in values.items():
        if not re.match(_COLUMN, key):
            raise ValueError(f"bound name {key!r} must look like params, latency_ms or hellaswag/acc_norm")
        if not math.isfinite(value):
            raise ValueError(f"bound {key} must be a finite number")
    return values


class PickBody(_Body):
    """Constraints and the metric to rank by. ``max``/``min`` map a column (or alias such
    as ``latency``) to an inclusive bound."""

    study: str = Field(pattern=_STUDY)
    metric: str = Field(default="accuracy", pattern=_COLUMN)
    max: dict[str, float] = Field(default_factory=dict)
    min: dict[str, float] = Field(default_factory=dict)
    top: int = Field(default=5, ge=1, le=100)

    @field_validator("max", "min")
    @classmethod
    def _bounds(cls, v: dict[str, float]) -> dict[str, float]:
        return _finite_bounds(v)


class ExportBody(_Body):
    """Export one trial (``trial``) or the best pick (``pick``) of a study to ``out``, a path
    relative to the server's exports directory (``<work dir>/exports``)."""

    study: str = Field(pattern=_STUDY)
    trial: int | None = Field(default=None, ge=0)
    pick: PickBody | None = None
    out: str = Field(min_length=1, max_length=200)
    verify: bool = False
    dtype: Literal["bf16", "fp32"] | None = None
    overwrite: bool = False
    #: ``auto``: a transformers directory for a homogeneous sub-network, else our
    #: heterogeneous safetensors format; ``gguf``: a llama.cpp file (``quant`` sets its weights)
    format: Literal["auto", "gguf"] = "auto"
    quant: str | None = Field(default=None, pattern=r"^[a-z0-9_]{2,8}$")

    @model_validator(mode="after")
    def _one_source(self) -> ExportBody:
        if (self.trial is None) == (self.pick is None):
            raise ValueError("give exactly one of trial (a trial number) or pick (constraints)")
        if self.pick is not None and self.pick.study != self.study:
            raise ValueError("pick.study must be the study being exported")
        if self.format != "gguf" and self.quant is not None:
            raise ValueError("quant applies to GGUF exports; set format to gguf")
        return self


class ErrorOut(BaseModel):
    """Every error response: ``detail`` is one message, or for a body that fails validation
    the list of problems (``loc``, ``msg``, ``type``)."""

    detail: str | list[dict[str, Any]]


_ERROR_TEXT = {
    400: "A path that is not a plain relative path inside the exports directory",
    401: "Missing or wrong bearer token",
    404: "No such study, trial or job",
    409: "The target exists (or holds other exports) and cannot be replaced",
    413: "Request body too large",
    422: "The request is well-formed but invalid (the detail names the field and the fix)",
    429: "Too many jobs running",
    503: "The database failed or cannot be reached",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route can answer (all :class:`ErrorOut`)."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}


class PickBoundOut(BaseModel):
    column: str
    max: float | None
    min: float | None


class PickCandidateOut(BaseModel):
    """One ranked candidate; ``layers`` and ``d_ff`` (kept layers and their FFN widths) draw
    its per-layer glance."""

    rank: int
    trial: int
    score: float  # the confirmed score when the study was confirmed, else the search score
    stderr: float | None
    interval: float | None  # z * stderr
    search_score: float | None  # the search score beside a confirmed one
    search_stderr: float | None
    tied_with: int | None  # the rank this candidate is statistically tied with
    config_hash: str
    summary: str
    values: dict[str, float | None]
    layers: list[int] = []
    d_ff: list[int] = []


class PickOut(BaseModel):
    study: str
    metric: str
    direction: Literal["maximize", "minimize"]
    confirmed: bool
    z: float
    bounds: list[PickBoundOut]
    counts: dict[str, int]
    candidates: list[PickCandidateOut]
    message: str


class StudyLaunchBody(_Body):
    """A study spec (the same fields as a YAML spec for `nas search`)."""

    spec: dict[str, Any]


class SpecCheck(BaseModel):
    ok: bool
    problem: str | None  # the spec parser's message, naming the field and the fix
    study: str | None


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["running", "succeeded", "failed", "cancelled", "interrupted"]
    returncode: int | None
    created_at: str
    finished_at: str | None
    result: dict[str, Any]
    log_tail: str


class StudyLaunched(BaseModel):
    study: str
    job: JobOut


class ExportTarget(BaseModel):
    out: str  # relative to the exports directory
    free: bool  # an export may go there now
    replaceable: bool  # an earlier export is there: it may be replaced with overwrite
    problem: str | None


class ExportStarted(BaseModel):
    study: str
    trial: int
    out: str
    job: JobOut


class StudySummary(BaseModel):
    name: str
    status: str
    n_trials: int
    n_trials_target: int | None
    n_feasible: int
    n_top_fidelity: int
    front_size: int
    hypervolume: float
    supernet_hash: str
    objectives: list[dict[str, Any]]
    created_at: str | None
    finished_at: str | None


class TrialOut(BaseModel):
    trial: int
    state: str
    feasible: bool
    fidelity: str | None
    full_fidelity: bool
    on_front: bool
    config_hash: str
    summary: str
    accuracy: float | None
    accuracy_stderr: float | None
    accuracy_confirmed: float | None  # on the held-out confirmation documents
    accuracy_confirmed_stderr: float | None
    tied: bool  # statistically tied with the best trial (paired test)
    metrics: dict[str, float | None]
    stderr: dict[str, float | None]
    costs: dict[str, float | None]
    layers: list[int]  # the kept supernet layers
    d_ff: list[int]  # FFN width per kept layer (the per-layer glance)


class TrialBrief(TrialOut):
    """A trial's row plus its head counts per kept layer, for a hovered point."""

    n_head: list[int]


class TrialPage(BaseModel):
    study: str
    total: int
    offset: int
    limit: int
    trials: list[TrialOut]
    matching: list[int] = []  # every matching trial number (to highlight them on the plot)
    sort: str = "trial"
    desc: bool = False


__all__ = [
    "ErrorOut",
    "ExportBody",
    "ExportStarted",
    "ExportTarget",
    "JobOut",
    "PickBody",
    "PickBoundOut",
    "PickCandidateOut",
    "PickOut",
    "SpecCheck",
    "StudyLaunchBody",
    "StudyLaunched",
    "StudySummary",
    "TrialBrief",
    "TrialOut",
    "TrialPage",
    "error_responses",
]
