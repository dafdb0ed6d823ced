"""The API process (``SERVICE_ROLE=api``): the HTTP API plus the housekeeping loop."""

from __future__ import annotations

from flask import Flask

from api.app import create_app
from htbase.config import Settings
from infra.housekeeping import Housekeeper
from infra.metrics import watch_backlogs
from infra.relay import Publisher
from infra.replica_queue import ReplicaQueue
from infra.runtime import Runtime, make_publisher
from infra.telemetry import install as install_telemetry
from infra.telemetry import trace_requests

IMPORT_PACE_S = 2.0


class ApiService:
    """The API on a runtime; the schema must be migrated before (``infra.db.migrate``), once per deployment."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.telemetry = install_telemetry(settings)
        self.runtime = runtime or Runtime(settings, publisher or make_publisher(settings))
        self.api: Flask = create_app(self.runtime)
        trace_requests(self.api)
        self.housekeeper = Housekeeper(self.runtime.housekeep, settings.sweep_interval_s)
        # Imports start their next captures as earlier ones end: a light look every few seconds.
        self.import_pacer = Housekeeper(lambda: self.runtime.publish(self.runtime.imports.advance()), IMPORT_PACE_S)
        # The process that keeps the outbox and the replica's queue reports their backlogs.
        watch_backlogs(self.runtime.outbox.backlog, ReplicaQueue(self.runtime.engine).backlog)

    def start(self) -> ApiService:
        self.housekeeper.start()
        self.import_pacer.start()
        return self

    def close(self) -> None:
        self.import_pacer.stop()
        self.housekeeper.stop()
        self.runtime.close()

    def __enter__(self) -> ApiService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
