"""The job ledger: tasks and their artifacts, each a small state machine with a lease.

Writes that announce work (a new task, a follow-up, a republish) add their
outbox rows (infra/outbox.py) in the same transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, Engine, Table, and_, case, exists, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from htbase.messages import ArchiveRequest, ArtifactStatus, TaskStatus, WebhookRequest
from htbase.topology import MAX_BACKOFF_S
from infra.db import new_session, rowcount
from infra.metrics import LEASE_TAKEOVERS, SUBMISSIONS
from infra.models import Artifact, Item, PendingDeletion, Task, WebhookDelivery, utcnow
from infra.outbox import OutboxRow, Outgoing, archive_outgoing, enqueue, webhook_outgoing
from infra.storage import StoredObject
from infra.telemetry import traced

PENDING, PROCESSING, SUCCESS, FAILED, CANCELLED = (s.value for s in ArtifactStatus)
ITEMS, TASKS, ARTIFACTS = (cast(Table, model.__table__) for model in (Item, Task, Artifact))
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
    finished_at: datetime | None  # the latest finish among them


@dataclass(frozen=True)
class CreatedTask:
    task_id: str
    kind: str
    children: list[dict[str, str]]  # [{task_id, item_id, url}]
    outbox: list[OutboxRow]  # to publish now that the transaction committed


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # its pending work will never run (or it was cancelled before)
    FINISHED = "finished"  # it had ended already: nothing to cancel
    MISSING = "missing"


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # run the capture
    DONE = "done"  # already finished: acknowledge, do nothing
    BUSY = "busy"  # another delivery holds a live lease: do nothing
    MISSING = "missing"  # no such (task, archiver): the message is bad


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0


class NewSnapshots:
    """New captures, gathered and then written in one go: their tasks, pending artifacts and
    messages are three INSERTs in the caller's transaction, however many there are."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.tasks: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.messages: list[Outgoing] = []

    def add_batch(self, options: dict[str, Any], request_id: str, webhook_url: str | None) -> str:
        """A batch task, the parent of the snapshots added after it; returns its id."""
        task_id = str(uuid.uuid4())
        self.tasks.append(self._task(task_id, "batch", None, None, options, request_id, webhook_url))
        return task_id

    def add(
        self,
        item_id: str,
        url: str,
        archivers: Iterable[str],
        options: dict[str, Any],
        *,
        request_id: str = "",
        webhook_url: str | None = None,
        parent_id: str | None = None,
    ) -> str:
        """A new task capturing the item again, its pending artifacts and their messages; returns its id."""
        task_id = str(uuid.uuid4())
        self.tasks.append(self._task(task_id, "single", parent_id, item_id, options, request_id, webhook_url))
        for archiver in archivers:
            self.artifacts.append(
                {
                    "task_id": task_id,
                    "archiver": archiver,
                    "status": PENDING,
                    "created_at": self.now,
                    "updated_at": self.now,
                    "meta": {},
                }
            )
            request = ArchiveRequest(task_id, item_id, url, archiver, options, request_id)
            self.messages.append(archive_outgoing(request))
        return task_id

    def _task(
        self,
        task_id: str,
        kind: str,
        parent_id: str | None,
        item_id: str | None,
        options: dict[str, Any],
        request_id: str,
        webhook_url: str | None,
    ) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "kind": kind,
            "parent_id": parent_id,
            "item_id": item_id,
            "request_id": request_id,
            "webhook_url": webhook_url,
            "options": options,
            "created_at": self.now,
        }

    def write(self, session: Session) -> list[OutboxRow]:
        """Insert what was added (Core statements, not the ORM's unit of work: this is the accept
        path); the messages to publish once the transaction commits."""
        if self.tasks:
            session.execute(insert(TASKS), self.tasks)
        if self.artifacts:
            session.execute(insert(ARTIFACTS), self.artifacts)
        return enqueue(session, self.messages, self.now)


