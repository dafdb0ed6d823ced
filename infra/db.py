"""Database engines and schema migrations (SQLite embedded, Postgres for real)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from htbase.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if settings.instance_connection_name:
        return _cloud_sql_engine(settings)
    # pool_pre_ping: a Postgres restart must not poison the pool with dead connections.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def new_session(engine: Engine) -> Session:
    """A session whose objects stay readable after commit (they are handed to other layers)."""
    return Session(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the API read while worker threads write; the busy timeout makes writers queue.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _cloud_sql_engine(settings: Settings) -> Engine:
    """Cloud SQL through the Python connector (IAM-authorized TLS, no public IP needed)."""
    from google.cloud.sql.connector import Connector
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    connector = Connector()

    def connect():
        return connector.connect(
            settings.instance_connection_name, "pg8000",
            user=url.username, password=url.password or "", db=url.database,
        )

    return create_engine("postgresql+pg8000://", creator=connect, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
