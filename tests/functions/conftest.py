"""The functions-framework targets of functions/main.py, served in this process the way Cloud Run
serves them: configured by env alone."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import functions_framework
import pytest
import sqlalchemy as sa

from htbase.config import Settings
from infra.db import make_engine, migrate
from tests.helpers import settings_env_names

MAIN = Path(__file__).resolve().parents[2] / "functions" / "main.py"


@pytest.fixture(scope="module")
def ledger_url(postgres) -> str:
    """One migrated PostgreSQL ledger for the module (a worker service needs the shared one):
    an authenticated push here only reads it."""
    admin = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("DROP DATABASE IF EXISTS push_auth WITH (FORCE)"))
        connection.execute(sa.text("CREATE DATABASE push_auth"))
    admin.dispose()
    url = postgres.url.rsplit("/", 1)[0] + "/push_auth"
    engine = make_engine(Settings(database_url=url))
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def serve_target(monkeypatch, tmp_path, ledger_url):
    """serve_target(target, **env): a test client for a functions-framework target, configured by env alone."""
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    # create_app appends the source folder to sys.path, registers the module as "main", and the
    # target's setup_logging replaces the root handlers: all undone after the test.
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.setitem(sys.modules, "main", None)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)

    def serve(target: str, **env: str):
        # The broker is never reached: a push for a task nobody knows publishes nothing.
        env = {
            "DATABASE_URL": ledger_url,
            "LOCAL_STORAGE_PATH": str(tmp_path / "archives"),
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
            "SERVICE_ROLE": "archiver",
            "ARCHIVERS": "pdf",
            **env,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return functions_framework.create_app(target, str(MAIN)).test_client()

    yield serve
    served = sys.modules["main"]
    if served is not None and served.runtime.cache_info().currsize:
        served.runtime().close()
