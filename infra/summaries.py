"""Summaries, cached by (article text, model, prompt version) and shared by every task of that article."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from infra.db import new_session
from infra.models import Summary, Task, utcnow


class Summaries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, cache_key: str) -> Summary | None:
        with new_session(self.engine) as s:
            return s.scalar(select(Summary).where(Summary.cache_key == cache_key))

    def save(self, task_id: str, cache_key: str, *, status: str, model: str, prompt_version: str,
             result: dict[str, Any] | None = None, error: str | None = None, raw_text: str | None = None) -> None:
        now = utcnow()
        with new_session(self.engine) as s, s.begin():
            row = s.scalar(select(Summary).where(Summary.cache_key == cache_key).with_for_update())
            if row is None:
                row = Summary(cache_key=cache_key, created_at=now)
                s.add(row)
            row.status, row.model, row.prompt_version = status, model, prompt_version
            row.result, row.error, row.raw_text, row.updated_at = result or {}, error, raw_text, now
            s.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))

    def attach(self, task_id: str, cache_key: str) -> None:
        """Point a task at a summary that already exists (the same article, captured again)."""
        with new_session(self.engine) as s, s.begin():
            s.execute(update(Task).where(Task.task_id == task_id).values(summary_key=cache_key))
