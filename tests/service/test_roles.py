"""Cloud roles start only on shared backends, and the schema migrates only where it is told to.

A Cloud Run instance is one of many: the in-process dispatcher and a SQLite file
of its own would silently lose work, so ``SERVICE_ROLE=api|archiver|summarizer``
refuses them. On Cloud Run the ``migrate`` job (``htbase migrate``) changes the
schema and the services start with ``RUN_MIGRATIONS=false``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from emulators import free_port
from emulators.stack import Stack
from htbase.config import ConfigError, Settings
from htbase.topology import HOUSEKEEPING, ROUTES
from service.embedded import EmbeddedService

HTBASE = str(Path(sys.executable).parent / "htbase")
SHARED = {"BROKER": "pubsub", "DATABASE_URL": "postgresql+pg8000://htbase:pw@db.internal/htbase"}


@pytest.fixture
def database(postgres) -> str:
    with postgres.fresh_database() as url:
        yield url


def schema_version(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(sa.text("select version_num from alembic_version")).scalar()
    finally:
        engine.dispose()


def htbase(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([HTBASE, *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("role", ["api", "archiver", "summarizer"])
@pytest.mark.parametrize(
    "env, message",
    [
        pytest.param({"DATABASE_URL": SHARED["DATABASE_URL"]}, "needs Pub/Sub: set BROKER=pubsub", id="no-broker"),
        pytest.param(
            {"BROKER": "embedded", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "DATABASE_URL": SHARED["DATABASE_URL"]},
            "needs Pub/Sub",
            id="embedded-broker",
        ),
        pytest.param({"BROKER": "pubsub"}, "needs the shared PostgreSQL ledger, but DATABASE_URL is unset", id="no-db"),
        pytest.param(
            {"BROKER": "pubsub", "DATABASE_URL": "sqlite:////tmp/mine.db"},
            "needs the shared PostgreSQL ledger, not sqlite",
            id="sqlite",
        ),
        pytest.param(
            {"BROKER": "pubsub", "INSTANCE_CONNECTION_NAME": "p:r:i"},
            "needs the shared PostgreSQL ledger, but DATABASE_URL is unset",
            id="connector-without-url",
        ),
    ],
)
def test_a_cloud_role_never_falls_back_to_what_only_one_process_can_use(role, env, message):
    with pytest.raises(ConfigError, match=f"SERVICE_ROLE={role} {message}"):
        Settings.from_env({"SERVICE_ROLE": role, **env})


def test_the_all_in_one_process_keeps_its_embedded_defaults():
    settings = Settings.from_env({})
    assert (settings.broker, settings.database_url.split(":")[0]) == ("embedded", "sqlite")


def test_cloud_sql_names_user_and_database_in_a_url_without_a_host():
    settings = Settings.from_env(
        {
            **SHARED,
            "SERVICE_ROLE": "api",
            "INSTANCE_CONNECTION_NAME": "p:us-central1:i",
            "DATABASE_URL": "postgresql+pg8000://htbase-api@p.iam@/htbase",
            "CLOUD_SQL_IAM_AUTH": "true",
            "CLOUD_SQL_IP_TYPE": "private",
        }
    )
    assert (settings.cloud_sql_iam_auth, settings.cloud_sql_ip_type) == (True, "private")
    with pytest.raises(ConfigError, match="CLOUD_SQL_IP_TYPE must be one of"):
        Settings.from_env({"CLOUD_SQL_IP_TYPE": "carrier-pigeon"})


def test_every_service_of_the_emulator_stack_is_a_valid_cloud_role(tmp_path):
    """The dead-letter handler and housekeeping too: they run as roles archiver and api."""
    stack = Stack(tmp_path, database_url="postgresql+pg8000://htbase@127.0.0.1:5432/htbase", services=())
    for route in (*ROUTES, HOUSEKEEPING):
        settings = Settings.from_env({**stack.env, **route.service_env})
        assert (settings.service_role, settings.broker) == (route.role, "pubsub"), route.service


def test_the_cli_refuses_to_serve_a_misconfigured_role():
    result = htbase("serve", env={"SERVICE_ROLE": "api", "DATABASE_URL": "sqlite:////tmp/never.db"})
    assert result.returncode == 2
    assert "configuration error: SERVICE_ROLE=api needs Pub/Sub" in result.stderr


def test_htbase_migrate_is_the_migrate_job(database):
    assert schema_version(database) is None
    result = htbase("migrate", env={"DATABASE_URL": database, "LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    assert schema_version(database)
    again = htbase("migrate", env={"DATABASE_URL": database})  # each deployment runs it: idempotent
    assert again.returncode == 0, again.stderr


def start_api(database: str, tmp_path: Path, **env: str) -> bool:
    """Start the API role (gunicorn) on ``database`` until it answers or gives up, then stop it;
    whether it answered."""
    port = free_port()
    env = {
        "SERVICE_ROLE": "api",
        "DATABASE_URL": database,
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOCAL_STORAGE_PATH": str(tmp_path / "archives"),
        **env,
    }
    with open(tmp_path / "api.log", "w") as log:
        server = subprocess.Popen(
            [HTBASE, "serve"], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:  # not listening yet, or too busy starting to answer in time
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.1)
        return False
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_api_role_migrates_on_start_unless_told_not_to(database, tmp_path):
    start_api(database, tmp_path, RUN_MIGRATIONS="false")  # on an empty database it may not even start
    assert schema_version(database) is None  # the `migrate` job's work, not the service's
    assert start_api(database, tmp_path), (tmp_path / "api.log").read_text()
    assert schema_version(database)


def test_the_embedded_service_with_migrations_off_leaves_the_schema_alone(database, tmp_path):
    settings = Settings(database_url=database, local_storage_path=tmp_path / "archives", run_migrations=False)
    EmbeddedService(settings).close()
    assert schema_version(database) is None
    EmbeddedService(settings.with_(run_migrations=True)).close()
    assert schema_version(database)