class Ledger:
    """``announce`` publishes what a commit announced (a task's end): the runtime sets it once it has a
    relay; until then the outbox keeps the rows for the relay's next flush. ``swept`` hears of each
    task whose artifacts the sweeper changed, which no capture will report (the runtime writes its
    replica documents). ``owe_replica`` runs in the transaction that ends a capture, whose process
    writes the task's replica documents next: the runtime records that debt there."""

    def __init__(
        self, engine: Engine, *, lease_s: float = 300.0, max_attempts: int = 5, retry_backoff_s: float = 1.0
    ) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.announce: Callable[[list[OutboxRow]], object] = lambda rows: None
        self.swept: Callable[[str], object] = lambda task_id: None
        self.owe_replica: Callable[[Session, str], object] = lambda session, task_id: None

    def session(self) -> Session:
        return new_session(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # --- accepting work -----------------------------------------------------

    @traced("ledger create_task")
    def create_task(
        self,
        items: list[NewItem],
        archivers: Iterable[str],
        *,
        options: dict[str, Any] | None = None,
        request_id: str = "",
        webhook_url: str | None = None,
        batch: bool = False,
    ) -> CreatedTask:
        """Write the task(s), their pending artifacts and the outbox in one transaction."""
        task = (items, list(archivers), dict(options or {}), request_id, webhook_url, batch)
        # A request that loses a race to create a new item (another made it at the same moment) is
        # written again and finds that item. Each loss is to a commit that made one of its items, so
        # a request of n items loses at most n times.
        for _ in range(len(items)):
            try:
                created = self._create_task(*task)
                break
            except IntegrityError:
                continue
        else:
            created = self._create_task(*task)
        SUBMISSIONS.add(1, {"kind": created.kind})
        return created

    def _create_task(
        self,
        items: list[NewItem],
        archivers: list[str],
        options: dict[str, Any],
        request_id: str,
        webhook_url: str | None,
        batch: bool,
    ) -> CreatedTask:
        snapshots = NewSnapshots(utcnow())
        children: list[dict[str, str]] = []
        with self.session() as session, session.begin():
            parent_id = snapshots.add_batch(options, request_id, webhook_url) if batch else None
            # Items are written in one order whatever the request's, so concurrent requests that make
            # the same new items wait for one another instead of deadlocking (Postgres).
            in_order = sorted(items, key=lambda new: new.item_id or new.url_hash)
            written = {new: self._upsert_item(session, new, snapshots.now) for new in in_order}
            for new in items:
                item_id, url = written[new]
                task_id = snapshots.add(
                    item_id,
                    url,
                    archivers,
                    options,
                    request_id=request_id,
                    webhook_url=None if batch else webhook_url,
                    parent_id=parent_id,
                )
                children.append({"task_id": task_id, "item_id": item_id, "url": url})
            rows = snapshots.write(session)
        if parent_id:
            return CreatedTask(parent_id, "batch", children, rows)
        return CreatedTask(children[0]["task_id"], "single", children, rows)

    @staticmethod
    def _upsert_item(session: Session, new: NewItem, now: datetime) -> tuple[str, str]:
        """The item's (id, url). A client's item_id names its item; without one, a URL saved before is
        that item again (the first saved, if several are), and a new URL's item is named after its
        hash, so that two first captures of one URL at once make one item (the loser of the race
        retries and finds it). Core statements: this is the accept path."""
        if new.item_id:
            named = session.execute(select(ITEMS.c.url_hash, ITEMS.c.url).where(ITEMS.c.item_id == new.item_id)).first()
            if named is not None:
                if named.url_hash != new.url_hash:
                    raise ItemConflict(f"item_id {new.item_id!r} already names {named.url!r}")
                return new.item_id, named.url
        else:
            saved = session.execute(
                select(ITEMS.c.item_id, ITEMS.c.url)
                .where(ITEMS.c.url_hash == new.url_hash)
                .order_by(ITEMS.c.created_at, ITEMS.c.item_id)
                .limit(1)
            ).first()
            if saved is not None:
                return saved.item_id, saved.url
        item_id = new.item_id or new.url_hash[:32]
        if not new.item_id and session.scalar(select(ITEMS.c.item_id).where(ITEMS.c.item_id == item_id)):
            item_id = uuid.uuid4().hex  # a client took that name
        session.execute(insert(ITEMS).values(item_id=item_id, url=new.url, url_hash=new.url_hash, created_at=now))
        return item_id, new.url

    # --- the artifact state machine -----------------------------------------

    @traced("ledger claim")
    def claim(self, task_id: str, archiver: str, owner: str) -> Claim:
        """Take the artifact under a lease, atomically; at most one live holder."""
        now = utcnow()
        claimable = or_(
            Artifact.status == PENDING, and_(Artifact.status == PROCESSING, Artifact.lease_expires_at < now)
        )
        cancelled = exists().where(Task.task_id == task_id, Task.cancelled_at.is_not(None))
        with self.session() as session, session.begin():
            result = session.execute(
                update(Artifact)
                .where(Artifact.task_id == task_id, Artifact.archiver == archiver, claimable, ~cancelled)
                .values(
                    status=PROCESSING,
                    lease_owner=owner,
                    lease_expires_at=now + self.lease,
                    attempts=Artifact.attempts + 1,
                    started_at=now,
                    updated_at=now,
                    next_attempt_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            artifact = session.scalar(
                select(Artifact).where(Artifact.task_id == task_id, Artifact.archiver == archiver)
            )
        if artifact is None:
            return Claim(ClaimOutcome.MISSING)
        if rowcount(result) == 1:
            return Claim(ClaimOutcome.CLAIMED, artifact.attempts)
        if artifact.status in TERMINAL:
            return Claim(ClaimOutcome.DONE, artifact.attempts)
        return Claim(ClaimOutcome.BUSY, artifact.attempts)

    def renew(self, task_id: str, archiver: str, owner: str) -> bool:
        """Extend a live lease; False when ``owner`` no longer holds it."""
        now = utcnow()
        with self.session() as session, session.begin():
            result = session.execute(
                _held(task_id, archiver, owner).values(lease_expires_at=now + self.lease, updated_at=now)
            )
            return rowcount(result) == 1

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
        result = session.execute(
            _held(task_id, archiver, owner).values(
                lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **values
            )
        )
        return rowcount(result) == 1

    @traced("ledger complete")
    def complete(
        self,
        task_id: str,
        archiver: str,
        owner: str,
        stored: StoredObject,
        *,
        meta: dict[str, Any],
        duration_ms: int,
        follow_up: Iterable[Outgoing] = (),
    ) -> list[OutboxRow] | None:
        """Record success; returns the follow-up outbox rows, or None if the lease was lost.

        If the task was deleted while the capture ran, what it stored is queued for removal.
        """
        now = utcnow()
        with self.session() as session, session.begin():
            top = self.lock_top(session, task_id)
            done = self._finish(
                session,
                task_id,
                archiver,
                owner,
                status=SUCCESS,
                error=None,
                storage_key=stored.key,
                uri=stored.uri,
                size=stored.size,
                sha256=stored.sha256,
                content_type=stored.content_type,
                meta=meta,
                finished_at=now,
                duration_ms=duration_ms,
            )
            if not done:
                if top is None:
                    forget_files(session, [task_id], now)
                return None
            outbox = enqueue(session, follow_up, now)
            self.owe_replica(session, task_id)
            ended = self._announce_end(session, top, now)
        self.announce(ended)
        return outbox

    @traced("ledger fail")
    def fail(self, task_id: str, archiver: str, owner: str, error: str, *, permanent: bool) -> bool:
        """Record a failed attempt. Returns True when the failure is final (as it is once the task
        was cancelled: a capture that was running then is not tried again)."""
        now = utcnow()
        with self.session() as session, session.begin():
            top = self.lock_top(session, task_id)
            cancelled_at = session.scalar(select(Task.cancelled_at).where(Task.task_id == task_id))
            attempts = (
                session.scalar(
                    select(Artifact.attempts).where(Artifact.task_id == task_id, Artifact.archiver == archiver)
                )
                or 0
            )
            final = permanent or attempts >= self.max_attempts or cancelled_at is not None
            if final:
                values = {"status": CANCELLED if cancelled_at is not None else FAILED, "finished_at": now}
            else:
                values = {"status": PENDING, "next_attempt_at": now + timedelta(seconds=self.backoff_s(attempts))}
            if not self._finish(session, task_id, archiver, owner, error=error[:4000], **values) or not final:
                return final
            self.owe_replica(session, task_id)
            ended = self._announce_end(session, top, now)
        self.announce(ended)
        return final

    def backoff_s(self, attempts: int) -> float:
        """The broker's wait before delivering again after ``attempts`` deliveries (a subscription's
        retry policy, the embedded dispatcher's)."""
        return min(self.retry_backoff_s * 2 ** max(attempts - 1, 0), max(MAX_BACKOFF_S, self.retry_backoff_s))

    @traced("ledger fail_undelivered")
    def fail_undelivered(self, task_id: str, archiver: str, error: str) -> bool:
        """A message that will never arrive (dead-lettered, or never publishable): fail whatever is not
        finished, holding a lease or not."""
        now = utcnow()
        with self.session() as session, session.begin():
            top = self.lock_top(session, task_id)
            result = session.execute(
                update(Artifact)
                .where(
                    Artifact.task_id == task_id,
                    Artifact.archiver == archiver,
                    Artifact.status.in_((PENDING, PROCESSING)),
                )
                .values(
                    status=FAILED,
                    error=error[:4000],
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                    next_attempt_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) != 1:
                return False
            ended = self._announce_end(session, top, now)
        self.announce(ended)
        return True

    def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a task's pending captures (every task's, for a batch): they never run. A capture that
        is running finishes and is kept; should it fail, it is not tried again."""
        now = utcnow()
        with self.session() as session, session.begin():
            top = self.lock_top(session, task_id)
            if top is None:
                return CancelOutcome.MISSING
            task = session.get_one(Task, task_id)  # lock_top found it
            ids = [task_id, *session.scalars(select(Task.task_id).where(Task.parent_id == task_id))]
            unfinished = session.scalar(
                select(func.count())
                .select_from(Artifact)
                .where(Artifact.task_id.in_(ids), Artifact.status.not_in(TERMINAL))
            )
            if task.cancelled_at is None and not unfinished:
                return CancelOutcome.FINISHED
            session.execute(
                update(Task)
                .where(Task.task_id.in_(ids), Task.cancelled_at.is_(None))
                .values(cancelled_at=now)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Artifact)
                .where(Artifact.task_id.in_(ids), Artifact.status == PENDING)
                .values(status=CANCELLED, finished_at=now, updated_at=now, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )
            ended = self._announce_end(session, top, now)
        self.announce(ended)
        return CancelOutcome.CANCELLED

    @staticmethod
    def lock_top(session: Session, task_id: str) -> str | None:
        """Lock the task's top row (the batch's, for a child) before any write that may end it, so
        that such writes run one after the other and the last one sees that everything ended.
        Always the top row, first: one lock order, no deadlock. None: no such task."""
        found = session.execute(select(Task.task_id, Task.parent_id).where(Task.task_id == task_id)).first()
        if found is None:
            return None
        top = found.parent_id or found.task_id
        session.execute(select(Task.task_id).where(Task.task_id == top).with_for_update())
        return top

    @staticmethod
    def _announce_end(session: Session, top: str | None, now: datetime) -> list[OutboxRow]:
        """If the task (or batch) ``top`` has just ended and asked for a webhook: its one delivery, and
        the message that sends it, in the transaction that ended it. Runs under ``lock_top``."""
        task = session.get(Task, top) if top else None
        if task is None or not task.webhook_url:
            return []
        members = select(Task.task_id).where(or_(Task.task_id == top, Task.parent_id == top))
        unfinished = session.scalar(
            select(func.count())
            .select_from(Artifact)
            .where(Artifact.task_id.in_(members), Artifact.status.not_in(TERMINAL))
        )
        if unfinished or session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.task_id == top)):
            return []
        delivery = WebhookDelivery(
            id=f"msg_{uuid.uuid4().hex}",
            task_id=top,
            url=task.webhook_url,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()  # the delivery, which the message names
        return enqueue(session, [webhook_outgoing(WebhookRequest(delivery.id))], now)

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
        stale = (
            Artifact.status.in_((PENDING, PROCESSING))
            if revive_all
            else or_(
                and_(Artifact.status == PROCESSING, Artifact.lease_expires_at < now),
                and_(Artifact.status == PENDING, Artifact.updated_at < now - self.lease),
            )
        )
        counts = {"republished": 0, "failed": 0}
        with self.session() as session:
            task_ids = list(dict.fromkeys(session.scalars(select(Artifact.task_id).where(stale).limit(500))))
        for task_id in task_ids:  # a transaction per task: the task's lock first, as every ending write takes it
            with self.session() as session, session.begin():
                top = self.lock_top(session, task_id)
                rows = session.scalars(
                    select(Artifact)
                    .where(stale, Artifact.task_id == task_id)
                    .options(selectinload(Artifact.task))
                    .with_for_update(skip_locked=True)
                ).all()
                republish: list[Outgoing] = []
                for artifact in rows:
                    if artifact.status == PROCESSING:  # its holder stopped renewing: a crash, or a hang
                        LEASE_TAKEOVERS.add(1, {"archiver": artifact.archiver, "noticed_by": "sweeper"})
                    task = artifact.task
                    if task.cancelled_at is not None:  # its capture crashed after the task was cancelled
                        artifact.status, artifact.finished_at = CANCELLED, now
                        counts["failed"] += 1
                    elif artifact.attempts >= self.max_attempts:
                        artifact.status, artifact.finished_at = FAILED, now
                        artifact.error = (
                            f"gave up after {artifact.attempts} attempts: {artifact.error or 'lease expired'}"
                        )
                        counts["failed"] += 1
                    else:
                        item = task.item
                        assert item is not None  # an artifact's task is a single one, which has its item
                        request = ArchiveRequest(
                            task.task_id,
                            item.item_id,
                            item.url,
                            artifact.archiver,
                            task.options,
                            task.request_id,
                        )
                        artifact.status = PENDING
                        republish.append(archive_outgoing(request))
                        counts["republished"] += 1
                    artifact.lease_owner, artifact.lease_expires_at, artifact.updated_at = None, None, now
                session.flush()
                enqueue(session, republish, now)
                ended = self._announce_end(session, top, now)
            self.announce(ended)
            if rows:
                self.swept(task_id)
        return counts

    # --- reading ------------------------------------------------------------

    def task(self, task_id: str) -> Task | None:
        with self.session() as session:
            return session.scalar(select(Task).where(Task.task_id == task_id).options(selectinload(Task.artifacts)))

    def children(self, parent_id: str) -> list[Task]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Task)
                    .where(Task.parent_id == parent_id)
                    .options(selectinload(Task.artifacts))
                    # A batch's children share their creation time: the id makes the order the same each time.
                    .order_by(Task.created_at, Task.task_id)
                )
            )

    def batch_summaries(self, parent_ids: list[str]) -> dict[str, BatchSummary]:
        """Each batch's child count and artifact statuses, aggregated by the database."""
        if not parent_ids:
            return {}
        with self.session() as session:
            items = dict(
                session.execute(
                    select(Task.parent_id, func.count()).where(Task.parent_id.in_(parent_ids)).group_by(Task.parent_id)
                ).all()
            )
            counted = session.execute(
                select(Task.parent_id, Artifact.status, func.count(), func.max(Artifact.finished_at))
                .join(Artifact, Artifact.task_id == Task.task_id)
                .where(Task.parent_id.in_(parent_ids))
                .group_by(Task.parent_id, Artifact.status)
            ).all()
        summaries = {}
        for parent_id in parent_ids:
            rows = [row for row in counted if row[0] == parent_id]
            finished = [latest for *_, latest in rows if latest is not None]
            summaries[parent_id] = BatchSummary(
                items.get(parent_id, 0),
                [ArtifactStatus(status) for _, status, n, _ in rows for _ in range(n)],
                max(finished, default=None),
            )
        return summaries

    def list_tasks(
        self,
        *,
        limit: int,
        offset: int,
        status: TaskStatus | None = None,
        item_id: str | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Task], int]:
        """Top-level tasks (batches and single requests), newest first; with ``item_id``, that item's
        snapshots (a batch's children among them). ``status`` is derived, as a task document shows it:
        from the artifacts' statuses, counted by the database."""
        conditions: list[ColumnElement[bool]] = [Task.item_id == item_id] if item_id else [Task.parent_id.is_(None)]
        if since is not None:
            conditions.append(Task.created_at >= since)
        query = select(Task)
        if status is not None:
            counts = _status_counts(Task.task_id if item_id else func.coalesce(Task.parent_id, Task.task_id))
            query = query.join(counts, counts.c.owner == Task.task_id)
            conditions.append(_has_status(counts.c, status))
        query = query.where(*conditions)
        with self.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.options(selectinload(Task.artifacts))
                .order_by(Task.created_at.desc(), Task.task_id)
                .limit(limit)
                .offset(offset)
            )
            return list(rows), total

    def latest_task_for_item(self, item_id: str) -> Task | None:
        with self.session() as session:
            return session.scalar(
                select(Task)
                .where(Task.item_id == item_id)
                .options(selectinload(Task.artifacts))
                .order_by(Task.created_at.desc())
                .limit(1)
            )


