"""replica_pending: tasks whose Firestore document waits for a retry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_pending",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id"),
    )
    with op.batch_alter_table("replica_pending", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replica_pending_next_attempt_at"), ["next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("replica_pending", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replica_pending_next_attempt_at"))

    op.drop_table("replica_pending")
