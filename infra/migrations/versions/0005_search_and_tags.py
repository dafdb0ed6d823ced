"""search_documents (FTS5 on SQLite, a tsvector under GIN on PostgreSQL) and item_tags

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FIELDS = ("title", "url", "site", "body", "summary", "key_points", "tags")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "item_tags",
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "tag"),
    )
    op.create_index("ix_item_tags_tag", "item_tags", ["tag"], unique=False)

    op.create_table(
        "search_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        *(sa.Column(name, sa.Text(), nullable=False) for name in FIELDS),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("captured_at", sa.DateTime(), nullable=False),
        *(
            (
                sa.Column("config", sa.String(length=32), nullable=False),
                sa.Column("document", postgresql.TSVECTOR(), nullable=False),
            )
            if postgres
            else ()
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id"),
    )
    op.create_index("ix_search_documents_task_id", "search_documents", ["task_id"], unique=False)
    if postgres:
        op.create_index(
            "ix_search_documents_document", "search_documents", ["document"], unique=False, postgresql_using="gin"
        )
        op.create_index("ix_search_documents_config", "search_documents", ["config"], unique=False)
        return

    columns = ", ".join(FIELDS)
    new, old = (", ".join(f"{row}.{name}" for name in FIELDS) for row in ("new", "old"))
    op.execute(
        f"CREATE VIRTUAL TABLE search_fts USING fts5({columns}, content='search_documents', "
        "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
    )
    insert = f"INSERT INTO search_fts(rowid, {columns}) VALUES (new.id, {new});"
    delete = f"INSERT INTO search_fts(search_fts, rowid, {columns}) VALUES ('delete', old.id, {old});"
    op.execute(f"CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN {insert} END")
    op.execute(f"CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN {delete} END")
    op.execute(f"CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN {delete} {insert} END")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER search_documents_{trigger}")
        op.execute("DROP TABLE search_fts")
    op.drop_table("search_documents")
    op.drop_index("ix_item_tags_tag", table_name="item_tags")
    op.drop_table("item_tags")