def forget_files(session: Session, task_ids: Iterable[str], now: datetime) -> None:
    """Queue the stored files of tasks whose rows go in this transaction: removed once it commits."""
    for task_id in task_ids:
        session.add(PendingDeletion(prefix=f"{task_id}/", attempts=0, created_at=now, next_attempt_at=now))


def _status_counts(owner):
    """Artifacts counted by status per ``owner`` (a task, or the top task of a batch's children)."""

    def count(*statuses: str):
        return func.sum(case((Artifact.status.in_(statuses), 1), else_=0))

    return (
        select(
            owner.label("owner"),
            func.count(Artifact.id).label("all"),
            count(PENDING).label("pending"),
            count(SUCCESS).label("success"),
            count(CANCELLED).label("cancelled"),
            count(*TERMINAL).label("ended"),
        )
        .select_from(Task)
        .join(Artifact, Artifact.task_id == Task.task_id)
        .group_by(owner)
        .subquery()
    )


def _has_status(c, status: TaskStatus):
    """``derive_task_status`` as SQL over ``_status_counts``."""
    ended = c.ended == c.all
    return {
        TaskStatus.PENDING: c.pending == c.all,
        TaskStatus.PROCESSING: and_(c.ended < c.all, c.pending < c.all),
        TaskStatus.SUCCESS: c.success == c.all,
        TaskStatus.PARTIAL: and_(ended, c.success > 0, c.success < c.all),
        TaskStatus.CANCELLED: and_(ended, c.success == 0, c.cancelled > 0),
        TaskStatus.FAILED: and_(ended, c.success == 0, c.cancelled == 0),
    }[status]


def _held(task_id: str, archiver: str, owner: str):
    """An UPDATE of the artifact that applies only while ``owner`` holds its lease (the fencing check)."""
    return (
        update(Artifact)
        .where(
            Artifact.task_id == task_id,
            Artifact.archiver == archiver,
            Artifact.status == PROCESSING,
            Artifact.lease_owner == owner,
        )
        .execution_options(synchronize_session=False)
    )
