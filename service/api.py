"""The API process (``SERVICE_ROLE=api``): the HTTP API plus the housekeeping loop."""
from __future__ import annotations

from flask import Flask

from api.app import create_app
from htbase.config import Settings
from infra.housekeeping import Housekeeper
from infra.relay import Publisher
from infra.runtime import Runtime, make_publisher


class ApiService:
    """The API on a runtime; the schema must be migrated before (``infra.db.migrate``), once per deployment."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime(settings, publisher or make_publisher(settings))
        self.api: Flask = create_app(self.runtime)
        self.housekeeper = Housekeeper(self.runtime.housekeep, settings.sweep_interval_s)

    def start(self) -> "ApiService":
        self.housekeeper.start()
        return self

    def close(self) -> None:
        self.housekeeper.stop()
        self.runtime.close()

    def __enter__(self) -> "ApiService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
