"""The Firestore replica of task documents, for mobile reads: best effort, never in the way.

Postgres is the source of truth. After a change commits, ``ReplicaSync.sync``
writes the task's documents to Firestore. A write that fails is queued in the
queue (infra/replica_queue.py) and ``retry_pending`` writes it later; the queue
keeps no snapshot, so a retry always writes the state of that moment and an
old state can never overwrite a newer one. Nothing here raises into the
caller: a Firestore outage costs a capture at most one bounded write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from google.api_core.exceptions import Aborted, AlreadyExists, FailedPrecondition
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from htbase.config import Settings
from htbase.logs import log
from infra.documents import summary_view, task_view
from infra.ledger import Ledger
from infra.models import Task
from infra.replica_queue import ReplicaQueue
from infra.summaries import Summaries

logger = logging.getLogger("htbase.replica")

Documents = dict[str, dict[str, Any] | None]  # document id (a task id) -> document; None: deleted
Render = Callable[[str], Documents]  # a task id -> the documents its state appears in, now


class Replica(Protocol):
    def write(self, documents: Mapping[str, dict[str, Any] | None]) -> None:
        """Replace each document whole (delete it, for None), all or none; raise on failure, and
        ``ReplicaConflict`` when another write changed one of them meanwhile."""


class ReplicaConflict(Exception):
    """A document changed between its read and the write that was conditional on it."""


class FirestoreReplica:
    def __init__(self, client: firestore.Client, collection: str, timeout_s: float = 3.0) -> None:
        self.client = client
        self.collection = client.collection(collection)
        # One deadline for each call, retries included: the client's default
        # keeps retrying an unreachable Firestore for 60 s, which would stall a capture.
        self.timeout_s = timeout_s
        self.retry = Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=timeout_s)

    def write(self, documents: Mapping[str, dict[str, Any] | None]) -> None:
        """One batch, one request: a task and its batch's document land together.

        Each write is conditional on the document as read just before it. A request that a
        frozen or partitioned Firestore applies late, after a newer write, then fails its
        precondition instead of putting an old state back (a writer that timed out has moved
        on and cannot take its request back)."""
        refs = {document_id: self.collection.document(document_id) for document_id in documents}
        seen = {
            snapshot.id: snapshot
            for snapshot in self.client.get_all(list(refs.values()), retry=self.retry, timeout=self.timeout_s)
        }
        batch = self.client.batch()
        for document_id, document in documents.items():
            ref, before = refs[document_id], seen.get(document_id)
            if before is None or not before.exists:
                if document is not None:
                    batch.create(ref, document)  # fails if it exists by then
                continue
            unchanged = self.client.write_option(last_update_time=before.update_time)
            if document is None:
                batch.delete(ref, option=unchanged)
            else:  # the whole document: its fields replaced, the fields it no longer has removed
                gone = {field: firestore.DELETE_FIELD for field in (before.to_dict() or {}).keys() - document.keys()}
                batch.update(ref, {**document, **gone}, option=unchanged)
        try:
            batch.commit(retry=self.retry, timeout=self.timeout_s)
        except (FailedPrecondition, AlreadyExists, Aborted) as exc:
            raise ReplicaConflict(str(exc)) from exc


def firestore_client(settings: Settings) -> firestore.Client:
    if not settings.firestore_emulator_host:
        return firestore.Client(project=settings.firestore_project_id)
    client = firestore.Client(project=settings.firestore_project_id, credentials=AnonymousCredentials())
    # The library learns of an emulator only from os.environ, which only config.py reads:
    # set the host where its own lookup would put it (it then opens a plaintext channel
    # and sends the emulator's "owner" token).
    client._emulator_host = settings.firestore_emulator_host
    return client


def make_replica(settings: Settings) -> FirestoreReplica | None:
    """The replica, or None when it is turned off (no FIRESTORE_PROJECT_ID)."""
    if not settings.firestore_project_id:
        return None
    return FirestoreReplica(firestore_client(settings), settings.firestore_collection)


def task_documents(ledger: Ledger, summaries: Summaries) -> Render:
    """The API's task document plus its summary, for the task and for the batch it belongs to.

    A child's change shows in its batch's document (which lists it) too; a
    batch's own change (created, cancelled) shows in every child's.
    """

    def document(task: Task, children: list[Task] | None = None) -> dict[str, Any]:
        view = task_view(task, children)
        summary = summaries.get(task.summary_key) if task.summary_key else None
        if summary is not None and summary.status != "pending":  # as the API shows it: once it has a result
            view["summary"] = summary_view(task.task_id, summary)
        return view

    def render(task_id: str) -> Documents:
        task = ledger.task(task_id)
        if task is None:  # deleted: so is its document
            return {task_id: None}
        batch_id = task.task_id if task.kind == "batch" else task.parent_id
        if batch_id is None:
            return {task_id: document(task)}
        batch = task if task.kind == "batch" else ledger.task(batch_id)
        if batch is None:  # deleted meanwhile, with its children
            return {batch_id: None, task_id: None}
        children = ledger.children(batch_id)
        documents: Documents = {batch_id: document(batch, children)}
        for child in children if task.kind == "batch" else [task]:
            documents[child.task_id] = document(child)
        return documents

    return render


class ReplicaSync:
    """Keeps the replica in step with the ledger; ``replica=None`` turns it off."""

    def __init__(
        self,
        queue: ReplicaQueue,
        replica: Replica | None,
        render: Render,
        *,
        pause_s: float = 10.0,
        backoff_s: float = 5.0,
        max_backoff_s: float = 600.0,
        rounds: int = 3,
    ) -> None:
        self.queue, self.replica, self.render = queue, replica, render
        self.pause_s, self.backoff_s, self.max_backoff_s, self.rounds = pause_s, backoff_s, max_backoff_s, rounds
        # (until when syncs queue without trying, why): one tuple, so threads swap it whole.
        self._outage: tuple[float, str] = (0.0, "")
        # Tasks neither written nor queued because the ledger itself was down; a thread queues them
        # once it answers again.
        self._unqueued: dict[str, str] = {}
        self._unqueued_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.replica is not None

    def sync(self, task_id: str) -> None:
        """Write the task's documents now, or queue them; never raises, never blocks for long."""
        if self.replica is None:
            return
        until, outage = self._outage
        if time.monotonic() < until:
            # Firestore failed moments ago: queue without waiting out another timeout.
            self._queue(task_id, outage)
            return
        try:
            if self._push(task_id):
                self._settle(task_id)
                return
            error = "the task kept changing while its documents were written"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._outage = (time.monotonic() + self.pause_s, error)
        self._queue(task_id, error)

    def retry_pending(self, limit: int = 100) -> dict[str, int]:
        """Write the queued tasks' current documents; stops at the first failure (Firestore is down)."""
        counts = {"written": 0, "failed": 0}
        if self.replica is None:
            return counts
        for pending in self.queue.due(limit):
            try:
                settled = self._push(pending.task_id)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._outage = (time.monotonic() + self.pause_s, error)
                delay = min(self.backoff_s * 2 ** (pending.attempts - 1), self.max_backoff_s)
                self.queue.retry_later(pending, error, delay)
                log(
                    logger,
                    logging.WARNING,
                    "replica retry failed",
                    task_id=pending.task_id,
                    attempts=pending.attempts + 1,
                    retry_in_s=delay,
                    error=error,
                )
                counts["failed"] += 1
                break
            if settled:  # else the row stays due and the next round takes it
                self.queue.written(pending)
                self._outage = (0.0, "")  # Firestore answers again: syncs write at once
                counts["written"] += 1
        if counts["written"]:
            log(logger, logging.INFO, "replica caught up", **counts)
        return counts

    def _push(self, task_id: str) -> bool:
        """Write the task's documents; True once what was written is still the ledger's state.

        Two writers (two archivers of one task, a sync and a retry) can render in
        one order and write in the other. Re-rendering after the write catches
        that: whoever wrote a stale state sees it and writes again, so the last
        write is the newest state. False when the task kept changing for
        ``rounds`` writes: the caller queues it.
        """
        replica = self.replica
        assert replica is not None  # sync and retry_pending return before, without one
        documents = self.render(task_id)
        for _ in range(self.rounds):
            try:
                replica.write(documents)
            except ReplicaConflict:  # another writer was faster: write what the ledger holds now
                documents = self.render(task_id)
                continue
            current = self.render(task_id)
            if current == documents:
                return True
            documents = current
        return False

    def _settle(self, task_id: str) -> None:
        try:
            self.queue.settle(task_id)
        except Exception as exc:  # the ledger blinked: housekeeping writes the documents again, harmlessly
            log(logger, logging.INFO, "replica debt not settled", task_id=task_id, error=str(exc))

    def _queue(self, task_id: str, error: str) -> None:
        log(logger, logging.WARNING, "replica write failed; queued for retry", task_id=task_id, error=error)
        try:
            self.queue.add(task_id, error)
        except Exception as exc:  # the ledger is down (a change committed just before): keep it here meanwhile
            log(
                logger,
                logging.WARNING,
                "replica write not queued: the ledger is down; queued when it answers",
                task_id=task_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            with self._unqueued_lock:
                first = not self._unqueued
                self._unqueued[task_id] = error
            if first:
                threading.Thread(
                    target=self._queue_when_the_ledger_answers, name="replica-requeue", daemon=True
                ).start()

    def _queue_when_the_ledger_answers(self, interval_s: float = 2.0) -> None:
        while True:
            time.sleep(interval_s)
            with self._unqueued_lock:
                waiting = dict(self._unqueued)
            try:
                for task_id, error in waiting.items():
                    self.queue.add(task_id, error)
                    with self._unqueued_lock:
                        self._unqueued.pop(task_id, None)
            except Exception:  # still down
                continue
            with self._unqueued_lock:
                if not self._unqueued:
                    return
