"""Lookup indexes: trials by sub-network (cache reuse across studies) and studies by supernet.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_nas_trial_subnet_id", "nas_trial", ["subnet_id"])
    op.create_index("ix_nas_study_supernet_id", "nas_study", ["supernet_id"])


def downgrade() -> None:
    op.drop_index("ix_nas_study_supernet_id", table_name="nas_study")
    op.drop_index("ix_nas_trial_subnet_id", table_name="nas_trial")
