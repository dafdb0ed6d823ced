"""Deleting snapshots and items: the rows in one transaction, their files after it commits.

The transaction that deletes a task's rows queues its files (``pending_deletions``, one row per
task: its ``{task_id}/`` prefix); they are removed once it has committed, so a row never points
at a missing file, and a removal that fails (storage down) stays queued for housekeeping to retry.
A capture still running when its task is deleted finds its row gone when it finishes and queues
what it stored the same way (``Ledger.complete``).

Every delete returns the tasks whose documents changed: the deleted ones (their Firestore
documents go) and a batch that lost a child. A batch left without children, and an item left
without snapshots or a schedule, go too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from htbase.logs import log
from infra.ledger import Ledger, forget_files
from infra.models import Artifact, Item, PendingDeletion, Schedule, Task, WebhookDelivery, utcnow
from infra.storage import FileStore

logger = logging.getLogger("htbase.deletions")
MAX_RETRY_S = 3600.0


class Deletions:
    def __init__(self, ledger: Ledger, store: FileStore) -> None:
        self.ledger, self.store = ledger, store

    def delete_task(self, task_id: str) -> list[str] | None:
        """Delete a task (a batch with its children); None if there is no such task."""
        with self.ledger.session() as session, session.begin():
            if self.ledger.lock_top(session, task_id) is None:
                return None
            return _delete(session, _with_children(session, [task_id]))

    def delete_item(self, item_id: str) -> list[str] | None:
        """Delete an item, every snapshot of it and its schedule; None if there is no such item."""
        with self.ledger.session() as session, session.begin():
            if session.get(Item, item_id) is None:
                return None
            snapshots = select(Task.task_id).where(Task.item_id == item_id)
            # Every top row its snapshots belong to, locked in one order: no two deletes wait in a circle.
            tops = select(func.coalesce(Task.parent_id, Task.task_id)).where(Task.item_id == item_id)
            session.execute(select(Task.task_id).where(Task.task_id.in_(tops)).order_by(Task.task_id).with_for_update())
            changed = _delete(session, list(session.scalars(snapshots)))
            session.execute(delete(Schedule).where(Schedule.item_id == item_id))
            session.execute(delete(Item).where(Item.item_id == item_id))
            return changed

    def expire(self, days: int, limit: int = 200) -> list[str]:
        """Delete snapshots older than ``days``, keeping each item's newest."""
        cutoff = utcnow() - timedelta(days=days)
        snapshot = aliased(Task)
        newest = select(func.max(snapshot.created_at)).where(snapshot.item_id == Task.item_id).scalar_subquery()
        with self.ledger.session() as session:
            old = list(
                session.scalars(
                    select(Task.task_id)
                    .where(Task.kind == "single", Task.created_at < cutoff, Task.created_at < newest)
                    .order_by(Task.created_at)
                    .limit(limit)
                )
            )
        changed: list[str] = []
        for task_id in old:
            changed += self.delete_task(task_id) or []
        if old:
            log(logger, logging.INFO, "expired snapshots deleted", count=len(old), older_than_days=days)
        return list(dict.fromkeys(changed))

    def purge(self, limit: int = 100) -> dict[str, int]:
        """Remove the files of deleted rows that are due; stops at the first failure (storage is down)."""
        counts = {"removed": 0, "failed": 0}
        now = utcnow()
        with self.ledger.session() as session:
            due = session.execute(
                select(PendingDeletion.id, PendingDeletion.prefix, PendingDeletion.attempts)
                .where(PendingDeletion.next_attempt_at <= now)
                .order_by(PendingDeletion.next_attempt_at, PendingDeletion.id)
                .limit(limit)
            ).all()
        for row_id, prefix, attempts in due:
            try:
                self.store.delete_prefix(prefix)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                delay = min(5.0 * 2**attempts, MAX_RETRY_S)
                with self.ledger.session() as session, session.begin():
                    pending = session.get(PendingDeletion, row_id)
                    if pending is not None:
                        pending.attempts, pending.last_error = attempts + 1, error[:2000]
                        pending.next_attempt_at = utcnow() + timedelta(seconds=delay)
                log(
                    logger,
                    logging.WARNING,
                    "removing a deleted task's files failed; will retry",
                    prefix=prefix,
                    retry_in_s=delay,
                    error=error,
                )
                counts["failed"] += 1
                break
            with self.ledger.session() as session, session.begin():
                session.execute(delete(PendingDeletion).where(PendingDeletion.id == row_id))
            counts["removed"] += 1
        return counts


def _with_children(session: Session, task_ids: Iterable[str]) -> list[str]:
    ids = list(task_ids)
    return ids + list(session.scalars(select(Task.task_id).where(Task.parent_id.in_(ids))))


def _delete(session: Session, task_ids: list[str]) -> list[str]:
    """Delete the tasks' rows and queue their files; the tasks whose documents changed."""
    now = utcnow()
    tasks = session.execute(select(Task.task_id, Task.parent_id, Task.item_id).where(Task.task_id.in_(task_ids))).all()
    ids = [t.task_id for t in tasks]
    parents = {t.parent_id for t in tasks if t.parent_id and t.parent_id not in ids}
    items = {t.item_id for t in tasks if t.item_id}
    # A batch that would be left empty goes with its last children.
    emptied = [
        parent
        for parent in parents
        if not session.scalar(
            select(func.count()).select_from(Task).where(Task.parent_id == parent, Task.task_id.not_in(ids))
        )
    ]
    ids += emptied
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.task_id.in_(ids)))
    session.execute(delete(Artifact).where(Artifact.task_id.in_(ids)))
    session.execute(delete(Task).where(Task.task_id.in_(ids)))
    forget_files(session, ids, now)
    # An item is its snapshots: without any, and without a schedule, nothing of it is left.
    session.execute(
        delete(Item).where(
            Item.item_id.in_(items),
            ~select(Task.task_id).where(Task.item_id == Item.item_id).exists(),
            ~select(Schedule.item_id).where(Schedule.item_id == Item.item_id).exists(),
        )
    )
    return ids + sorted(parents - set(emptied))
