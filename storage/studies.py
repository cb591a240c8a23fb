"""Studies, their trials, and a study's results as one pandas DataFrame.

A study row names the Optuna study that lives in the same database; a trial row links
an Optuna trial *number* to the sub-network it proposed and the fidelity it reached.
Nothing here reads or writes Optuna's own tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from storage._upsert import insert_or_get, upsert
from storage.database import Database
from storage.errors import StorageError
from storage.records import (
    CostRecord,
    EvaluationRecord,
    StudyRecord,
    SubnetRecord,
    SupernetRecord,
    TrialRecord,
    utcnow,
)
from storage.rows import StudyRow, TrialRow

STUDY_STATUSES = ("created", "running", "finished", "failed", "stopped")
_TERMINAL_STATUSES = ("finished", "failed", "stopped")
# Which cost wins when a sub-network has the same cost metric from several methods.
_COST_METHOD_PREFERENCE = {"measured": 0, "predicted": 1, "analytic": 2}

#: The columns every :func:`study_results` frame starts with, in this order.
BASE_COLUMNS = ("trial", "state", "feasible", "fidelity", "subnet_id", "config_hash", "config_json")


# ---------------------------------------------------------------------------- studies
def create_study(
    db: Database, *, name: str, optuna_study_name: str, spec: dict[str, Any], supernet_id: int
) -> int:
    """Create the study ``name`` on supernet ``supernet_id`` (status ``created``); return its id.

    If a study of that name already exists on the same supernet with the same Optuna
    study name, its id is returned (resume) and its stored spec is left unchanged.
    Raises :class:`StorageError` if it exists on another supernet or Optuna study, or if
    the supernet does not exist.
    """
    if not name or not name.strip():
        raise StorageError("study name must be a non-empty string")
    values = {
        "name": name,
        "optuna_study_name": optuna_study_name,
        "spec": spec,
        "supernet_id": supernet_id,
        "status": "created",
    }
    try:
        with db.session_scope() as session:
            study_id, created = insert_or_get(session, StudyRecord, values, ("name",))
            if created:
                return study_id
            existing = session.get_one(StudyRecord, study_id)
            if existing.supernet_id != supernet_id:
                hashes = dict(
                    session.execute(
                        select(SupernetRecord.id, SupernetRecord.content_hash).where(
                            SupernetRecord.id.in_([existing.supernet_id, supernet_id])
                        )
                    ).all()
                )
                raise StorageError(
                    f"study {name!r} already exists on supernet "
                    f"{hashes.get(existing.supernet_id, existing.supernet_id)}, not on supernet "
                    f"{hashes.get(supernet_id, supernet_id)}; results of different supernets never "
                    f"mix: choose another study name"
                )
            if existing.optuna_study_name != optuna_study_name:
                raise StorageError(
                    f"study {name!r} already exists and is linked to Optuna study "
                    f"{existing.optuna_study_name!r}, not {optuna_study_name!r}; choose another study name"
                )
            return study_id
    except IntegrityError as exc:
        raise StorageError(f"cannot create study {name!r}: supernet id {supernet_id} does not exist") from exc


def get_study(db: Database, name: str) -> StudyRow | None:
    """The study called ``name``, or ``None``."""
    with db.session_scope() as session:
        rows = _study_rows(session, StudyRecord.name == name)
        return rows[0] if rows else None


def list_studies(db: Database) -> list[StudyRow]:
    """Every study, oldest first, with its supernet hash and number of recorded trials."""
    with db.session_scope() as session:
        return _study_rows(session, None)


def set_study_status(db: Database, name: str, status: str) -> None:
    """Set a study's status (one of :data:`STUDY_STATUSES`).

    ``finished``, ``failed`` and ``stopped`` also set ``finished_at`` to now; ``created``
    and ``running`` clear it.
    """
    if status not in STUDY_STATUSES:
        raise StorageError(f"unknown study status {status!r}; use one of {', '.join(STUDY_STATUSES)}")
    with db.session_scope() as session:
        rec = session.execute(select(StudyRecord).where(StudyRecord.name == name)).scalar_one_or_none()
        if rec is None:
            raise _unknown_study(session, name, db)
        rec.status = status
        rec.finished_at = utcnow() if status in _TERMINAL_STATUSES else None


# ----------------------------------------------------------------------------- trials
def record_trial(
    db: Database,
    *,
    study_id: int,
    trial_number: int,
    subnet_id: int,
    fidelity: str | None,
    feasible: bool,
    state: str,
) -> int:
    """Record (or update) Optuna trial ``trial_number`` of study ``study_id``; return the row id.

    ``fidelity`` is the highest fidelity the trial has reached (``None`` before any
    evaluation); ``state`` is Optuna's trial state name (e.g. ``RUNNING``, ``COMPLETE``,
    ``PRUNED``, ``FAIL``). Recording the same (study, trial number) again overwrites
    sub-network, fidelity, feasibility and state: call it whenever the trial moves on.
    """
    if not state or not state.strip():
        raise StorageError("trial state must be a non-empty string such as 'COMPLETE'")
    values = {
        "study_id": study_id,
        "trial_number": int(trial_number),
        "subnet_id": subnet_id,
        "fidelity": fidelity,
        "feasible": bool(feasible),
        "state": state,
    }
    update = {
        "subnet_id": subnet_id,
        "fidelity": fidelity,
        "feasible": bool(feasible),
        "state": state,
        "updated_at": utcnow(),
    }
    try:
        with db.session_scope() as session:
            return upsert(session, TrialRecord, values, ("study_id", "trial_number"), update)
    except IntegrityError as exc:
        raise StorageError(
            f"cannot record trial {trial_number}: study id {study_id} or sub-network id "
            f"{subnet_id} does not exist"
        ) from exc


def list_trials(db: Database, study_name: str) -> list[TrialRow]:
    """Every recorded trial of the study ``study_name``, by trial number."""
    with db.session_scope() as session:
        study_id = _study_id(session, study_name, db)
        stmt = (
            select(TrialRecord, SubnetRecord.config_hash)
            .join(SubnetRecord, TrialRecord.subnet_id == SubnetRecord.id)
            .where(TrialRecord.study_id == study_id)
            .order_by(TrialRecord.trial_number)
        )
        return [
            TrialRow(
                id=t.id,
                study_id=t.study_id,
                trial_number=t.trial_number,
                subnet_id=t.subnet_id,
                config_hash=chash,
                fidelity=t.fidelity,
                feasible=t.feasible,
                state=t.state,
                created_at=t.created_at,
                updated_at=t.updated_at,
            )
            for t, chash in session.execute(stmt)
        ]


# ---------------------------------------------------------------------------- results
def study_results(
    db: Database,
    study_name: str,
    *,
    device: str | None = None,
    all_fidelities: bool = False,
    flatten_config: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
    confirmed: str | None = None,
) -> pd.DataFrame:
    """A study's results: one row per recorded trial, ordered by trial number.

    Columns, in this order:

    * ``trial`` (int, Optuna trial number), ``state`` (str), ``feasible`` (bool),
      ``fidelity`` (str or None: the highest fidelity the trial reached), ``subnet_id``
      (int), ``config_hash`` (str), ``config_json`` (str, canonical config);
    * ``config.<dim>`` for every entry of the flattened config: nested dict keys are
      joined with ``.``; list values stay whole as tuples (e.g. ``config.d_ff`` =
      ``(1536, 1024)``). Pass ``flatten_config`` (config dict -> {dim: value}) to name
      dims yourself; its keys are prefixed with ``config.`` as well;
    * ``<task>/<metric>`` (float) and ``<task>/<metric>_stderr`` (float) for every
      metric evaluated at the trial's fidelity. Where several evaluations share
      (task, metric, fidelity) (other task hashes or harness versions), the most
      recently recorded wins. A trial without a fidelity uses the fidelity of its
      sub-network's evaluations with the most examples. NaN where not evaluated;
    * ``<metric>`` (float) for every cost metric (e.g. ``params``, ``flops_per_token``);
      only costs for ``device`` when given, else any device; when one metric has
      several rows, ``measured`` beats ``predicted`` beats ``analytic``, then the newest;
    * with ``all_fidelities=True``, also ``<task>/<metric>@<fidelity>`` for every
      fidelity at which the trial's sub-network was evaluated;
    * with ``confirmed=LABEL`` (a confirmation fidelity), ``<task>/<metric>@confirmed`` and
      ``<task>/<metric>_stderr@confirmed`` for the trials scored at it.

    When the study's spec records the scoring settings of its tasks (``scoring``: {task:
    settings}), only evaluations under those settings count: another study's scores of
    the same sub-network in another dtype never leak into this one's.

    The frame has these columns even with zero trials (then without dynamic columns).
    Raises :class:`StorageError` if there is no study called ``study_name``.
    """
    with db.session_scope() as session:
        study_id = _study_id(session, study_name, db)
        spec = session.execute(select(StudyRecord.spec).where(StudyRecord.id == study_id)).scalar_one()
        trials = session.execute(
            select(
                TrialRecord.trial_number,
                TrialRecord.state,
                TrialRecord.feasible,
                TrialRecord.fidelity,
                TrialRecord.subnet_id,
                SubnetRecord.config_hash,
                SubnetRecord.config_json,
            )
            .join(SubnetRecord, TrialRecord.subnet_id == SubnetRecord.id)
            .where(TrialRecord.study_id == study_id)
            .order_by(TrialRecord.trial_number)
        ).all()
        subnets = select(TrialRecord.subnet_id).where(TrialRecord.study_id == study_id).scalar_subquery()
        evaluations = session.execute(
            select(
                EvaluationRecord.id,
                EvaluationRecord.subnet_id,
                EvaluationRecord.task,
                EvaluationRecord.metric,
                EvaluationRecord.value,
                EvaluationRecord.stderr,
                EvaluationRecord.fidelity,
                EvaluationRecord.n_examples,
                EvaluationRecord.settings,
            )
            .where(EvaluationRecord.subnet_id.in_(subnets))
            .order_by(EvaluationRecord.id)
        ).all()
        cost_stmt = (
            select(CostRecord.id, CostRecord.subnet_id, CostRecord.metric, CostRecord.value, CostRecord.method)
            .where(CostRecord.subnet_id.in_(subnets))
            .order_by(CostRecord.id)
        )
        if device is not None:
            cost_stmt = cost_stmt.where(CostRecord.device == device)
        costs = session.execute(cost_stmt).all()

    # subnet -> fidelity -> (task, metric) -> (value, stderr); later ids overwrite earlier ones.
    evals: dict[int, dict[str, dict[tuple[str, str], tuple[float, float | None]]]] = {}
    examples: dict[int, dict[str, int]] = {}
    settings = (spec or {}).get("scoring") if isinstance(spec, Mapping) else None
    settings = settings if isinstance(settings, Mapping) else {}
    for e in evaluations:
        if e.settings != settings.get(e.task, e.settings):
            continue
        evals.setdefault(e.subnet_id, {}).setdefault(e.fidelity, {})[(e.task, e.metric)] = (e.value, e.stderr)
        by_fid = examples.setdefault(e.subnet_id, {})
        by_fid[e.fidelity] = max(by_fid.get(e.fidelity, 0), e.n_examples)
    best_cost: dict[int, dict[str, tuple[int, int, float]]] = {}
    for c in costs:
        rank = (_COST_METHOD_PREFERENCE.get(c.method, 9), -c.id)
        slot = best_cost.setdefault(c.subnet_id, {})
        if c.metric not in slot or rank < slot[c.metric][:2]:
            slot[c.metric] = (*rank, c.value)

    flatten = flatten_config or _flatten
    records: list[dict[str, Any]] = []
    config_cols: dict[str, None] = {}
    metric_keys: set[tuple[str, str]] = set()
    cost_cols: set[str] = set()
    fid_cols: set[str] = set()
    for t in trials:
        row: dict[str, Any] = {
            "trial": t.trial_number,
            "state": t.state,
            "feasible": bool(t.feasible),
            "fidelity": t.fidelity,
            "subnet_id": t.subnet_id,
            "config_hash": t.config_hash,
            "config_json": t.config_json,
        }
        for dim, value in flatten(json.loads(t.config_json)).items():
            col = f"config.{dim}"
            config_cols[col] = None
            row[col] = value
        by_fidelity = evals.get(t.subnet_id, {})
        fidelity = t.fidelity
        if fidelity is None and by_fidelity:
            counts = examples[t.subnet_id]
            fidelity = max(by_fidelity, key=lambda f: (counts[f], f))
        at_fidelity = by_fidelity.get(fidelity, {}) if fidelity is not None else {}
        for (task, metric), (value, stderr) in at_fidelity.items():
            metric_keys.add((task, metric))
            row[f"{task}/{metric}"] = value
            row[f"{task}/{metric}_stderr"] = stderr
        if confirmed is not None:
            for (task, metric), (value, stderr) in by_fidelity.get(confirmed, {}).items():
                fid_cols.update((f"{task}/{metric}@confirmed", f"{task}/{metric}_stderr@confirmed"))
                row[f"{task}/{metric}@confirmed"] = value
                row[f"{task}/{metric}_stderr@confirmed"] = stderr
        if all_fidelities:
            for fid, metrics in by_fidelity.items():
                for (task, metric), (value, _stderr) in metrics.items():
                    col = f"{task}/{metric}@{fid}"
                    fid_cols.add(col)
                    row[col] = value
        for metric, (_, _, value) in best_cost.get(t.subnet_id, {}).items():
            cost_cols.add(metric)
            row[metric] = value
        records.append(row)

    metric_cols = [c for task, metric in sorted(metric_keys) for c in (f"{task}/{metric}", f"{task}/{metric}_stderr")]
    columns = [*BASE_COLUMNS, *config_cols, *metric_cols, *sorted(cost_cols), *sorted(fid_cols)]
    frame = pd.DataFrame.from_records(records, columns=columns)
    float_cols = [*metric_cols, *sorted(cost_cols), *sorted(fid_cols)]
    frame[float_cols] = frame[float_cols].astype("float64")
    frame["trial"] = frame["trial"].astype("int64")
    frame["subnet_id"] = frame["subnet_id"].astype("int64")
    frame["feasible"] = frame["feasible"].astype("bool")
    return frame


def study_fidelities(db: Database, study_name: str) -> dict[str, int]:
    """Every fidelity label at which a trial's sub-network of the study was evaluated, with
    the largest number of examples seen at it."""
    with db.session_scope() as session:
        study_id = _study_id(session, study_name, db)
        subnets = select(TrialRecord.subnet_id).where(TrialRecord.study_id == study_id).scalar_subquery()
        rows = session.execute(
            select(EvaluationRecord.fidelity, func.max(EvaluationRecord.n_examples))
            .where(EvaluationRecord.subnet_id.in_(subnets))
            .group_by(EvaluationRecord.fidelity)
        ).all()
    return {fidelity: int(n) for fidelity, n in rows}


def update_study_spec(db: Database, name: str, spec: Mapping[str, Any]) -> None:
    """Replace the stored spec of study ``name`` (e.g. when a confirmation set is added to a
    study created before they existed)."""
    with db.session_scope() as session:
        rec = session.execute(select(StudyRecord).where(StudyRecord.name == name)).scalar_one_or_none()
        if rec is None:
            raise _unknown_study(session, name, db)
        rec.spec = dict(spec)


# ---------------------------------------------------------------------------- helpers
def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = _freeze(value)
        else:
            out[name] = value
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _study_rows(session: Any, where: Any) -> list[StudyRow]:
    n_trials = (
        select(func.count(TrialRecord.id)).where(TrialRecord.study_id == StudyRecord.id).scalar_subquery()
    )
    stmt = (
        select(StudyRecord, SupernetRecord.content_hash, n_trials)
        .join(SupernetRecord, StudyRecord.supernet_id == SupernetRecord.id)
        .order_by(StudyRecord.created_at, StudyRecord.id)
    )
    if where is not None:
        stmt = stmt.where(where)
    return [
        StudyRow(
            id=s.id,
            name=s.name,
            optuna_study_name=s.optuna_study_name,
            spec=s.spec,
            supernet_id=s.supernet_id,
            supernet_hash=shash,
            status=s.status,
            created_at=s.created_at,
            finished_at=s.finished_at,
            n_trials=int(count),
        )
        for s, shash, count in session.execute(stmt)
    ]


def _study_id(session: Any, name: str, db: Database) -> int:
    study_id = session.execute(select(StudyRecord.id).where(StudyRecord.name == name)).scalar_one_or_none()
    if study_id is None:
        raise _unknown_study(session, name, db)
    return int(study_id)


def _unknown_study(session: Any, name: str, db: Database) -> StorageError:
    known = session.execute(select(StudyRecord.name).order_by(StudyRecord.name)).scalars().all()
    hint = f"known studies: {', '.join(known)}" if known else "it has no studies yet"
    return StorageError(f"no study named {name!r} in {db.safe_url}; {hint}")


__all__ = [
    "BASE_COLUMNS",
    "STUDY_STATUSES",
    "create_study",
    "get_study",
    "list_studies",
    "list_trials",
    "record_trial",
    "set_study_status",
    "study_results",
]
