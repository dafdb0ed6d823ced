"""The job ledger: tasks, their artifacts as small leased state machines, and the outbox.

Every write that announces work (a new task, a summary request, a republish)
adds its outbox rows in the same transaction, so a message is never lost
between the database and the broker. The relay publishes them afterwards.
"""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Iterable, Iterator

from sqlalchemy import Engine, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from htbase.messages import (ArchiveRequest, ArtifactStatus, SUMMARIZE, SummarizeRequest, archive_topic,
                             derive_task_status)
from infra.models import Artifact, Item, OutboxMessage, ReplicaPending, Summary, Task
from infra.storage import StoredObject

PENDING, PROCESSING, SUCCESS, FAILED, CANCELLED = (s.value for s in ArtifactStatus)
TERMINAL = (SUCCESS, FAILED, CANCELLED)


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite keeps no time zone, and both engines must compare alike.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


class ItemConflict(ValueError):
    """A client reused an item_id for a different URL."""


@dataclass(frozen=True)
class NewItem:
    url: str
    url_hash: str
    item_id: str | None = None


@dataclass(frozen=True)
class Outgoing:
    topic: str  # logical: "archive-pdf", "summarize"; the publisher maps it to a real topic
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    data: bytes
    attributes: dict[str, str]


@dataclass(frozen=True)
class PendingReplica:
    task_id: str
    attempts: int  # also the row's version: a failure queued meanwhile moves it on


@dataclass(frozen=True)
class CreatedTask:
    task_id: str
    kind: str
    children: list[dict[str, str]]  # [{task_id, item_id, url}]
    outbox: list[OutboxRow]         # to publish now that the transaction committed


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"   # run the capture
    DONE = "done"         # already finished: acknowledge, do nothing
    BUSY = "busy"         # another delivery holds a live lease: do nothing
    MISSING = "missing"   # no such (task, archiver): the message is bad


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0


def archive_outgoing(request: ArchiveRequest) -> Outgoing:
    return Outgoing(archive_topic(request.archiver), request.to_json(),
                    {"task_id": request.task_id, "archiver": request.archiver})


