"""The evaluation cache: supernets, sub-networks, evaluations, per-example scores and costs.

Everything is keyed so that nothing is ever evaluated twice: a sub-network is identified
by (supernet, config hash); an evaluation by (sub-network, task, metric, fidelity, task
hash, harness version); a cost by (sub-network, device, metric, method). Writers use
insert-or-get under those unique keys, so concurrent workers storing the same result end
with one row and no error. Lookups go by the supernet's *content hash* and the config
hash, so a second study on the same supernet finds the first one's results.

Fidelity, task hash and harness version are opaque strings to this module (e.g.
``"n100-s0"`` / ``"full"``, a hash of the task's resolved config, ``"0.4.8"``).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from storage._upsert import insert_or_get, upsert
from storage.database import Database
from storage.errors import StorageError
from storage.records import (
    CostRecord,
    EvaluationRecord,
    ExampleScoresRecord,
    SubnetRecord,
    SupernetRecord,
)
from storage.rows import CostRow, EvaluationRow, ExampleScores, NewEvaluation, SubnetRow, SupernetRow

COST_METHODS = ("analytic", "measured", "predicted")


# ------------------------------------------------------------------------ supernets
def upsert_supernet(
    db: Database,
    *,
    content_hash: str,
    name: str,
    path: str,
    config: dict[str, Any],
    space: dict[str, Any],
    provenance: dict[str, Any],
) -> int:
    """Store a supernet under its weights' ``content_hash``; return its id.

    The id is stable: storing the same hash again returns the same id and replaces the
    descriptive fields (``name``, ``path``, ``config``, ``space``, ``provenance``) with
    the new values (last write wins), e.g. after the checkpoint moved.
    """
    _require_text(content_hash=content_hash, name=name)
    values = {
        "content_hash": content_hash,
        "name": name,
        "path": str(path),
        "config": config,
        "space": space,
        "provenance": provenance,
    }
    update = {k: v for k, v in values.items() if k != "content_hash"}
    with db.session_scope() as session:
        return upsert(session, SupernetRecord, values, ("content_hash",), update)


def get_supernet(db: Database, content_hash: str) -> SupernetRow | None:
    """The supernet stored under ``content_hash``, or ``None``."""
    with db.session_scope() as session:
        rec = session.execute(
            select(SupernetRecord).where(SupernetRecord.content_hash == content_hash)
        ).scalar_one_or_none()
        return None if rec is None else _supernet_row(rec)


def list_supernets(db: Database) -> list[SupernetRow]:
    """Every stored supernet, oldest first."""
    with db.session_scope() as session:
        recs = session.execute(select(SupernetRecord).order_by(SupernetRecord.id)).scalars()
        return [_supernet_row(r) for r in recs]


# ----------------------------------------------------------------------- sub-networks
def get_or_create_subnet(
    db: Database,
    *,
    supernet_id: int,
    config_json: str,
    config_hash: str,
    n_layer: int,
    params: int,
) -> int:
    """Return the id of the sub-network ``config_hash`` of supernet ``supernet_id``, creating it.

    ``config_json`` should be the canonical JSON whose hash is ``config_hash``; it is
    stored verbatim. An existing row is returned unchanged.
    """
    _require_text(config_json=config_json, config_hash=config_hash)
    values = {
        "supernet_id": supernet_id,
        "config_json": config_json,
        "config_hash": config_hash,
        "n_layer": int(n_layer),
        "params": int(params),
    }
    try:
        with db.session_scope() as session:
            subnet_id, _ = insert_or_get(session, SubnetRecord, values, ("supernet_id", "config_hash"))
            return subnet_id
    except IntegrityError as exc:
        raise StorageError(f"cannot store sub-network {config_hash}: supernet id {supernet_id} does not exist") from exc


def get_subnet(db: Database, subnet_id: int) -> SubnetRow | None:
    """The sub-network with id ``subnet_id``, or ``None``."""
    with db.session_scope() as session:
        rec = session.get(SubnetRecord, subnet_id)
        return None if rec is None else _subnet_row(rec)


def find_subnet(db: Database, *, supernet_hash: str, config_hash: str) -> SubnetRow | None:
    """The sub-network ``config_hash`` of the supernet with content hash ``supernet_hash``, or ``None``."""
    with db.session_scope() as session:
        rec = session.execute(
            select(SubnetRecord)
            .join(SupernetRecord, SubnetRecord.supernet_id == SupernetRecord.id)
            .where(SupernetRecord.content_hash == supernet_hash, SubnetRecord.config_hash == config_hash)
        ).scalar_one_or_none()
        return None if rec is None else _subnet_row(rec)


# ------------------------------------------------------------------------ evaluations
def record_evaluation(db: Database, evaluation: NewEvaluation) -> int:
    """Store one metric of one task for a sub-network (insert-or-get); return its id.

    If an evaluation with the same (sub-network, task, metric, fidelity, task hash,
    harness version) exists, nothing is overwritten and its id is returned. Per-example
    scores are kept as float32 and added to an existing evaluation that has none yet.
    """
    e = evaluation
    _require_text(task=e.task, metric=e.metric, fidelity=e.fidelity, harness_version=e.harness_version, task_hash=e.task_hash,
                  settings=e.settings)
    if (e.example_ids is None) != (e.example_scores is None):
        raise StorageError(
            f"evaluation {e.task}/{e.metric}: give both example_ids and example_scores, or neither"
        )
    packed: bytes | None = None
    if e.example_ids is not None and e.example_scores is not None:
        if len(e.example_ids) != len(e.example_scores):
            raise StorageError(
                f"evaluation {e.task}/{e.metric}: {len(e.example_ids)} example ids but "
                f"{len(e.example_scores)} example scores; give one score per example id"
            )
        packed = _pack_scores(e.example_scores)
    values = {
        "subnet_id": e.subnet_id,
        "task": e.task,
        "metric": e.metric,
        "value": float(e.value),
        "stderr": None if e.stderr is None else float(e.stderr),
        "n_examples": int(e.n_examples),
        "fidelity": e.fidelity,
        "harness_version": e.harness_version,
        "task_hash": e.task_hash,
        "settings": e.settings,
        "wall_s": float(e.wall_s),
    }
    key = ("subnet_id", "task", "metric", "fidelity", "task_hash", "harness_version", "settings")
    try:
        with db.session_scope() as session:
            evaluation_id, _ = insert_or_get(session, EvaluationRecord, values, key)
            if packed is not None:
                assert e.example_ids is not None
                insert_or_get(
                    session,
                    ExampleScoresRecord,
                    {
                        "evaluation_id": evaluation_id,
                        "n_examples": len(e.example_ids),
                        "example_ids": list(e.example_ids),
                        "scores": packed,
                    },
                    ("evaluation_id",),
                )
            return evaluation_id
    except IntegrityError as exc:
        raise StorageError(
            f"cannot record evaluation {e.task}/{e.metric}: sub-network id {e.subnet_id} does not exist"
        ) from exc


def _task_match(task_hashes: Mapping[str, str], settings: Mapping[str, str]) -> Any:
    """Rows of the tasks in ``task_hashes`` under their task hash and scoring settings."""
    return or_(
        *[
            and_(EvaluationRecord.task == t, EvaluationRecord.task_hash == h, EvaluationRecord.settings == settings.get(t, ""))
            for t, h in task_hashes.items()
        ]
    )


def find_evaluations(
    db: Database,
    *,
    supernet_hash: str,
    config_hash: str,
    fidelity: str | Sequence[str],
    harness_version: str,
    task_hashes: Mapping[str, str],
    settings: Mapping[str, str],
    with_scores: bool = False,
) -> list[EvaluationRow]:
    """Cached evaluations of a sub-network, for the tasks in ``task_hashes`` ({task: task hash}).

    Returns every stored metric of each task whose task hash and ``settings`` ({task:
    scoring settings}) match, at ``fidelity`` (one label, or several) and
    ``harness_version``, ordered by (fidelity, task, metric). A task missing from the
    result has not been evaluated under those keys (a cache miss for that task). The
    sub-network is found by the supernet's content hash, so results recorded by any study
    on the same supernet are found. ``with_scores`` also returns the per-example scores.
    """
    if not task_hashes:
        return []
    labels = [fidelity] if isinstance(fidelity, str) else list(fidelity)
    task_match = _task_match(task_hashes, settings)
    stmt = (
        select(EvaluationRecord, SubnetRecord.config_hash, ExampleScoresRecord)
        .join(SubnetRecord, EvaluationRecord.subnet_id == SubnetRecord.id)
        .join(SupernetRecord, SubnetRecord.supernet_id == SupernetRecord.id)
        .outerjoin(ExampleScoresRecord, ExampleScoresRecord.evaluation_id == EvaluationRecord.id)
        .where(
            SupernetRecord.content_hash == supernet_hash,
            SubnetRecord.config_hash == config_hash,
            EvaluationRecord.fidelity.in_(labels),
            EvaluationRecord.harness_version == harness_version,
            task_match,
        )
        .order_by(EvaluationRecord.fidelity, EvaluationRecord.task, EvaluationRecord.metric)
    )
    with db.session_scope() as session:
        return [_evaluation_row(rec, chash, scores, with_scores) for rec, chash, scores in session.execute(stmt)]


def example_scores_of(
    db: Database, subnet_ids: Sequence[int], *, fidelity: str, harness_version: str,
    task_hashes: Mapping[str, str], settings: Mapping[str, str],
) -> list[EvaluationRow]:
    """The evaluations (with per-example scores) of several sub-networks at one fidelity,
    under the same keys as :func:`find_evaluations` — e.g. a front's members, for paired
    comparisons. Ordered by (sub-network, task, metric)."""
    if not subnet_ids or not task_hashes:
        return []
    task_match = _task_match(task_hashes, settings)
    stmt = (
        select(EvaluationRecord, SubnetRecord.config_hash, ExampleScoresRecord)
        .join(SubnetRecord, EvaluationRecord.subnet_id == SubnetRecord.id)
        .join(ExampleScoresRecord, ExampleScoresRecord.evaluation_id == EvaluationRecord.id)
        .where(
            EvaluationRecord.subnet_id.in_(list(subnet_ids)),
            EvaluationRecord.fidelity == fidelity,
            EvaluationRecord.harness_version == harness_version,
            task_match,
        )
        .order_by(EvaluationRecord.subnet_id, EvaluationRecord.task, EvaluationRecord.metric)
    )
    with db.session_scope() as session:
        return [_evaluation_row(rec, chash, scores, True) for rec, chash, scores in session.execute(stmt)]


def subnet_example_scores(
    db: Database, subnet_ids: Sequence[int], *, fidelity: str, settings: Mapping[str, str] | None = None
) -> list[EvaluationRow]:
    """Per-example scores of several sub-networks at ``fidelity``: for each (sub-network,
    task, metric) the newest evaluation that has them (under ``settings`` {task: settings}
    when given), by (sub-network, task, metric)."""
    if not subnet_ids:
        return []
    stmt = (
        select(EvaluationRecord, SubnetRecord.config_hash, ExampleScoresRecord)
        .join(SubnetRecord, EvaluationRecord.subnet_id == SubnetRecord.id)
        .join(ExampleScoresRecord, ExampleScoresRecord.evaluation_id == EvaluationRecord.id)
        .where(EvaluationRecord.subnet_id.in_(list(subnet_ids)), EvaluationRecord.fidelity == fidelity)
        .order_by(EvaluationRecord.id)
    )
    newest: dict[tuple[int, str, str], EvaluationRow] = {}
    with db.session_scope() as session:
        for rec, chash, scores in session.execute(stmt):
            if settings and rec.settings != settings.get(rec.task, rec.settings):
                continue
            newest[(rec.subnet_id, rec.task, rec.metric)] = _evaluation_row(rec, chash, scores, True)
    return [newest[k] for k in sorted(newest)]


def list_evaluations(db: Database, subnet_id: int) -> list[EvaluationRow]:
    """Every evaluation of one sub-network (all tasks, fidelities, versions), by (task, metric, fidelity, id)."""
    stmt = (
        select(EvaluationRecord, SubnetRecord.config_hash, ExampleScoresRecord)
        .join(SubnetRecord, EvaluationRecord.subnet_id == SubnetRecord.id)
        .outerjoin(ExampleScoresRecord, ExampleScoresRecord.evaluation_id == EvaluationRecord.id)
        .where(EvaluationRecord.subnet_id == subnet_id)
        .order_by(EvaluationRecord.task, EvaluationRecord.metric, EvaluationRecord.fidelity, EvaluationRecord.id)
    )
    with db.session_scope() as session:
        return [_evaluation_row(rec, chash, scores) for rec, chash, scores in session.execute(stmt)]


def get_example_scores(db: Database, evaluation_id: int) -> ExampleScores | None:
    """The per-example scores recorded with evaluation ``evaluation_id``, or ``None`` if none were."""
    with db.session_scope() as session:
        rec = session.execute(
            select(ExampleScoresRecord).where(ExampleScoresRecord.evaluation_id == evaluation_id)
        ).scalar_one_or_none()
        if rec is None:
            return None
        return ExampleScores(
            evaluation_id=rec.evaluation_id,
            example_ids=tuple(rec.example_ids),
            scores=_unpack_scores(rec.scores),
        )


# ------------------------------------------------------------------------------ costs
def record_cost(
    db: Database, *, subnet_id: int, device: str, metric: str, value: float, method: str
) -> int:
    """Store one cost of a sub-network (insert-or-get); return its id.

    ``device`` is a fingerprint string (CPU/GPU model, torch version, dtype); ``metric``
    a name such as ``params``, ``flops_per_token``, ``memory``, ``prefill_latency_ms``;
    ``method`` one of ``analytic``, ``measured``, ``predicted``. If a cost with the same
    (sub-network, device, metric, method) exists, it is kept and its id returned.
    """
    _require_text(device=device, metric=metric)
    if method not in COST_METHODS:
        raise StorageError(f"cost {metric}: unknown method {method!r}; use one of {', '.join(COST_METHODS)}")
    values = {
        "subnet_id": subnet_id,
        "device": device,
        "metric": metric,
        "value": float(value),
        "method": method,
    }
    try:
        with db.session_scope() as session:
            cost_id, _ = insert_or_get(session, CostRecord, values, ("subnet_id", "device", "metric", "method"))
            return cost_id
    except IntegrityError as exc:
        raise StorageError(f"cannot record cost {metric}: sub-network id {subnet_id} does not exist") from exc


def find_costs(
    db: Database,
    *,
    supernet_hash: str,
    config_hash: str,
    device: str | None = None,
    metrics: Sequence[str] | None = None,
    method: str | None = None,
) -> list[CostRow]:
    """Cached costs of a sub-network, ordered by (metric, device, method).

    Filters: ``device`` (exact fingerprint), ``metrics`` (any of these names), ``method``;
    ``None`` means any.
    """
    stmt = (
        select(CostRecord, SubnetRecord.config_hash)
        .join(SubnetRecord, CostRecord.subnet_id == SubnetRecord.id)
        .join(SupernetRecord, SubnetRecord.supernet_id == SupernetRecord.id)
        .where(SupernetRecord.content_hash == supernet_hash, SubnetRecord.config_hash == config_hash)
        .order_by(CostRecord.metric, CostRecord.device, CostRecord.method)
    )
    if device is not None:
        stmt = stmt.where(CostRecord.device == device)
    if metrics is not None:
        stmt = stmt.where(CostRecord.metric.in_(list(metrics)))
    if method is not None:
        stmt = stmt.where(CostRecord.method == method)
    with db.session_scope() as session:
        return [_cost_row(rec, chash) for rec, chash in session.execute(stmt)]


# ---------------------------------------------------------------------------- helpers
def _require_text(**fields: str) -> None:
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise StorageError(f"{name} must be a non-empty string, got {value!r}")


def _pack_scores(scores: Sequence[float]) -> bytes:
    packed = array("f", (float(s) for s in scores))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack_scores(blob: bytes) -> tuple[float, ...]:
    packed = array("f")
    packed.frombytes(blob)
    if sys.byteorder == "big":
        packed.byteswap()
    return tuple(packed)


def _supernet_row(rec: SupernetRecord) -> SupernetRow:
    return SupernetRow(
        id=rec.id,
        content_hash=rec.content_hash,
        name=rec.name,
        path=rec.path,
        config=rec.config,
        space=rec.space,
        provenance=rec.provenance,
        created_at=rec.created_at,
    )


def _subnet_row(rec: SubnetRecord) -> SubnetRow:
    return SubnetRow(
        id=rec.id,
        supernet_id=rec.supernet_id,
        config_json=rec.config_json,
        config_hash=rec.config_hash,
        n_layer=rec.n_layer,
        params=rec.params,
        created_at=rec.created_at,
    )


def _evaluation_row(
    rec: EvaluationRecord, config_hash: str, scores: ExampleScoresRecord | None, with_scores: bool = False
) -> EvaluationRow:
    unpacked = with_scores and scores is not None
    return EvaluationRow(
        id=rec.id,
        subnet_id=rec.subnet_id,
        config_hash=config_hash,
        task=rec.task,
        metric=rec.metric,
        value=rec.value,
        stderr=rec.stderr,
        n_examples=rec.n_examples,
        fidelity=rec.fidelity,
        harness_version=rec.harness_version,
        task_hash=rec.task_hash,
        settings=rec.settings,
        wall_s=rec.wall_s,
        created_at=rec.created_at,
        has_example_scores=scores is not None,
        example_ids=tuple(scores.example_ids) if unpacked else None,
        example_scores=_unpack_scores(scores.scores) if unpacked else None,
    )


def _cost_row(rec: CostRecord, config_hash: str) -> CostRow:
    return CostRow(
        id=rec.id,
        subnet_id=rec.subnet_id,
        config_hash=config_hash,
        device=rec.device,
        metric=rec.metric,
        value=rec.value,
        method=rec.method,
        created_at=rec.created_at,
    )


__all__ = [
    "COST_METHODS",
    "find_costs",
    "find_evaluations",
    "find_subnet",
    "get_example_scores",
    "get_or_create_subnet",
    "get_subnet",
    "get_supernet",
    "list_evaluations",
    "list_supernets",
    "record_cost",
    "record_evaluation",
    "upsert_supernet",
]
