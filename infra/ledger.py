"""The job ledger: tasks and their artifacts, each a small state machine with a lease.

Writes that announce work (a new task, a follow-up, a republish) add their
outbox rows (infra/outbox.py) in the same transaction.
"""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Iterable, Iterator

from sqlalchemy import Engine, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from htbase.messages import ArchiveRequest, ArtifactStatus
from infra.db import new_session
from infra.metrics import LEASE_TAKEOVERS, SUBMISSIONS
from infra.models import Artifact, Item, OutboxMessage, Task, utcnow
from infra.outbox import Outgoing, OutboxRow, archive_outgoing, enqueue, outbox_rows
from infra.storage import StoredObject
from infra.telemetry import traced

PENDING, PROCESSING, SUCCESS, FAILED, CANCELLED = (s.value for s in ArtifactStatus)
TERMINAL = (SUCCESS, FAILED, CANCELLED)


class ItemConflict(ValueError):
    """A client reused an item_id for a different URL."""


@dataclass(frozen=True)
class NewItem:
    url: str
    url_hash: str
    item_id: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """A batch's children counted instead of loaded: what a list of tasks shows of a batch."""

    items: int
    statuses: list[ArtifactStatus]  # one per artifact of every child
    finished_at: datetime | None    # the latest finish among them


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


class Ledger:
    def __init__(self, engine: Engine, *, lease_s: float = 300.0, max_attempts: int = 5) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts

    def session(self) -> Session:
        return new_session(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # --- accepting work -----------------------------------------------------

    @traced("ledger create_task")
    def create_task(self, items: list[NewItem], archivers: Iterable[str], *, options: dict[str, Any] | None = None,
                    request_id: str = "", webhook_url: str | None = None, batch: bool = False) -> CreatedTask:
        """Write the task(s), their pending artifacts and the outbox in one transaction."""
        task = (items, list(archivers), dict(options or {}), request_id, webhook_url, batch)
        try:
            created = self._create_task(*task)
        except IntegrityError:
            # Two requests created the same new item_id at once and this one lost the race:
            # written again, it finds the winner's item (and adds to it, or conflicts with it).
            created = self._create_task(*task)
        SUBMISSIONS.add(1, {"kind": created.kind})
        return created

    def _create_task(self, items: list[NewItem], archivers: list[str], options: dict[str, Any], request_id: str,
                     webhook_url: str | None, batch: bool) -> CreatedTask:
        now = utcnow()
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
                    outbox.append(enqueue(session, archive_outgoing(request), now))
                children.append({"task_id": task_id, "item_id": item.item_id, "url": item.url})
        rows = outbox_rows(outbox)
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

    # --- the artifact state machine -----------------------------------------

    @traced("ledger claim")
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

    @traced("ledger complete")
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
            outbox = [enqueue(session, message, now) for message in follow_up]
        return outbox_rows(outbox)

    @traced("ledger fail")
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

    @traced("ledger fail_undelivered")
    def fail_undelivered(self, task_id: str, archiver: str, error: str) -> bool:
        """A message that will never arrive (dead-lettered, or never publishable): fail whatever is not
        finished, holding a lease or not."""
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

    @traced("ledger sweep")
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
                if artifact.status == PROCESSING:  # its holder stopped renewing: a crash, or a hang
                    LEASE_TAKEOVERS.add(1, {"archiver": artifact.archiver, "noticed_by": "sweeper"})
                if artifact.attempts >= self.max_attempts:
                    artifact.status, artifact.finished_at = FAILED, now
                    artifact.error = f"gave up after {artifact.attempts} attempts: {artifact.error or 'lease expired'}"
                    counts["failed"] += 1
                else:
                    task = artifact.task
                    request = ArchiveRequest(task.task_id, task.item.item_id, task.item.url, artifact.archiver,
                                             task.options, task.request_id)
                    artifact.status = PENDING
                    enqueue(session, archive_outgoing(request), now)
                    counts["republished"] += 1
                artifact.lease_owner, artifact.lease_expires_at, artifact.updated_at = None, None, now
        return counts

    # --- reading ------------------------------------------------------------

    def task(self, task_id: str) -> Task | None:
        with self.session() as session:
            return session.scalar(select(Task).where(Task.task_id == task_id)
                                  .options(selectinload(Task.artifacts)))

    def children(self, parent_id: str) -> list[Task]:
        with self.session() as session:
            return list(session.scalars(select(Task).where(Task.parent_id == parent_id)
                                        .options(selectinload(Task.artifacts)).order_by(Task.created_at)))

    def batch_summaries(self, parent_ids: list[str]) -> dict[str, BatchSummary]:
        """Each batch's child count and artifact statuses, aggregated by the database."""
        if not parent_ids:
            return {}
        with self.session() as session:
            items = dict(session.execute(select(Task.parent_id, func.count()).where(Task.parent_id.in_(parent_ids))
                                         .group_by(Task.parent_id)).all())
            counted = session.execute(
                select(Task.parent_id, Artifact.status, func.count(), func.max(Artifact.finished_at))
                .join(Artifact, Artifact.task_id == Task.task_id).where(Task.parent_id.in_(parent_ids))
                .group_by(Task.parent_id, Artifact.status)).all()
        summaries = {}
        for parent_id in parent_ids:
            rows = [row for row in counted if row[0] == parent_id]
            finished = [latest for *_, latest in rows if latest is not None]
            summaries[parent_id] = BatchSummary(items.get(parent_id, 0),
                                                [ArtifactStatus(status) for _, status, n, _ in rows for _ in range(n)],
                                                max(finished, default=None))
        return summaries

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


