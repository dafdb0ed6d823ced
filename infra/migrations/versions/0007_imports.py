"""imports and import_entries: a bookmark file's URLs, each with its outcome, captured a few at a time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("archivers", sa.JSON(), nullable=False),
        sa.Column("recapture", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("import_id"),
    )
    op.create_index("ix_imports_created_at", "imports", ["created_at"], unique=False)
    op.create_table(
        "import_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["imports.import_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_import_entries_import_outcome", "import_entries", ["import_id", "outcome", "position"], unique=False
    )
    # advance() looks for started entries whose captures are unfinished, across imports.
    op.create_index("ix_import_entries_outcome", "import_entries", ["outcome"], unique=False)


def downgrade() -> None:
    op.drop_table("import_entries")
    op.drop_table("imports")
