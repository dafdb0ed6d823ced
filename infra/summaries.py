"""Summaries, cached by (article text, model, prompt version) and shared by every task of that article.

A summary row is ``pending`` from the first delivery of its request until a
result is saved (``success`` or ``failed``); ``deliveries`` counts the
deliveries in between, so the summarizer knows the last one even where the
push carries no delivery attempt (the emulator never sends it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, or_, select, update

from infra.db import new_session
from infra.models import Summary, Task, utcnow

PENDING, SUCCESS, FAILED = "pending", "success", "failed"


class Summaries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, cache_key: str) -> Summary | None:
        with new_session(self.engine) as s:
            return s.scalar(select(Summary).where(Summary.cache_key == cache_key))

    def delivered(self, task_id: str, cache_key: str, *, model: str, prompt_version: str) -> int:
        """Count one delivery of a request for this summary (``pending`` if it is new), and point the
        task at it unless the task shows a summary already made (until the new one is); returns the
        deliveries since its last result, this one included."""
        now = utcnow()
        made = select(Summary.cache_key).where(Summary.status == SUCCESS)
        with new_session(self.engine) as s, s.begin():
            row = self._locked(s, cache_key, now, model=model, prompt_version=prompt_version)
            row.deliveries += 1  # bookkeeping: the summary itself has not changed
            s.execute(
                update(Task)
                .where(Task.task_id == task_id, or_(Task.summary_key.is_(None), Task.summary_key.not_in(made)))
                .values(summary_key=cache_key)
            )
            return row.deliveries

    def delivery_failed(self, cache_key: str, reason: str) -> None:
        """A delivery ends without a result: keep why, for the dead letter (a summary already made keeps its)."""
        with new_session(self.engine) as s, s.begin():
            s.execute(
                update(Summary)
                .where(Summary.cache_key == cache_key, Summary.status != SUCCESS)
                .values(error=reason[:4000])
            )

    def save(
        self,
        task_id: str,
        cache_key: str,
        *,
        status: str,
        model: str,
        prompt_version: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        raw_text: str | None = None,
        requested_key: str | None = None,
    ) -> None:
        """Record a result and point the task at it. ``requested_key``: the summary the deliveries were
        counted under, when a fallback model made this one instead: its count ends here too."""
        now = utcnow()
        with new_session(self.engine) as s, s.begin():
            row = self._locked(s, cache_key, now, model=model, prompt_version=prompt_version)
            row.status, row.model, row.prompt_version, row.deliveries = status, model, prompt_version, 0
            row.result, row.error, row.raw_text, row.updated_at = result or {}, error, raw_text, now
            if requested_key and requested_key != cache_key:
                s.execute(update(Summary).where(Summary.cache_key == requested_key).values(deliveries=0))
            s.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))

    def fail_undelivered(self, task_id: str, cache_key: str, error: str, *, model: str, prompt_version: str) -> bool:
        """The dead-letter path: fail the task's summary unless it has been made; False if it has."""
        now = utcnow()
        with new_session(self.engine) as s, s.begin():
            row = self._locked(s, cache_key, now, model=model, prompt_version=prompt_version)
            row.deliveries = 0  # the request is over either way
            s.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))
            if row.status == SUCCESS:
                return False
            row.status, row.error, row.updated_at = FAILED, error[:4000], now
            return True

    def tasks_showing(self, cache_key: str) -> list[str]:
        """The tasks pointing at this summary: each shows it in its document."""
        with new_session(self.engine) as s:
            return list(s.scalars(select(Task.task_id).where(Task.summary_key == cache_key)))

    def attach(self, task_id: str, cache_key: str) -> None:
        """Point a task at a summary that already exists (the same article, captured again)."""
        with new_session(self.engine) as s, s.begin():
            s.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))

    @staticmethod
    def _locked(session, cache_key: str, now, *, model: str, prompt_version: str) -> Summary:
        row = session.scalar(select(Summary).where(Summary.cache_key == cache_key).with_for_update())
        if row is None:
            row = Summary(
                cache_key=cache_key,
                status=PENDING,
                model=model,
                prompt_version=prompt_version,
                result={},
                deliveries=0,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
        return row