class Ledger:
    def __init__(self, engine: Engine, *, lease_s: float = 300.0, max_attempts: int = 5) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # --- accepting work -----------------------------------------------------

    def create_task(self, items: list[NewItem], archivers: Iterable[str], *, options: dict[str, Any] | None = None,
                    request_id: str = "", webhook_url: str | None = None, batch: bool = False) -> CreatedTask:
        """Write the task(s), their pending artifacts and the outbox in one transaction."""
        now, archivers, options = utcnow(), list(archivers), dict(options or {})
        parent_id = str(uuid.uuid4()) if batch else None
        children: list[dict[str, str]] = []
        outbox: list[OutboxMessage] = []
        with self.session() as session, session.begin():
            if parent_id:
                session.add(Task(task_id=parent_id, kind="batch", request_id=request_id, webhook_url=webhook_url,
                                 options=options, created_at=now))
            for new in items:
                item = self._upsert_item(session, new, now)
                task_id = str(uuid.uuid4())
                session.add(Task(task_id=task_id, kind="single", parent_id=parent_id, item_id=item.item_id,
                                 request_id=request_id, webhook_url=None if batch else webhook_url,
                                 options=options, created_at=now))
                for archiver in archivers:
                    session.add(Artifact(task_id=task_id, archiver=archiver, status=PENDING,
                                         created_at=now, updated_at=now, meta={}))
                    request = ArchiveRequest(task_id, item.item_id, item.url, archiver, options, request_id)
                    outbox.append(self._enqueue(session, archive_outgoing(request), now))
                children.append({"task_id": task_id, "item_id": item.item_id, "url": item.url})
        rows = _rows(outbox)
        if parent_id:
            return CreatedTask(parent_id, "batch", children, rows)
        return CreatedTask(children[0]["task_id"], "single", children, rows)

    @staticmethod
    def _upsert_item(session: Session, new: NewItem, now: datetime) -> Item:
        item_id = new.item_id or uuid.uuid4().hex
        # A fresh id names no existing item: skip the lookup (one round trip less per request).
        item = session.get(Item, item_id) if new.item_id else None
        if item is None:
            item = Item(item_id=item_id, url=new.url, url_hash=new.url_hash, created_at=now)
            session.add(item)
        elif item.url_hash != new.url_hash:
            raise ItemConflict(f"item_id {item_id!r} already names {item.url!r}")
        return item

    @staticmethod
    def _enqueue(session: Session, message: Outgoing, now: datetime) -> OutboxMessage:
        row = OutboxMessage(topic=message.topic, data=message.data.decode(),
                            attributes=dict(message.attributes), created_at=now)
        session.add(row)
        return row

    # --- the outbox ---------------------------------------------------------

    def unsent(self, limit: int = 100, min_age_s: float = 0.0) -> list[OutboxRow]:
        """Unsent messages, oldest first; ``min_age_s`` leaves fresh ones to their writer."""
        cutoff = utcnow() - timedelta(seconds=min_age_s)
        with self.session() as session:
            return _rows(session.scalars(select(OutboxMessage)
                                         .where(OutboxMessage.sent_at.is_(None), OutboxMessage.created_at <= cutoff)
                                         .order_by(OutboxMessage.id).limit(limit)))

    def mark_sent(self, outbox_ids: Iterable[int]) -> None:
        with self.session() as session, session.begin():
            session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(list(outbox_ids)))
                            .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1))

    def mark_unsent(self, outbox_id: int, error: str) -> None:
        with self.session() as session, session.begin():
            session.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                            .values(attempts=OutboxMessage.attempts + 1, last_error=error[:2000]))

    # --- the artifact state machine -----------------------------------------

    def claim(self, task_id: str, archiver: str, owner: str) -> Claim:
        """Take the artifact under a lease, atomically; at most one live holder."""
        now = utcnow()
        claimable = or_(Artifact.status == PENDING,
                        and_(Artifact.status == PROCESSING, Artifact.lease_expires_at < now))
        with self.session() as session, session.begin():
            result = session.execute(
                update(Artifact)
                .where(Artifact.task_id == task_id, Artifact.archiver == archiver, claimable)
                .values(status=PROCESSING, lease_owner=owner, lease_expires_at=now + self.lease,
                        attempts=Artifact.attempts + 1, started_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
            artifact = session.scalar(select(Artifact).where(Artifact.task_id == task_id,
                                                             Artifact.archiver == archiver))
        if artifact is None:
            return Claim(ClaimOutcome.MISSING)
        if result.rowcount == 1:
            return Claim(ClaimOutcome.CLAIMED, artifact.attempts)
        if artifact.status in TERMINAL:
            return Claim(ClaimOutcome.DONE, artifact.attempts)
        return Claim(ClaimOutcome.BUSY, artifact.attempts)

    def renew(self, task_id: str, archiver: str, owner: str) -> bool:
        """Extend a live lease; False when ``owner`` no longer holds it."""
        now = utcnow()
        with self.session() as session, session.begin():
            result = session.execute(_held(task_id, archiver, owner)
                                     .values(lease_expires_at=now + self.lease, updated_at=now))
            return result.rowcount == 1

    @contextmanager
    def holding(self, task_id: str, archiver: str, owner: str) -> Iterator[None]:
        """Renew the lease every third of its length while the block runs.

        A capture may outlast one lease; a crashed process stops renewing, so
        its lease still expires and the sweeper hands the work on.
        """
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.lease.total_seconds() / 3):
                try:
                    if not self.renew(task_id, archiver, owner):
                        return
                except Exception:  # the database blinked: the next beat tries again
                    continue

        beat = threading.Thread(target=heartbeat, name=f"lease-{archiver}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()

    def _finish(self, session: Session, task_id: str, archiver: str, owner: str, **values) -> bool:
        """Update the artifact only while ``owner`` still holds it (a fencing check)."""
        result = session.execute(_held(task_id, archiver, owner)
                                 .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **values))
        return result.rowcount == 1

    def complete(self, task_id: str, archiver: str, owner: str, stored: StoredObject, *,
                 meta: dict[str, Any], duration_ms: int,
                 follow_up: Iterable[Outgoing] = ()) -> list[OutboxRow] | None:
        """Record success; returns the follow-up outbox rows, or None if the lease was lost."""
        now = utcnow()
        with self.session() as session, session.begin():
            done = self._finish(session, task_id, archiver, owner, status=SUCCESS, error=None,
                                storage_key=stored.key, uri=stored.uri, size=stored.size, sha256=stored.sha256,
                                content_type=stored.content_type, meta=meta, finished_at=now,
                                duration_ms=duration_ms)
            if not done:
                return None
            outbox = [self._enqueue(session, message, now) for message in follow_up]
        return _rows(outbox)

    def fail(self, task_id: str, archiver: str, owner: str, error: str, *, permanent: bool) -> bool:
        """Record a failed attempt. Returns True when the failure is final."""
        with self.session() as session, session.begin():
            attempts = session.scalar(select(Artifact.attempts).where(
                Artifact.task_id == task_id, Artifact.archiver == archiver)) or 0
            final = permanent or attempts >= self.max_attempts
            status = FAILED if final else PENDING
            extra = {"finished_at": utcnow()} if final else {}
            self._finish(session, task_id, archiver, owner, status=status, error=error[:4000], **extra)
            return final

    def fail_undelivered(self, task_id: str, archiver: str, error: str) -> bool:
        """The dead-letter path: fail whatever is not finished, holding a lease or not."""
        now = utcnow()
        with self.session() as session, session.begin():
            result = session.execute(
                update(Artifact)
                .where(Artifact.task_id == task_id, Artifact.archiver == archiver,
                       Artifact.status.in_((PENDING, PROCESSING)))
                .values(status=FAILED, error=error[:4000], lease_owner=None, lease_expires_at=None,
                        finished_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
            return result.rowcount == 1

    def sweep(self, *, revive_all: bool = False) -> dict[str, int]:
        """Nothing stays pending or processing forever.

        An expired lease (a crashed capture) or a pending artifact untouched for
        a lease period (a lost message) is republished through the outbox, or
        failed once it has used up its attempts. ``revive_all`` takes all
        unfinished work: only for a single process whose in-memory queue died
        with it.
        """
        now = utcnow()
        stale = Artifact.status.in_((PENDING, PROCESSING)) if revive_all else or_(
            and_(Artifact.status == PROCESSING, Artifact.lease_expires_at < now),
            and_(Artifact.status == PENDING, Artifact.updated_at < now - self.lease))
        counts = {"republished": 0, "failed": 0}
        with self.session() as session, session.begin():
            rows = session.scalars(select(Artifact).where(stale).options(selectinload(Artifact.task))
                                   .limit(500).with_for_update(skip_locked=True)).all()
            for artifact in rows:
                if artifact.attempts >= self.max_attempts:
                    artifact.status, artifact.finished_at = FAILED, now
                    artifact.error = f"gave up after {artifact.attempts} attempts: {artifact.error or 'lease expired'}"
                    counts["failed"] += 1
                else:
                    task = artifact.task
                    request = ArchiveRequest(task.task_id, task.item.item_id, task.item.url, artifact.archiver,
                                             task.options, task.request_id)
                    artifact.status = PENDING
                    self._enqueue(session, archive_outgoing(request), now)
                    counts["republished"] += 1
                artifact.lease_owner, artifact.lease_expires_at, artifact.updated_at = None, None, now
        return counts

    # --- summaries ----------------------------------------------------------

    def summary(self, cache_key: str) -> Summary | None:
        with self.session() as session:
            return session.scalar(select(Summary).where(Summary.cache_key == cache_key))

    def request_summary(self, task_id: str, *, force: bool = False, request_id: str = "") -> list[OutboxRow]:
        with self.session() as session, session.begin():
            row = self._enqueue(session, summarize_outgoing(SummarizeRequest(task_id, force, request_id)), utcnow())
        return _rows([row])

    def save_summary(self, task_id: str, cache_key: str, *, status: str, model: str, prompt_version: str,
                     result: dict[str, Any] | None = None, error: str | None = None,
                     raw_text: str | None = None) -> None:
        now = utcnow()
        with self.session() as session, session.begin():
            row = session.scalar(select(Summary).where(Summary.cache_key == cache_key).with_for_update())
            if row is None:
                row = Summary(cache_key=cache_key, created_at=now)
                session.add(row)
            row.status, row.model, row.prompt_version = status, model, prompt_version
            row.result, row.error, row.raw_text, row.updated_at = result or {}, error, raw_text, now
            session.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))

    def attach_summary(self, task_id: str, cache_key: str) -> None:
        """Point a task at a summary that already exists (the same article, captured again)."""
        with self.session() as session, session.begin():
            session.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))

    # --- the replica queue --------------------------------------------------

    def queue_replica(self, task_id: str, error: str) -> None:
        """Remember that the task's replica document is behind: one row per task, due at once."""
        now = utcnow()
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(ReplicaPending)
        statement = insert.values(task_id=task_id, attempts=1, last_error=error[:2000], created_at=now,
                                  next_attempt_at=now)
        # Already queued: count the failure and keep the row's schedule (its backoff stands).
        statement = statement.on_conflict_do_update(
            index_elements=[ReplicaPending.task_id],
            set_={"attempts": ReplicaPending.attempts + 1, "last_error": statement.excluded.last_error})
        with self.session() as session, session.begin():
            session.execute(statement)

    def due_replicas(self, limit: int = 100) -> list[PendingReplica]:
        with self.session() as session:
            rows = session.execute(select(ReplicaPending.task_id, ReplicaPending.attempts)
                                   .where(ReplicaPending.next_attempt_at <= utcnow())
                                   .order_by(ReplicaPending.next_attempt_at, ReplicaPending.task_id).limit(limit))
            return [PendingReplica(task_id, attempts) for task_id, attempts in rows]

    def replica_written(self, pending: PendingReplica) -> bool:
        """Drop the row, unless a failure was queued for the task since it was read."""
        with self.session() as session, session.begin():
            result = session.execute(delete(ReplicaPending).where(ReplicaPending.task_id == pending.task_id,
                                                                  ReplicaPending.attempts == pending.attempts))
            return result.rowcount == 1

    def replica_retry_later(self, pending: PendingReplica, error: str, delay_s: float) -> None:
        with self.session() as session, session.begin():
            session.execute(update(ReplicaPending).where(ReplicaPending.task_id == pending.task_id)
                            .values(attempts=ReplicaPending.attempts + 1, last_error=error[:2000],
                                    next_attempt_at=utcnow() + timedelta(seconds=delay_s)))

    # --- reading ------------------------------------------------------------

    def task(self, task_id: str) -> Task | None:
        with self.session() as session:
            return session.scalar(select(Task).where(Task.task_id == task_id)
                                  .options(selectinload(Task.artifacts)))

    def children(self, parent_id: str) -> list[Task]:
        with self.session() as session:
            return list(session.scalars(select(Task).where(Task.parent_id == parent_id)
                                        .options(selectinload(Task.artifacts)).order_by(Task.created_at)))

    def list_tasks(self, *, limit: int, offset: int) -> tuple[list[Task], int]:
        """Top-level tasks (batches and single requests), newest first."""
        top = Task.parent_id.is_(None)
        with self.session() as session:
            total = session.scalar(select(func.count()).select_from(Task).where(top)) or 0
            rows = session.scalars(select(Task).where(top).options(selectinload(Task.artifacts))
                                   .order_by(Task.created_at.desc(), Task.task_id).limit(limit).offset(offset))
            return list(rows), total

    def latest_task_for_item(self, item_id: str) -> Task | None:
        with self.session() as session:
            return session.scalar(select(Task).where(Task.item_id == item_id)
                                  .options(selectinload(Task.artifacts))
                                  .order_by(Task.created_at.desc()).limit(1))


def _held(task_id: str, archiver: str, owner: str):
    """An UPDATE of the artifact that applies only while ``owner`` holds its lease (the fencing check)."""
    return (update(Artifact)
            .where(Artifact.task_id == task_id, Artifact.archiver == archiver,
                   Artifact.status == PROCESSING, Artifact.lease_owner == owner)
            .execution_options(synchronize_session=False))


def _rows(messages: Iterable[OutboxMessage]) -> list[OutboxRow]:
    return [OutboxRow(m.id, m.topic, m.data.encode(), dict(m.attributes)) for m in messages]


def summarize_outgoing(request: SummarizeRequest) -> Outgoing:
    return Outgoing(SUMMARIZE, request.to_json(), {"task_id": request.task_id})


def task_status(tasks: Iterable[Task]) -> tuple[str, float, datetime | None]:
    """Status, progress and completion time of one task or a batch, from its artifacts."""
    artifacts = [a for t in tasks for a in t.artifacts]
    status, progress = derive_task_status([ArtifactStatus(a.status) for a in artifacts])
    finished = [a.finished_at for a in artifacts if a.finished_at]
    completed_at = max(finished) if progress == 1.0 and finished else None
    return status.value, progress, completed_at
