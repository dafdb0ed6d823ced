"""The adapters one process uses, built once from Settings.

The API, the push handlers and the CLI all take a Runtime: the ledger and its
neighbours (outbox, summaries, replica queue), file storage, the publisher and
the replica. The capture tools (egress proxy, Chromium, archivers, summarizer)
are added by ``functions.worker.Worker``, so an API-only process never loads
them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from htbase.config import Settings
from htbase.topology import QUEUES
from infra.catalog import Catalog
from infra.db import make_engine
from infra.deletions import Deletions
from infra.housekeeping import housekeep
from infra.imports import Imports
from infra.items import Items
from infra.ledger import Ledger
from infra.outbox import Outbox, OutboxRow
from infra.relay import Publisher, Relay
from infra.replica_queue import ReplicaQueue
from infra.search import Search
from infra.storage import FileStore, make_file_store
from infra.summaries import Summaries
from infra.tags import Tags
from infra.webhooks import Webhooks

if TYPE_CHECKING:
    from infra.replica import ReplicaSync


# A capture's process writes its task's replica documents within moments of its commit; housekeeping
# writes them after this long if it died first (ReplicaQueue.owe).
REPLICA_GRACE_S = 30.0


def make_publisher(settings: Settings) -> Publisher | None:
    """Pub/Sub, and Cloud Tasks for the queues' topics, when the broker is Pub/Sub; None where the
    embedded dispatcher is set later."""
    if settings.broker != "pubsub":
        return None
    from infra.cloudtasks import CloudTasksPublisher, TopicRouter
    from infra.pubsub import PubSubPublisher

    tasks = CloudTasksPublisher(settings)
    return TopicRouter(PubSubPublisher(settings), {spec.route.topic: tasks for spec in QUEUES})


class Runtime:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.ledger = Ledger(
            self.engine,
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
            retry_backoff_s=settings.retry_backoff_s,
        )
        self.ledger.announce = self.publish
        self.ledger.swept = lambda task_id: self.replica.sync(task_id)
        if settings.firestore_project_id:  # the replica is on
            queue = ReplicaQueue(self.engine)
            self.ledger.owe_replica = lambda session, task_id: queue.owe(session, task_id, REPLICA_GRACE_S)
        self.outbox = Outbox(self.engine)
        self.summaries = Summaries(self.engine)
        self.store: FileStore = make_file_store(settings)
        self.items = Items(self.ledger)
        self.deletions = Deletions(self.ledger, self.store)
        # An attempt holds its delivery while the receiver may take to answer, and then some.
        self.webhooks = Webhooks(
            self.engine,
            backoff_s=settings.retry_backoff_s,
            max_attempts=settings.webhook_max_attempts,
            lease_s=2 * settings.webhook_timeout_s + 30,
        )
        self.publisher = publisher
        # Identifies this process as a lease holder in the ledger.
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._closers: list[Callable[[], None]] = []

    def readiness_checks(self) -> dict[str, Callable[[], object]]:
        """Parts this process's work needs beyond the ledger, the broker and storage (infra/health.py):
        none here; a runtime that captures adds its browser."""
        return {}

    def on_close(self, close: Callable[[], None]) -> None:
        """Run ``close`` when the runtime closes, before whatever was registered earlier."""
        self._closers.insert(0, close)

    @cached_property
    def relay(self) -> Relay:
        if self.publisher is None:
            raise RuntimeError("this process has no publisher configured")
        return Relay(self.outbox, self.publisher, fail_artifact=self._fail_unpublished)

    def publish(self, rows: list[OutboxRow]) -> None:
        """Publish rows a transaction just committed; without a publisher yet, the outbox keeps them."""
        if rows and self.publisher is not None:
            self.relay.send(rows)

    def forget(self, changed: list[str]) -> dict[str, int]:
        """After rows were deleted: the files of deleted rows go (how many prefixes went, and failed), and
        the documents of these tasks (deleted, or a batch that lost a child) are written again. Whatever
        fails is retried by housekeeping."""
        removed = self.deletions.purge()
        for task_id in changed:
            self.replica.sync(task_id)
        return removed

    def _fail_unpublished(self, task_id: str, archiver: str, error: str) -> None:
        """The broker will never take this capture's request: fail the capture so its task ends."""
        self.ledger.fail_undelivered(task_id, archiver, error)
        self.replica.sync(task_id)

    @cached_property
    def replica(self) -> ReplicaSync:
        """Best-effort Firestore copy of task documents; call ``sync`` after a commit."""
        from infra.replica import ReplicaSync, make_replica, task_documents  # the Firestore client loads slowly

        return ReplicaSync(
            ReplicaQueue(self.engine), make_replica(self.settings), task_documents(self.ledger, self.summaries)
        )

    @cached_property
    def search(self) -> Search:
        """The archive's full-text index; ``refresh`` an item after what it holds changed."""
        return Search(self.engine, self.store)

    @cached_property
    def tags(self) -> Tags:
        return Tags(self.engine)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.ledger)

    @cached_property
    def imports(self) -> Imports:
        return Imports(self.ledger, self.tags, self.settings.import_captures_at_once)

    def housekeep(self) -> dict[str, int]:
        """One housekeeping round: the re-captures due, imports' next captures, retention, webhooks whose
        message was lost, the sweeper, the outbox relay, the files of deleted rows, the replica's queue."""
        recaptures = self.items.run_schedules()
        lost = self.webhooks.overdue(grace_s=self.settings.lease_s)
        imported = self.imports.advance()  # also where no API process paces imports (an idle Cloud Run)
        self.relay.send(recaptures + lost + imported)
        expired = self.deletions.expire(self.settings.retention_days) if self.settings.retention_days else []
        counts = {
            "recaptured": len(recaptures),
            "webhooks_resent": len(lost),
            "expired": len(expired),
            "import_captures_started": len(imported),
        }
        counts.update({f"files_{k}": v for k, v in self.forget(expired).items()})
        counts.update(housekeep(self.ledger, self.relay))
        if self.replica.enabled:
            counts.update({f"replica_{k}": v for k, v in self.replica.retry_pending().items()})
        return counts

    def close(self) -> None:
        while self._closers:
            self._closers.pop(0)()
        self.engine.dispose()
