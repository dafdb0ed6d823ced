"""The archive as people browse it: items newest first, each with what its newest snapshot holds.

One entry per item: URL, title and site, when it was last captured, each
format's state in that snapshot, the summary's lede, key points and suggested
tags, and the user's tags. Filters: a tag, and ``failed`` (items whose newest
snapshot has a format that failed). The web page, the exports and the feed
read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import selectinload

from infra.ledger import Ledger
from infra.models import Artifact, Item, Summary, Task
from infra.search import site_of
from infra.tags import item_tags


@dataclass(frozen=True)
class Entry:
    item_id: str
    url: str
    created_at: datetime
    snapshot: Task  # the newest, its artifacts loaded
    snapshots: int
    tags: list[str]
    summary: dict[str, Any] = field(default_factory=dict)  # lede, summary, key_points, tags (a finished one only)

    @property
    def title(self) -> str:
        metas = [
            a.meta or {}
            for a in sorted(self.snapshot.artifacts, key=lambda a: a.archiver != "readability")
            if a.status == "success"
        ]
        return next((m["title"] for m in metas if m.get("title")), "")

    @property
    def site(self) -> str:
        reader = self.snapshot.artifact("readability")
        name = (reader.meta or {}).get("sitename", "") if reader is not None and reader.status == "success" else ""
        return name or site_of(self.url)

    @property
    def captured_at(self) -> datetime:
        return self.snapshot.created_at

    @property
    def suggested_tags(self) -> list[str]:
        return [tag for tag in self.summary.get("tags", []) if tag.lower() not in self.tags]


class Catalog:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def has(self, item_id: str) -> bool:
        with self.ledger.session() as session:
            return session.get(Item, item_id) is not None

    def page(
        self, *, limit: int, offset: int, tag: str | None = None, failed: bool = False, url_hash: str | None = None
    ) -> tuple[list[Entry], int]:
        """Items, the most recently captured first; ``url_hash``: the items of one URL."""
        newest = self._newest()
        query = select(Item.item_id).join(newest, newest.c.item_id == Item.item_id)
        if url_hash:
            query = query.where(Item.url_hash == url_hash)
        if tag:
            query = query.where(exists().where(item_tags.c.item_id == Item.item_id, item_tags.c.tag == tag))
        if failed:
            query = query.where(exists().where(Artifact.task_id == newest.c.task_id, Artifact.status == "failed"))
        with self.ledger.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            ids = list(session.scalars(query.order_by(newest.c.at.desc(), Item.item_id).limit(limit).offset(offset)))
        return self.entries(ids), total

    def entries(self, item_ids: list[str]) -> list[Entry]:
        """These items as entries, in this order (those that no longer exist left out)."""
        if not item_ids:
            return []
        newest = self._newest(item_ids)
        with self.ledger.session() as session:
            rows = (
                session.execute(
                    select(Item, Task, newest.c.snapshots)
                    .join(newest, newest.c.item_id == Item.item_id)
                    .join(Task, Task.task_id == newest.c.task_id)
                    .options(selectinload(Task.artifacts))
                )
                .unique()
                .all()
            )
            keys = [task.summary_key for _, task, _ in rows if task.summary_key]
            summaries: dict[str, dict[str, Any]] = (
                dict(
                    session.execute(
                        select(Summary.cache_key, Summary.result).where(
                            Summary.cache_key.in_(keys), Summary.status == "success"
                        )
                    ).all()
                )
                if keys
                else {}
            )
            tags: dict[str, list[str]] = {item_id: [] for item_id in item_ids}
            for item_id, tag in session.execute(
                select(item_tags.c.item_id, item_tags.c.tag)
                .where(item_tags.c.item_id.in_(item_ids))
                .order_by(item_tags.c.tag)
            ):
                tags[item_id].append(tag)
        found = {
            item.item_id: Entry(
                item.item_id,
                item.url,
                item.created_at,
                task,
                snapshots,
                tags[item.item_id],
                summaries.get(task.summary_key) or {},
            )
            for item, task, snapshots in rows
        }
        return [found[item_id] for item_id in item_ids if item_id in found]

    def snapshots(self, item_id: str) -> list[Task]:
        """Every snapshot of the item, the newest first, artifacts loaded."""
        with self.ledger.session() as session:
            return list(
                session.scalars(
                    select(Task)
                    .where(Task.item_id == item_id)
                    .options(selectinload(Task.artifacts))
                    .order_by(Task.created_at.desc(), Task.task_id)
                )
            )

    def every_item_id(self, batch: int = 500):
        """All item ids, newest capture first, a batch at a time (exports stream through them)."""
        newest = self._newest()
        offset = 0
        while True:
            with self.ledger.session() as session:
                ids = list(
                    session.scalars(
                        select(newest.c.item_id)
                        .order_by(newest.c.at.desc(), newest.c.item_id)
                        .limit(batch)
                        .offset(offset)
                    )
                )
            if not ids:
                return
            yield ids
            offset += batch

    @staticmethod
    def _newest(item_ids: list[str] | None = None) -> Any:
        """Per item: its newest snapshot's task id and time, and how many snapshots it has."""
        ranked: Select = select(
            Task.item_id,
            Task.task_id,
            Task.created_at.label("at"),
            func.row_number()
            .over(partition_by=Task.item_id, order_by=(Task.created_at.desc(), Task.task_id.desc()))
            .label("n"),
            func.count().over(partition_by=Task.item_id).label("snapshots"),
        ).where(Task.item_id.is_not(None))
        if item_ids is not None:
            ranked = ranked.where(Task.item_id.in_(item_ids))
        ranked_subquery = ranked.subquery()
        return select(ranked_subquery).where(ranked_subquery.c.n == 1).subquery()
