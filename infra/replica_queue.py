"""The replica's retry queue: one row per task whose Firestore documents are behind.

The queue keeps no snapshot: a retry renders the task's state of that moment,
so an old state can never overwrite a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from infra.db import new_session, rowcount
from infra.models import ReplicaPending, utcnow


@dataclass(frozen=True)
class PendingReplica:
    task_id: str
    attempts: int  # also the row's version: a failure queued meanwhile moves it on


class ReplicaQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self) -> Any:
        return (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(ReplicaPending)

    def add(self, task_id: str, error: str) -> None:
        """Remember that the task's replica document is behind: one row per task, due at once."""
        now = utcnow()
        statement = self._insert().values(
            task_id=task_id, attempts=1, last_error=error[:2000], created_at=now, next_attempt_at=now
        )
        # Already queued: count the failure and keep the row's schedule (its backoff stands).
        statement = statement.on_conflict_do_update(
            index_elements=[ReplicaPending.task_id],
            set_={"attempts": ReplicaPending.attempts + 1, "last_error": statement.excluded.last_error},
        )
        with new_session(self.engine) as s, s.begin():
            s.execute(statement)

    def owe(self, session: Session, task_id: str, grace_s: float) -> None:
        """In the caller's transaction: its process is to write the task's documents right after the
        commit. Unless it then says so (``settle``), housekeeping writes them once ``grace_s`` has
        passed: a process killed between its commit and its write leaves no stale document behind.
        A row already queued for the task stays as it is."""
        now = utcnow()
        due = now + timedelta(seconds=grace_s)
        statement = self._insert().values(task_id=task_id, attempts=0, created_at=now, next_attempt_at=due)
        session.execute(statement.on_conflict_do_nothing(index_elements=[ReplicaPending.task_id]))

    def settle(self, task_id: str) -> None:
        """The documents were written: the debt ``owe`` recorded goes (a failure queued since stays)."""
        with new_session(self.engine) as s, s.begin():
            s.execute(delete(ReplicaPending).where(ReplicaPending.task_id == task_id, ReplicaPending.attempts == 0))

    def due(self, limit: int = 100) -> list[PendingReplica]:
        with new_session(self.engine) as s:
            rows = s.execute(
                select(ReplicaPending.task_id, ReplicaPending.attempts)
                .where(ReplicaPending.next_attempt_at <= utcnow())
                .order_by(ReplicaPending.next_attempt_at, ReplicaPending.task_id)
                .limit(limit)
            )
            return [PendingReplica(task_id, attempts) for task_id, attempts in rows]

    def backlog(self) -> tuple[int, datetime | None]:
        """How many tasks' documents are behind, and since when the longest-behind one is."""
        with new_session(self.engine) as s:
            count, oldest = s.execute(select(func.count(), func.min(ReplicaPending.created_at))).one()
            return count, oldest

    def written(self, pending: PendingReplica) -> bool:
        """Drop the row, unless a failure was queued for the task since it was read."""
        with new_session(self.engine) as s, s.begin():
            result = s.execute(
                delete(ReplicaPending).where(
                    ReplicaPending.task_id == pending.task_id, ReplicaPending.attempts == pending.attempts
                )
            )
            return rowcount(result) == 1

    def retry_later(self, pending: PendingReplica, error: str, delay_s: float) -> None:
        with new_session(self.engine) as s, s.begin():
            s.execute(
                update(ReplicaPending)
                .where(ReplicaPending.task_id == pending.task_id)
                .values(
                    attempts=ReplicaPending.attempts + 1,
                    last_error=error[:2000],
                    next_attempt_at=utcnow() + timedelta(seconds=delay_s),
                )
            )
