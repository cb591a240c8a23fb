"""Evaluation settings in the cache key: the dtype, context window and log-softmax dtype.

Before this revision an evaluation was cached under (sub-network, task, metric, fidelity,
task hash, harness version) only, so an fp32 study could be answered with a bf16 study's
scores. ``nas_evaluation.settings`` (canonical JSON, see
:func:`evaluators.types.scoring_settings`) joins the unique key.

Existing rows get the settings they were really scored with, from the study that scored
them: the earliest-created study with a trial on the row's sub-network whose tasks and
fidelity ladder include the row's task and fidelity, created before the row. lm-eval rows
get the study's dtype, the supernet's ``max_seq_len`` as context window and the dtype as
log-softmax dtype (the only behaviour before this revision); held-out-loss rows get the
dtype. Rows no study can account for, or where the candidate studies disagree, get
``{"legacy":"unknown"}``: never a guess that would merge different settings, so such a
row is simply never reused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNKNOWN = json.dumps({"legacy": "unknown"}, sort_keys=True, separators=(",", ":"))
_OLD_KEY = ["subnet_id", "task", "metric", "fidelity", "task_hash", "harness_version"]


def _settings(**values: Any) -> str:
    return json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True, separators=(",", ":"))


def _labels(spec: Mapping[str, Any]) -> set[str]:
    out = set()
    for rung in spec.get("fidelities") or []:
        if isinstance(rung, Mapping):
            limit, seed = rung.get("limit"), int(rung.get("seed", 0))
            out.add("full" if limit is None else f"n{int(limit)}-s{seed}")
    return out


def _tasks(spec: Mapping[str, Any]) -> set[str]:
    return {str(t.get("name")) if isinstance(t, Mapping) else str(t) for t in spec.get("tasks") or []}


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("nas_evaluation") as batch:
        batch.add_column(sa.Column("settings", sa.String(512), nullable=False, server_default=UNKNOWN))

    meta = sa.MetaData()
    study = sa.Table("nas_study", meta, sa.Column("id", sa.Integer), sa.Column("spec", sa.JSON),
                     sa.Column("supernet_id", sa.Integer), sa.Column("created_at", sa.DateTime(timezone=True)))
    supernet = sa.Table("nas_supernet", meta, sa.Column("id", sa.Integer), sa.Column("config", sa.JSON))
    trial = sa.Table("nas_trial", meta, sa.Column("study_id", sa.Integer), sa.Column("subnet_id", sa.Integer))
    evaluation = sa.Table(
        "nas_evaluation", meta, sa.Column("id", sa.Integer), sa.Column("subnet_id", sa.Integer),
        sa.Column("task", sa.String), sa.Column("fidelity", sa.String), sa.Column("harness_version", sa.String),
        sa.Column("created_at", sa.DateTime(timezone=True)), sa.Column("settings", sa.String),
    )
    max_seq = {row.id: _as_dict(row.config).get("max_seq_len") for row in bind.execute(sa.select(supernet))}
    studies = {
        row.id: (_as_dict(row.spec), max_seq.get(row.supernet_id), row.created_at)
        for row in bind.execute(sa.select(study))
    }
    by_subnet: dict[int, set[int]] = {}
    for row in bind.execute(sa.select(trial.c.study_id, trial.c.subnet_id).distinct()):
        by_subnet.setdefault(row.subnet_id, set()).add(row.study_id)

    updates: dict[str, list[int]] = {}
    for row in bind.execute(sa.select(evaluation)):
        candidates = []
        for sid in sorted(by_subnet.get(row.subnet_id, ()), key=lambda s: (studies[s][2] is None, studies[s][2], s)):
            spec, seq_len, created = studies[sid]
            if row.task not in _tasks(spec) or row.fidelity not in _labels(spec):
                continue
            if created is not None and row.created_at is not None and _naive(created) > _naive(row.created_at):
                continue
            dtype = str(spec.get("dtype", "bf16"))
            if str(row.harness_version).startswith("heldout"):
                candidates.append(_settings(dtype=dtype))
            else:
                candidates.append(_settings(dtype=dtype, max_length=seq_len, softmax=dtype))
        settings = candidates[0] if candidates and len(set(candidates)) == 1 else UNKNOWN
        if settings != UNKNOWN:
            updates.setdefault(settings, []).append(row.id)
    for settings, ids in updates.items():
        for start in range(0, len(ids), 500):
            bind.execute(evaluation.update().where(evaluation.c.id.in_(ids[start:start + 500])).values(settings=settings))

    with op.batch_alter_table("nas_evaluation") as batch:
        batch.drop_constraint("uq_nas_evaluation_key", type_="unique")
        batch.create_unique_constraint("uq_nas_evaluation_key", [*_OLD_KEY, "settings"])


def _naive(value: Any) -> Any:
    return value.replace(tzinfo=None) if getattr(value, "tzinfo", None) is not None else value


def downgrade() -> None:
    with op.batch_alter_table("nas_evaluation") as batch:
        batch.drop_constraint("uq_nas_evaluation_key", type_="unique")
        batch.create_unique_constraint("uq_nas_evaluation_key", _OLD_KEY)
        batch.drop_column("settings")
