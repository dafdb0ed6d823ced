"""Engines: pool size from settings, and Cloud SQL through the connector.

The connector cannot reach Cloud SQL from here, so its class is replaced by a
recorder that captures what htbase asks of it and hands out real connections to
the throwaway PostgreSQL: everything past the connector (the engine, its pool,
migrations, the ledger) runs for real.
"""

from __future__ import annotations

import json

import pg8000.dbapi
import pg8000.legacy
import pytest
import sqlalchemy as sa
from google.cloud.sql import connector as cloud_sql
from sqlalchemy.engine import make_url

from htbase.config import Settings
from infra import identity
from infra.db import iam_database_user, make_engine, migrate_database
from infra.runtime import Runtime
from tests.keys import service_account_key

INSTANCE = "htbase-prod:us-central1:htbase-ledger"
API_ACCOUNT = "htbase-api@htbase-prod.iam.gserviceaccount.com"


@pytest.fixture
def database(postgres) -> str:
    """A fresh database on the throwaway server; its URL."""
    with postgres.fresh_database() as url:
        yield url


@pytest.fixture
def connectors(monkeypatch, database):
    """Every Connector htbase creates, in order; each connects to ``database`` whatever instance it is asked for."""
    made: list[RecordingConnector] = []
    real = make_url(database)

    class RecordingConnector:
        def __init__(self, **kwargs) -> None:
            self.kwargs, self.connects, self.closed = kwargs, [], False
            made.append(self)

        def connect(self, instance: str, driver: str, **kwargs):
            assert not self.closed, "a closed connector was used"
            self.connects.append((instance, driver, kwargs))
            return pg8000.dbapi.connect(user=real.username, host=real.host, port=real.port, database=real.database)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(cloud_sql, "Connector", RecordingConnector)
    return made


def cloud_sql_settings(database: str, **changes) -> Settings:
    name = make_url(database).database
    values = dict(instance_connection_name=INSTANCE, database_url=f"postgresql+pg8000://owner:s3cret@/{name}")
    return Settings(**{**values, **changes})


def test_postgres_pool_size_is_the_setting_with_no_overflow(database):
    engine = make_engine(Settings(database_url=database, db_pool_size=3))
    try:
        held = [engine.connect() for _ in range(3)]
        assert engine.pool.size() == 3 and engine.pool.checkedout() == 3
        assert engine.pool._max_overflow == 0  # a fourth would wait: DB_POOL_SIZE is the process's ceiling
        for connection in held:
            connection.close()
    finally:
        engine.dispose()


def test_the_connector_is_made_on_the_first_connection_only(connectors, database):
    engine = make_engine(cloud_sql_settings(database, db_pool_size=2))
    try:
        assert connectors == []  # building the engine (as a gunicorn master does) starts no connector thread
        with engine.connect() as connection:
            assert connection.execute(sa.text("select 1")).scalar() == 1
        with engine.connect(), engine.connect():  # two at once: two connections, one connector
            pass
        assert len(connectors) == 1 and len(connectors[0].connects) == 2
        assert engine.pool.size() == 2
    finally:
        engine.dispose()


def test_password_login_and_the_ip_type_from_settings(connectors, database):
    settings = cloud_sql_settings(database, cloud_sql_ip_type="private")
    engine = make_engine(settings)
    with engine.connect():
        pass
    engine.dispose()
    (connector,) = connectors
    assert connector.kwargs == {
        "ip_type": cloud_sql.IPTypes.PRIVATE,
        "enable_iam_auth": False,
        "refresh_strategy": "lazy",
    }
    assert connector.connects == [
        (INSTANCE, "pg8000", {"db": make_url(database).database, "user": "owner", "password": "s3cret"})
    ]


@pytest.mark.parametrize("ip_type, expected", [("public", "PUBLIC"), ("private", "PRIVATE"), ("psc", "PSC")])
def test_every_ip_type_names_the_connectors(connectors, database, ip_type, expected):
    engine = make_engine(cloud_sql_settings(database, cloud_sql_ip_type=ip_type))
    with engine.connect():
        pass
    engine.dispose()
    assert connectors[0].kwargs["ip_type"] is cloud_sql.IPTypes[expected]


def test_iam_login_sends_no_password(connectors, database):
    name = make_url(database).database
    settings = cloud_sql_settings(
        database, cloud_sql_iam_auth=True, database_url=f"postgresql+pg8000://{iam_database_user(API_ACCOUNT)}@/{name}"
    )
    engine = make_engine(settings)
    with engine.connect():
        pass
    engine.dispose()
    (connector,) = connectors
    assert connector.kwargs["enable_iam_auth"] is True
    assert connector.connects[0][2] == {"db": name, "user": "htbase-api@htbase-prod.iam"}


def test_iam_login_without_a_user_is_the_service_accounts_own(connectors, database, tmp_path, monkeypatch):
    key = tmp_path / "key.json"  # a service-account key names its email without a network call
    key.write_text(json.dumps(service_account_key(API_ACCOUNT, "htbase-prod")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setattr(identity, "_credentials", None)
    name = make_url(database).database
    engine = make_engine(
        cloud_sql_settings(database, cloud_sql_iam_auth=True, database_url=f"postgresql+pg8000://@/{name}")
    )
    with engine.connect():
        pass
    engine.dispose()
    assert connectors[0].connects[0][2]["user"] == "htbase-api@htbase-prod.iam"


def test_dispose_closes_the_connector_and_a_later_connection_makes_a_new_one(connectors, database):
    engine = make_engine(cloud_sql_settings(database))
    with engine.connect():
        pass
    engine.dispose()  # what the gunicorn master does after migrating, before it forks
    assert connectors[0].closed
    with engine.connect():  # e.g. in a forked worker: a connector of its own
        pass
    assert len(connectors) == 2 and not connectors[1].closed
    engine.dispose()


def test_migrating_leaves_no_connector_open(connectors, database):
    migrate_database(cloud_sql_settings(database))
    assert [c.closed for c in connectors] == [True]
    with sa.create_engine(database).connect() as connection:
        assert connection.execute(sa.text("select version_num from alembic_version")).scalar()


def test_closing_the_runtime_closes_the_connector(connectors, database, tmp_path):
    migrate_database(cloud_sql_settings(database))
    runtime = Runtime(cloud_sql_settings(database, local_storage_path=tmp_path / "archives"))
    assert runtime.ledger.list_tasks(limit=1, offset=0) == ([], 0)
    runtime.close()
    assert [c.closed for c in connectors] == [True, True]


def test_the_iam_user_is_the_email_without_the_domain():
    assert iam_database_user(API_ACCOUNT) == "htbase-api@htbase-prod.iam"
    assert iam_database_user("someone@example.com") == "someone@example.com"


def test_statements_are_converted_to_postgres_placeholders_as_pg8000_does():
    """The remembered conversion gives what pg8000's own scan gives, the second time as the first."""
    statements = [
        "SELECT * FROM tasks WHERE task_id = %s AND status IN (%s, %s)",
        "INSERT INTO outbox (topic, data) VALUES (%s, %s) RETURNING id",
        "SELECT '%s is not a parameter', \"col\" FROM t WHERE a = %s -- a comment %s\n AND b = %s",
        "SELECT 100%% FROM t WHERE x = %s",
    ]
    for statement in statements:
        args = tuple(range(statement.count("%s")))
        expected = pg8000.dbapi.convert_paramstyle("format", statement, args)
        for _ in range(2):
            assert pg8000.legacy.convert_paramstyle("format", statement, args) == expected
