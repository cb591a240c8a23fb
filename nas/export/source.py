"""What an export needs to know about one trial, read from storage: its sub-network, the
supernet it came from, its scores at the trial's fidelity (and on the study's held-out
confirmation documents, when it was confirmed) and its costs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import storage
from nas.errors import NasError
from nas.model.subnet import SubnetConfig
from nas.search.results import confirmation_fidelity


@dataclass(frozen=True)
class ScoreRecord:
    task: str
    metric: str
    value: float
    stderr: float | None
    n_examples: int
    fidelity: str
    harness_version: str
    task_hash: str


@dataclass(frozen=True)
class CostEntry:
    metric: str
    value: float
    method: str
    device: str


@dataclass(frozen=True)
class ExportSource:
    """Everything an export needs about one trial, read from storage."""

    study: str
    trial: int
    subnet: SubnetConfig
    supernet_hash: str
    supernet_path: str
    fidelity: str | None
    spec: dict[str, Any]
    scores: tuple[ScoreRecord, ...] = ()
    costs: tuple[CostEntry, ...] = ()
    feasible: bool = True
    #: scores on the documents the search never saw (``nas confirm``); empty if unconfirmed
    confirmed: tuple[ScoreRecord, ...] = ()
    z: float = 1.96  # the study's interval width in standard errors

    @property
    def harness_versions(self) -> tuple[str, ...]:
        return tuple(sorted({s.harness_version for s in self.scores}))


def export_source(db: Any, study: str, trial: int) -> ExportSource:
    """Read trial ``trial`` of study ``study`` (its sub-network, supernet, scores at the
    trial's fidelity and on the confirmation documents, costs) from the open
    ``storage.Database`` ``db``; only scores made with the study's scoring settings."""
    row = storage.get_study(db, study)
    if row is None:
        storage.list_trials(db, study)  # raises storage's "no study named ... known: ..." error
        raise NasError(f"no study named {study!r}")
    trials = {t.trial_number: t for t in storage.list_trials(db, study)}
    if trial not in trials:
        have = sorted(trials)
        span = f"{have[0]}..{have[-1]}" if have else "none yet"
        raise NasError(f"study {study!r} has no trial {trial} (recorded trials: {span}); pick one from `nas pick {study}`")
    t = trials[trial]
    subnet_row = storage.get_subnet(db, t.subnet_id)
    supernet = storage.get_supernet(db, row.supernet_hash)
    if subnet_row is None or supernet is None:
        raise NasError(f"study {study!r} trial {trial}: its sub-network or supernet row is missing from the database")
    subnet = SubnetConfig.from_json(subnet_row.config_json)
    evals = storage.list_evaluations(db, t.subnet_id)
    spec = dict(row.spec or {})
    scoring = spec.get("scoring") if isinstance(spec.get("scoring"), dict) else {}
    # the study's own scoring settings: the same sub-network may be scored in another dtype elsewhere
    evals = [e for e in evals if e.settings == scoring.get(e.task, e.settings)]
    fidelity = t.fidelity
    if fidelity is None and evals:
        fidelity = max(evals, key=lambda e: e.n_examples).fidelity
    confirmation = spec.get("confirmation")
    z = float(confirmation.get("z", 1.96)) if isinstance(confirmation, dict) else 1.96
    costs = tuple(
        CostEntry(c.metric, c.value, c.method, c.device)
        for c in storage.find_costs(db, supernet_hash=row.supernet_hash, config_hash=subnet_row.config_hash)
    )
    return ExportSource(
        study=study,
        trial=trial,
        subnet=subnet,
        supernet_hash=row.supernet_hash,
        supernet_path=supernet.path,
        fidelity=fidelity,
        spec=spec,
        scores=_latest(evals, fidelity),
        costs=costs,
        feasible=t.feasible,
        confirmed=_latest(evals, confirmation_fidelity(db, study, spec)),
        z=z,
    )


def _latest(evals: list[Any], fidelity: str | None) -> tuple[ScoreRecord, ...]:
    """The newest evaluation of each (task, metric) at ``fidelity``, as score records."""
    latest: dict[tuple[str, str], Any] = {}
    for e in sorted(evals, key=lambda e: e.id):
        if fidelity is not None and e.fidelity == fidelity:
            latest[(e.task, e.metric)] = e
    return tuple(
        ScoreRecord(e.task, e.metric, e.value, e.stderr, e.n_examples, e.fidelity, e.harness_version, e.task_hash)
        for _, e in sorted(latest.items())
    )


__all__ = ["CostEntry", "ExportSource", "ScoreRecord", "export_source"]
