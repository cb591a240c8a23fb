"""Initial schema: supernets, studies, sub-networks, evaluations, per-example scores, costs, trials.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "nas_supernet",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nas_supernet"),
        sa.UniqueConstraint("content_hash", name="uq_nas_supernet_content_hash"),
    )
    op.create_table(
        "nas_study",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("optuna_study_name", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("supernet_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_nas_study"),
        sa.UniqueConstraint("name", name="uq_nas_study_name"),
        sa.ForeignKeyConstraint(
            ["supernet_id"], ["nas_supernet.id"], name="fk_nas_study_supernet_id", ondelete="RESTRICT"
        ),
    )
    op.create_table(
        "nas_subnet",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("supernet_id", sa.Integer(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("n_layer", sa.Integer(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nas_subnet"),
        sa.UniqueConstraint("supernet_id", "config_hash", name="uq_nas_subnet_key"),
        sa.ForeignKeyConstraint(
            ["supernet_id"], ["nas_supernet.id"], name="fk_nas_subnet_supernet_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "nas_evaluation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subnet_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("fidelity", sa.String(255), nullable=False),
        sa.Column("harness_version", sa.String(64), nullable=False),
        sa.Column("task_hash", sa.String(128), nullable=False),
        sa.Column("wall_s", sa.Double(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nas_evaluation"),
        sa.UniqueConstraint(
            "subnet_id",
            "task",
            "metric",
            "fidelity",
            "task_hash",
            "harness_version",
            name="uq_nas_evaluation_key",
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["nas_subnet.id"], name="fk_nas_evaluation_subnet_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "nas_example_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("example_ids", sa.JSON(), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nas_example_scores"),
        sa.UniqueConstraint("evaluation_id", name="uq_nas_example_scores_evaluation_id"),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["nas_evaluation.id"],
            name="fk_nas_example_scores_evaluation_id",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "nas_cost",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subnet_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(512), nullable=False),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nas_cost"),
        sa.UniqueConstraint("subnet_id", "device", "metric", "method", name="uq_nas_cost_key"),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["nas_subnet.id"], name="fk_nas_cost_subnet_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "nas_trial",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("subnet_id", sa.Integer(), nullable=False),
        sa.Column("fidelity", sa.String(255), nullable=True),
        sa.Column("feasible", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nas_trial"),
        sa.UniqueConstraint("study_id", "trial_number", name="uq_nas_trial_key"),
        sa.ForeignKeyConstraint(
            ["study_id"], ["nas_study.id"], name="fk_nas_trial_study_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["nas_subnet.id"], name="fk_nas_trial_subnet_id", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    for table in (
        "nas_trial",
        "nas_cost",
        "nas_example_scores",
        "nas_evaluation",
        "nas_subnet",
        "nas_study",
        "nas_supernet",
    ):
        op.drop_table(table)
