"""The run's log: events appended to ``OUT/train/log.jsonl``, and the per-arm running
means that each ``step`` line reports.

Every line is one JSON object with ``event`` (``start``, ``step``, ``eval``,
``checkpoint``, ``stopped``, ``end``) and ``time``; only rank 0 writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.training.sandwich import ArmStats


class JsonLog:
    """Appends one JSON line per event to ``path``; with ``path=None`` (the other ranks)
    it writes nothing."""
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, ArmStats):
        return {k: v for k, v in value.__dict__.items() if v is not None}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class ArmWindow:
    """Running means of the arm statistics between two log lines."""
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, arms: dict[str, ArmStats]) -> None:
        for name, s in arms.items():
            group = "random" if name.startswith("random") else name
            acc = self.sums.setdefault(group, {})
            for key, value in s.__dict__.items():
                if value is not None:
                    acc[key] = acc.get(key, 0.0) + value
            self.counts[group] = self.counts.get(group, 0) + 1

    def means(self) -> dict[str, dict[str, float]]:
        out = {g: {k: round(v / self.counts[g], 5) for k, v in acc.items()} for g, acc in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return out



__all__ = ["ArmWindow", "JsonLog"]
