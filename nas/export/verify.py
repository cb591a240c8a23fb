"""Verifying an export: re-score it with the search's own scorers and compare with the
scores the study stored (0/1 metrics identical, losses within 1e-6 relative)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.scorer import build_scorers
from evaluators.types import Fidelity
from nas.errors import NasError
from nas.export.loading import load_exported
from nas.export.source import ExportSource
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.search.spec import spec_from_json

#: Metrics whose per-example scores are 0/1 decisions: parity means equality.
EXACT_METRICS = ("acc", "acc_norm", "exact_match", "em", "acc_mutual_info", "mcc", "f1")
RELATIVE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ParityRow:
    task: str
    metric: str
    stored: float
    rescored: float | None
    abs_diff: float | None
    rel_diff: float | None
    ok: bool


@dataclass(frozen=True)
class ParityReport:
    """Re-scores of an export next to the study's stored scores."""

    path: Path
    fidelity: str
    dtype: str
    rows: tuple[ParityRow, ...]
    tolerance: float = RELATIVE_TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "fidelity": self.fidelity,
            "dtype": self.dtype,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "rows": [r.__dict__ for r in self.rows],
        }


def verify_export(path: str | Path, source: ExportSource, *, dtype: str | None = None) -> ParityReport:
    """Re-score the export at ``path`` on the study's tasks and fidelity with the scorers the
    search uses, and compare with the stored scores: 0/1 metrics (acc, acc_norm, ...)
    must be identical, others (losses, perplexities) within 1e-6 relative.

    ``dtype`` defaults to the study's (``spec.dtype``): the stored scores were computed in it.
    """
    if not source.scores:
        raise NasError(f"study {source.study!r} trial {source.trial} has no stored scores to verify against")
    # the search stores bookkeeping (e.g. supernet_hash) next to the spec's own fields
    spec = spec_from_json(source.spec)
    dtype = dtype or spec.dtype
    exported = load_exported(path, dtype=dtype, tokenizer=False)
    model = exported.model
    loaded = _ExportAsSupernet(
        model=model,
        space=SearchSpace.default(model.config, model.layer_rank),
        path=Path(path),
        content_hash=source.supernet_hash,
        provenance={"export_of": source.supernet_hash},
    )
    fidelity = Fidelity.parse(source.fidelity or "full")
    subnet = model.full_subnet()
    rescored: dict[tuple[str, str], float] = {}
    for scorer in build_scorers(spec, loaded):
        for score in scorer.evaluate(subnet, fidelity).scores:
            rescored[(score.task, score.metric)] = float(score.value)
    rows = []
    for s in source.scores:
        new = rescored.get((s.task, s.metric))
        if new is None:
            rows.append(ParityRow(s.task, s.metric, s.value, None, None, None, False))
            continue
        diff = abs(new - s.value)
        rel = diff / max(abs(s.value), 1e-12)
        ok = diff == 0.0 if s.metric in EXACT_METRICS else rel <= RELATIVE_TOLERANCE
        rows.append(ParityRow(s.task, s.metric, s.value, new, diff, rel, ok))
    return ParityReport(path=Path(path), fidelity=fidelity.label, dtype=str(dtype), rows=tuple(rows))


@dataclass
class _ExportAsSupernet:
    """Just enough of :class:`nas.model.directory.LoadedSupernet` for the search's scorers, over an
    export directory (whose tokenizer files sit at the top level)."""

    model: Supernet
    space: Any
    path: Path
    content_hash: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> SupernetConfig:
        return self.model.config

    @property
    def tokenizer_dir(self) -> Path | None:
        return self.path if (self.path / "tokenizer_config.json").is_file() else None

    def load_tokenizer(self) -> Any:
        if self.tokenizer_dir is None:
            raise NasError(f"export {self.path} has no tokenizer; lm-eval tasks need one")
        # deferred: transformers takes seconds to import; only this path needs it
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))


__all__ = ["EXACT_METRICS", "RELATIVE_TOLERANCE", "ParityReport", "ParityRow", "verify_export"]
