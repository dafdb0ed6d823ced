"""Shared fixtures: a throwaway Postgres for the whole run and a fresh ledger per test.

Every test is also marked with the heavy parts it reaches (``browser``, ``emulators``,
``postgres``, and ``tools``: Terraform, checkov, gcloud), so ``make test-fast`` can leave
them out: see ``pytest_collection_modifyitems``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Iterator

import pytest

from emulators.postgres import ThrowawayPostgres
from htbase.config import Settings
from infra.db import make_engine, migrate
from infra.ledger import Ledger
from tests import helpers
from tests.receiver import SECRET as WEBHOOK_SECRET

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
    with request.getfixturevalue("postgres").fresh_database() as url:
        yield url


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(
        database_url=database_url,
        local_storage_path=tmp_path / "archives",
        allow_private_urls=True,
        lease_s=60,
        max_attempts=3,
    )


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
    # webhooks on, as `make run` has them with WEBHOOK_SECRET set
    return helpers.embedded_settings(tmp_path, capture_timeout_s=20, webhook_secret=WEBHOOK_SECRET)


# The heavy parts, by the names that start them: a test reaches one when it requests the fixture,
# picks it as a parameter (``database_url[postgres]``, ``store[gcs]``) or names it in its code, its
# fixtures' code or the test helpers they call...
HEAVY_NAMES = {
    "browser": {
        "browser",  # the archiver tests' shared Chromium
        "Browser",
        "sync_playwright",
        "EmbeddedService",  # captures with Chromium and SingleFile once a task is accepted
        "HTBASE",  # the `htbase` command, whose `serve` runs the embedded service
    },
    "emulators": {"Stack", "PubSubEmulator", "FirestoreEmulator", "FakeGcsServer", "gcs", "CloudTasksEmulator"},
    "postgres": {"postgres", "ThrowawayPostgres"},
    "tools": {"terraform_binary", "terraform_console", "checkov_venv"},
}
# ... or runs a command that starts one, spelled out as a string in that code.
HEAVY_COMMANDS = {
    "emulators": {"emulators.stack", "docker-compose"},  # the stack's command line; validating its compose file
    "tools": {"gcloud"},  # the SDK's build-config loader
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        names, strings = words_reached(item)
        for marker in HEAVY_NAMES:
            if names & HEAVY_NAMES[marker] or strings & HEAVY_COMMANDS.get(marker, set()):
                item.add_marker(marker)


def words_reached(item: pytest.Function) -> tuple[set[str], set[str]]:
    """The names and the strings a test reaches: its fixtures, its parameters and its code's."""
    fixtures = [
        definition.func for definitions in item._fixtureinfo.name2fixturedefs.values() for definition in definitions
    ]
    names, strings = words_in([item.function, *fixtures])
    picked = getattr(item, "callspec", None)
    parameters = {value for value in picked.params.values() if isinstance(value, str)} if picked else set()
    return names | set(item.fixturenames) | parameters, strings


def words_in(functions: Iterable[Callable]) -> tuple[set[str], set[str]]:
    """The names and the strings in the functions' code, following the helpers defined in tests/."""
    names: set[str] = set()
    strings: set[str] = set()
    seen: set[Callable] = set()
    todo = [inspect.unwrap(function) for function in functions]
    while todo:
        function = todo.pop()
        if function in seen or not hasattr(function, "__code__"):
            continue
        seen.add(function)
        for code in code_objects(function.__code__):
            names.update(code.co_names)
            strings.update(constant for constant in code.co_consts if isinstance(constant, str))
            for name in code.co_names:
                helper = function.__globals__.get(name)
                if inspect.isfunction(helper) and helper.__module__.startswith("tests."):
                    todo.append(helper)
    return names, strings


def code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code nested in it: functions, lambdas, comprehensions."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from code_objects(constant)
