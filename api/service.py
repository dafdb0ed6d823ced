"""The API process (``SERVICE_ROLE=api``): the HTTP API plus the housekeeping loop."""
from __future__ import annotations

from flask import Flask

from api.app import create_app
from htbase.config import Settings
from htbase.runtime import Runtime, make_publisher
from infra.db import migrate
from infra.outbox import Housekeeper, Publisher


class ApiService:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        publisher = publisher or make_publisher(settings)
        self.settings = settings
        self.runtime = Runtime(settings, publisher)
        migrate(self.runtime.engine)
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
