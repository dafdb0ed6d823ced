"""Alembic environment: runs on the connection ``infra.db.migrate`` hands over,
or, from the alembic CLI, on the database that Settings (DATABASE_URL) names."""

from alembic import context

from infra.models import Base

connection = context.config.attributes.get("connection")


def run(conn) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    from htbase.config import Settings
    from infra.db import make_engine

    with make_engine(Settings.from_env()).begin() as conn:
        run(conn)
