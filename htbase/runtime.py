"""Everything one process needs, built once from Settings.

The API, the push handlers and the CLI all take a Runtime. Heavy parts (the
egress proxy, Chromium, the archivers, the summarizer) start on first use, so
an API-only process never loads a browser.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from functools import cached_property
from typing import TYPE_CHECKING

from htbase.config import Settings
from infra.db import make_engine
from infra.ledger import Ledger
from infra.outbox import Publisher, Relay, housekeep
from infra.storage import FileStore, make_file_store

if TYPE_CHECKING:
    from functions.archivers.base import Archiver
    from infra.egress.policy import EgressPolicy
    from infra.egress.proxy import EgressProxy
    from infra.replica import ReplicaSync


def make_publisher(settings: Settings) -> Publisher | None:
    """Pub/Sub when the broker is Pub/Sub; None where the embedded dispatcher is set later."""
    if settings.broker != "pubsub":
        return None
    from infra.pubsub import PubSubPublisher

    return PubSubPublisher(settings)


class Runtime:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.ledger = Ledger(self.engine, lease_s=settings.lease_s, max_attempts=settings.max_attempts)
        self.store: FileStore = make_file_store(settings)
        self.publisher = publisher
        # Identifies this process as a lease holder in the ledger.
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._archivers: dict[str, Archiver] = {}
        self._proxy: EgressProxy | None = None
        self._browser = None
        self._closers: list = []

    @cached_property
    def relay(self) -> Relay:
        if self.publisher is None:
            raise RuntimeError("this process has no publisher configured")
        return Relay(self.ledger, self.publisher)

    def housekeep(self) -> dict[str, int]:
        """One housekeeping round: the sweeper, the outbox relay, the replica's queue."""
        counts = housekeep(self.ledger, self.relay)
        if self.replica.enabled:
            counts.update({f"replica_{k}": v for k, v in self.replica.retry_pending().items()})
        return counts

    @cached_property
    def replica(self) -> "ReplicaSync":
        """Best-effort Firestore copy of task documents; call ``sync`` after a commit."""
        from infra.replica import ReplicaSync, make_replica, task_documents

        return ReplicaSync(self.ledger, make_replica(self.settings), task_documents(self.ledger))

    @cached_property
    def egress_policy(self) -> "EgressPolicy":
        from infra.egress.policy import EgressPolicy

        return EgressPolicy.from_settings(self.settings)

    def archiver(self, name: str) -> "Archiver":
        """The archiver called ``name``, built on first use and then reused."""
        with self._lock:
            if name not in self._archivers:
                self._archivers[name] = self._build_archiver(name)
            return self._archivers[name]

    def _build_archiver(self, name: str) -> "Archiver":
        from functions.archivers import build_archiver

        if self._proxy is None:
            # Every fetch of every capture goes through the egress guard.
            from infra.egress.proxy import EgressProxy

            self._proxy = EgressProxy(self.egress_policy)
            self._proxy.start()
            self._closers.append(self._proxy.stop)
        if name != "monolith" and self._browser is None:
            from functions.archivers.browser import Browser

            self._browser = Browser(self.settings, proxy_url=self._proxy.url)
            self._closers.insert(0, self._browser.close)
        return build_archiver(name, self.settings, browser=self._browser, proxy_url=self._proxy.url)

    @cached_property
    def summarizer(self):
        from functions.summarizer.pipeline import Summarizer

        return Summarizer(self.settings)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()
        self.engine.dispose()
