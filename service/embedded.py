"""The all-in-one process: API, push handlers and an in-process dispatcher.

No cloud, no emulator, no Docker: SQLite and local files by default, and the
dispatcher hands Pub/Sub-shaped envelopes to the same push handlers that Cloud
Run runs.
"""

from __future__ import annotations

import logging

from functions.push import create_push_app
from functions.worker import Worker
from htbase.config import ConfigError, Settings
from htbase.topology import QUEUES, ROUTES
from infra.db import migrate
from infra.dispatcher import LocalPushDispatcher
from service.api import ApiService

logger = logging.getLogger("htbase.embedded")


class EmbeddedService:
    def __init__(self, settings: Settings) -> None:
        if settings.broker != "embedded":
            raise ConfigError(
                "SERVICE_ROLE=all-in-one dispatches in process; with BROKER=pubsub run "
                "SERVICE_ROLE=api and one service per archiver (see the README)"
            )
        self.settings = settings
        self.runtime = Worker(settings)
        if settings.run_migrations:
            migrate(self.runtime.engine)  # one process: it owns its schema
        self.push_app = create_push_app(self.runtime, authenticator=None)  # in-process only
        # Pub/Sub's topics and Cloud Tasks' queues alike: the same paths the push services serve.
        routes = {route.topic: route.path for route in (*ROUTES, *(spec.route for spec in QUEUES))}
        self.dispatcher = LocalPushDispatcher(
            self.push_app,
            routes,
            workers=settings.worker_concurrency,
            max_attempts=settings.max_delivery_attempts,  # a subscription's
            backoff_s=settings.retry_backoff_s,
        )
        self.runtime.publisher = self.dispatcher
        self.runtime.on_close(self.dispatcher.close)  # deliveries drain before the browser closes
        self.api_service = ApiService(settings, self.runtime)
        self.api = self.api_service.api

    def start(self) -> EmbeddedService:
        # The in-memory queue died with the last process: revive everything unfinished now.
        counts = self.runtime.ledger.sweep(revive_all=True)
        counts["webhooks_resent"] = len(self.runtime.webhooks.overdue(grace_s=0))  # the flush sends them
        counts["published"] = self.runtime.relay.flush(min_age_s=0)
        if any(counts.values()):
            logger.info("resumed unfinished work from the last run: %s", counts)
        self.api_service.start()
        return self

    def close(self) -> None:
        self.api_service.close()

    def __enter__(self) -> EmbeddedService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
