"""The all-in-one process: API, push handlers and an in-process dispatcher.

No cloud, no emulator, no Docker: SQLite and local files by default, and the
dispatcher hands Pub/Sub-shaped envelopes to the same push handlers that Cloud
Run runs.
"""
from __future__ import annotations

import logging

from flask import Flask

from api.app import create_app
from functions.push import PUSH_ROUTES, create_push_app
from htbase.config import Settings
from htbase.messages import ARCHIVERS, SUMMARIZE
from infra.db import migrate
from infra.dispatcher import DEAD_LETTER, LocalPushDispatcher
from infra.ledger import archive_topic
from infra.outbox import Housekeeper
from htbase.runtime import Runtime

logger = logging.getLogger("htbase.embedded")


class EmbeddedService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        migrate(self.runtime.engine)
        self.push_app = create_push_app(self.runtime)
        routes = {archive_topic(name): PUSH_ROUTES["archive"] for name in ARCHIVERS}
        routes[SUMMARIZE] = PUSH_ROUTES["summarize"]
        routes[DEAD_LETTER] = PUSH_ROUTES["dead-letter"]
        self.dispatcher = LocalPushDispatcher(self.push_app, routes, workers=settings.worker_concurrency,
                                              max_attempts=settings.max_attempts,
                                              backoff_s=settings.retry_backoff_s)
        self.runtime.publisher = self.dispatcher
        self.api: Flask = create_app(self.runtime)
        self.housekeeper = Housekeeper(self.runtime.ledger, self.runtime.relay, settings.sweep_interval_s)

    def start(self) -> "EmbeddedService":
        # The in-memory queue died with the last process: revive everything unfinished now.
        counts = self.runtime.ledger.sweep(revive_all=True)
        counts["published"] = self.runtime.relay.flush(min_age_s=0)
        if any(counts.values()):
            logger.info("resumed unfinished work from the last run: %s", counts)
        self.housekeeper.start()
        return self

    def close(self) -> None:
        self.housekeeper.stop()
        self.dispatcher.close()
        self.runtime.close()

    def __enter__(self) -> "EmbeddedService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
