"""Database engines and schema migrations (SQLite embedded, Postgres for real, Cloud SQL in the cloud)."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from htbase.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SERVICE_ACCOUNT_DOMAIN = ".gserviceaccount.com"


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE changed (its result is a cursor result; the types don't say so)."""
    return cast("CursorResult[Any]", result).rowcount


def make_engine(settings: Settings) -> Engine:
    if settings.instance_connection_name:
        return _cloud_sql_engine(settings)
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, **_pool(settings))


def _pool(settings: Settings) -> dict[str, Any]:
    # DB_POOL_SIZE is the most connections this process opens (no overflow): the deployment's
    # sum over instances must fit the server's max_connections. pool_pre_ping: a Postgres
    # restart must not poison the pool with dead connections.
    return {"pool_size": settings.db_pool_size, "max_overflow": 0, "pool_pre_ping": True}


def _remember_statement_conversions() -> None:
    """pg8000 turns each statement's ``%s`` into ``$1``, ``$2``… by scanning it character by
    character in Python, on every execution: a tenth of an accept's CPU. SQLAlchemy sends the same
    few statements again and again, and for its paramstyle ("format") the result depends on the
    statement alone, so each statement is converted once."""
    import pg8000.legacy

    convert = pg8000.legacy.convert_paramstyle

    @functools.lru_cache(maxsize=2048)
    def converted_statement(style: str, query: str) -> str:
        return convert(style, query, ())[0]

    def convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
        if style != "format":
            return convert(style, query, args)
        return converted_statement(style, query), args

    pg8000.legacy.convert_paramstyle = convert_paramstyle


_remember_statement_conversions()


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


def iam_database_user(service_account_email: str) -> str:
    """The Postgres user of a service account under IAM database authentication."""
    return service_account_email.removesuffix(SERVICE_ACCOUNT_DOMAIN)


class CloudSqlConnections:
    """Connections through the Cloud SQL Python connector (IAM-authorized TLS, no authorized networks).

    The connector runs a thread and an event loop, which a fork would not carry
    over: it is created on the first connection, in the process that uses it,
    and closed when the engine is disposed (``Runtime.close``, or the gunicorn
    master's dispose after it migrated, before it forks the workers). Refresh is
    lazy: with CPU only during requests, a background refresh may never run.
    """

    def __init__(self, settings: Settings) -> None:
        from google.cloud.sql.connector import IPTypes

        self.instance = settings.instance_connection_name
        self.iam_auth = settings.cloud_sql_iam_auth
        self.ip_type = IPTypes[settings.cloud_sql_ip_type.upper()]
        url = make_url(settings.database_url)
        self.user, self.password, self.database = url.username or "", url.password or "", url.database
        self._connector: Any = None
        self._lock = threading.Lock()

    def connect(self) -> Any:
        with self._lock:
            if self._connector is None:
                self._connector = self._new_connector()
            connector = self._connector
        credentials = (
            {"user": self.user or self._own_user()} if self.iam_auth else {"user": self.user, "password": self.password}
        )
        return connector.connect(self.instance, "pg8000", db=self.database, **credentials)

    def _new_connector(self) -> Any:
        from google.cloud.sql.connector import Connector

        return Connector(ip_type=self.ip_type, enable_iam_auth=self.iam_auth, refresh_strategy="lazy")

    def _own_user(self) -> str:
        """No user in DATABASE_URL: the process's own service account logs in."""
        from infra.identity import service_account_email

        self.user = iam_database_user(service_account_email())
        return self.user

    def close(self) -> None:
        with self._lock:
            connector, self._connector = self._connector, None
        if connector is not None:
            connector.close()


def _cloud_sql_engine(settings: Settings) -> Engine:
    connections = CloudSqlConnections(settings)
    engine = create_engine("postgresql+pg8000://", creator=connections.connect, **_pool(settings))
    event.listen(engine, "engine_disposed", lambda _engine: connections.close())
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def migrate_database(settings: Settings) -> None:
    """Migrate the database ``settings`` name, then let go of it (connections and connector)."""
    engine = make_engine(settings)
    try:
        migrate(engine)
    finally:
        engine.dispose()
