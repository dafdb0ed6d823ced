"""Shared fixtures: a throwaway Postgres for the whole run and a fresh ledger per test."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from emulators.postgres import ThrowawayPostgres
from htbase.config import Settings
from infra.db import make_engine, migrate
from infra.ledger import Ledger

pytest_plugins = ["tests.site.fixtures", "tests.egress_fixtures"]


@pytest.fixture(scope="session")
def postgres():
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """A fresh, empty database on each engine the ledger supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield server.url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(database_url=database_url, local_storage_path=tmp_path / "archives",
                    allow_private_urls=True, lease_s=60, max_attempts=3)


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine, settings) -> Ledger:
    return Ledger(engine, lease_s=settings.lease_s, max_attempts=settings.max_attempts)


@pytest.fixture
def embedded_settings(tmp_path) -> Settings:
    """The embedded defaults (SQLite, local files) in a temp dir, loopback allowed for the test site."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'htbase.db'}", local_storage_path=tmp_path / "archives",
                    allow_private_urls=True, capture_timeout_s=20, max_attempts=3, retry_backoff_s=0.2,
                    sweep_interval_s=3600)
