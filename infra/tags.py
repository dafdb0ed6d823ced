"""Tags a user puts on an item (the summary's tags are only suggestions until then)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Column, Connection, DateTime, Engine, ForeignKey, Index, String, Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from infra.models import Base, utcnow

MAX_TAG_CHARS = 64

item_tags = Table(
    "item_tags",
    Base.metadata,
    Column("item_id", String(200), ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(MAX_TAG_CHARS), primary_key=True),
    Column("created_at", DateTime(), nullable=False),
    Index("ix_item_tags_tag", "tag"),
)


class InvalidTag(ValueError):
    pass


def normalize_tag(tag: str) -> str:
    """One spelling per tag: spaces collapsed, lower case; at most MAX_TAG_CHARS characters."""
    name = " ".join(str(tag).split()).lower()
    if not name:
        raise InvalidTag("a tag must have at least one visible character")
    if len(name) > MAX_TAG_CHARS:
        raise InvalidTag(f"a tag is at most {MAX_TAG_CHARS} characters")
    return name


def normalize_tags(tags: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(normalize_tag(tag) for tag in tags))


class Tags:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def of(self, item_id: str) -> list[str]:
        with self.engine.connect() as connection:
            return list(
                connection.scalars(
                    select(item_tags.c.tag).where(item_tags.c.item_id == item_id).order_by(item_tags.c.tag)
                )
            )

    def of_items(self, item_ids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {item_id: [] for item_id in item_ids}
        if item_ids:
            with self.engine.connect() as connection:
                for item_id, tag in connection.execute(
                    select(item_tags.c.item_id, item_tags.c.tag)
                    .where(item_tags.c.item_id.in_(item_ids))
                    .order_by(item_tags.c.tag)
                ):
                    found[item_id].append(tag)
        return found

    def add(self, item_id: str, tags: Iterable[str]) -> list[str]:
        """Put the tags on the item (those it has already stay as they are); returns its tags."""
        with self.engine.begin() as connection:
            self.add_many(connection, [{"item_id": item_id, "tag": name} for name in normalize_tags(tags)])
        return self.of(item_id)

    def add_many(self, connection: Connection, rows: list[dict[str, str]]) -> None:
        """Tags (``{item_id, tag}``, normalized) on many items, in the caller's transaction."""
        if rows:
            now = utcnow()
            connection.execute(
                self._insert(item_tags).on_conflict_do_nothing(), [{**row, "created_at": now} for row in rows]
            )

    def remove(self, item_id: str, tags: Iterable[str]) -> list[str]:
        names = normalize_tags(tags)
        with self.engine.begin() as connection:
            connection.execute(delete(item_tags).where(item_tags.c.item_id == item_id, item_tags.c.tag.in_(names)))
        return self.of(item_id)

    def counts(self) -> list[tuple[str, int]]:
        """Every tag in use and how many items carry it, the most used first."""
        count = func.count().label("count")
        with self.engine.connect() as connection:
            return [
                (tag, n)
                for tag, n in connection.execute(
                    select(item_tags.c.tag, count).group_by(item_tags.c.tag).order_by(count.desc(), item_tags.c.tag)
                )
            ]
