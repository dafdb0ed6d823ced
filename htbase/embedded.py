"""The all-in-one process: API, push handlers and an in-process dispatcher.

No cloud, no emulator, no Docker: SQLite and local files by default, and the
dispatcher hands Pub/Sub-shaped envelopes to the same push handlers that Cloud
Run runs.
"""
from __future__ import annotations

import logging

from api.service import ApiService
from functions.push import create_push_app
from htbase.config import ConfigError, Settings
from htbase.topology import ROUTES
from infra.dispatcher import LocalPushDispatcher

logger = logging.getLogger("htbase.embedded")


class EmbeddedService(ApiService):
    def __init__(self, settings: Settings) -> None:
        if settings.broker != "embedded":
            raise ConfigError("SERVICE_ROLE=all-in-one dispatches in process; with BROKER=pubsub run "
                              "SERVICE_ROLE=api and one service per archiver (see the README)")
        super().__init__(settings)
        self.push_app = create_push_app(self.runtime, authenticator=None)  # in-process only
        routes = {route.topic: route.path for route in ROUTES}
        self.dispatcher = LocalPushDispatcher(self.push_app, routes, workers=settings.worker_concurrency,
                                              max_attempts=settings.max_attempts,
                                              backoff_s=settings.retry_backoff_s)
        self.runtime.publisher = self.dispatcher

    def start(self) -> "EmbeddedService":
        # The in-memory queue died with the last process: revive everything unfinished now.
        counts = self.runtime.ledger.sweep(revive_all=True)
        counts["published"] = self.runtime.relay.flush(min_age_s=0)
        if any(counts.values()):
            logger.info("resumed unfinished work from the last run: %s", counts)
        super().start()
        return self

    def close(self) -> None:
        self.housekeeper.stop()
        self.dispatcher.close()
        self.runtime.close()
