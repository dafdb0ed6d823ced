"""Imports: a bookmark file becomes items in one pass, and their captures start at a pace the archivers take.

``create`` checks every URL, makes an item (with its tags) of each new one and
records each URL's outcome (``queued``, ``duplicate``, ``invalid``) in one
transaction; nothing is captured yet. ``advance`` then starts the queued
captures a few at a time, at most ``IMPORT_CAPTURES_AT_ONCE`` unfinished at
once across all imports, each start in the transaction that marks its entry
``started``, so a crash never starts one twice. It runs when the import is
made, on every look at its progress, in each housekeeping round, and in the
API process's import pacer. A URL that is already an item adds nothing, unless
the import asks to capture it again.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from htbase.urls import InvalidURL, url_hash, validate_url
from infra.bookmarks import Bookmark
from infra.ledger import Ledger, NewSnapshots
from infra.models import Artifact, Base, Item, utcnow
from infra.outbox import OutboxRow
from infra.tags import InvalidTag, Tags, normalize_tag

QUEUED, STARTED, DUPLICATE, INVALID = "queued", "started", "duplicate", "invalid"
CHUNK = 500  # values in one IN (...)
UNFINISHED = ("pending", "processing")

imports = Table(
    "imports",
    Base.metadata,
    Column("import_id", String(36), primary_key=True),
    Column("filename", String(200), nullable=False),
    Column("archivers", JSON, nullable=False),
    Column("recapture", Boolean, nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", DateTime(), nullable=False, index=True),
    Column("finished_at", DateTime()),  # every entry's capture started, or none was to be
)

import_entries = Table(
    "import_entries",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("import_id", String(36), ForeignKey("imports.import_id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),  # in the file, from 0
    Column("url", Text, nullable=False),  # as the file has it
    Column("outcome", String(16), nullable=False),
    Column("item_id", String(200), ForeignKey("items.item_id", ondelete="SET NULL")),
    Column("task_id", String(36), ForeignKey("tasks.task_id", ondelete="SET NULL")),
    Column("error", Text),
    Index("ix_import_entries_import_outcome", "import_id", "outcome", "position"),
    Index("ix_import_entries_outcome", "outcome"),
)


@dataclass(frozen=True)
class ImportEntry:
    position: int
    url: str
    outcome: str
    item_id: str | None
    task_id: str | None
    error: str | None


@dataclass(frozen=True)
class Import:
    import_id: str
    filename: str
    total: int
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]  # entries by outcome


class Imports:
    def __init__(self, ledger: Ledger, tags: Tags, captures_at_once: int) -> None:
        self.ledger, self.tags, self.captures_at_once = ledger, tags, max(1, captures_at_once)
        self._advancing = threading.Lock()  # one advance at a time in a process (Postgres also locks rows)

    def create(
        self, bookmarks: list[Bookmark], archivers: list[str], *, filename: str = "", recapture: bool = False
    ) -> Import:
        """Check every URL, make the new ones items (with their tags) and record each outcome: a few
        statements for the whole file, in one transaction."""
        import_id, now = str(uuid.uuid4()), utcnow()
        checked: list[tuple[Bookmark, str, list[str]] | str] = []  # (bookmark, url hash, tags), or why not
        for bookmark in bookmarks:
            try:
                checked.append((bookmark, url_hash(validate_url(bookmark.url)), _tags(bookmark)))
            except (InvalidURL, InvalidTag) as exc:
                checked.append(str(exc))
        with self.ledger.session() as session, session.begin():
            known = _items_of(session, [c[1] for c in checked if not isinstance(c, str)])
            new = {
                digest: bookmark
                for c in checked
                if not isinstance(c, str)
                for bookmark, digest, _ in [c]
                if digest not in known
            }
            named = _new_items(session, new, now)
            entries, seen, tags = [], set(), []
            for position, (bookmark, outcome) in enumerate(zip(bookmarks, checked, strict=True)):
                entry = {
                    "import_id": import_id,
                    "position": position,
                    "url": bookmark.url[:4096],
                    "outcome": QUEUED,
                    "item_id": None,
                    "error": None,
                }
                if isinstance(outcome, str):
                    entries.append({**entry, "outcome": INVALID, "error": outcome})
                    continue
                _, digest, bookmark_tags = outcome
                item_id = known.get(digest) or named[digest]
                if digest in seen or (digest in known and not recapture):
                    entries.append(
                        {
                            **entry,
                            "outcome": DUPLICATE,
                            "item_id": item_id,
                            "error": "the file lists it before" if digest in seen else None,
                        }
                    )
                    continue
                seen.add(digest)
                if digest in named:  # an item made now gets the file's tags; one saved before keeps its own
                    tags += [{"item_id": item_id, "tag": tag} for tag in bookmark_tags]
                entries.append({**entry, "item_id": item_id})
            session.execute(
                imports.insert().values(
                    import_id=import_id,
                    filename=filename[:200],
                    archivers=list(archivers),
                    recapture=recapture,
                    total=len(bookmarks),
                    created_at=now,
                    finished_at=None if any(e["outcome"] == QUEUED for e in entries) else now,
                )
            )
            self.tags.add_many(session.connection(), tags)
            if entries:
                session.execute(import_entries.insert(), entries)
        created = self.get(import_id)
        assert created is not None  # committed just now
        return created

    def get(self, import_id: str) -> Import | None:
        with self.ledger.engine.connect() as connection:
            row = connection.execute(select(imports).where(imports.c.import_id == import_id)).first()
            if row is None:
                return None
            counts: dict[str, int] = dict(
                connection.execute(
                    select(import_entries.c.outcome, func.count())
                    .where(import_entries.c.import_id == import_id)
                    .group_by(import_entries.c.outcome)
                ).all()
            )
        return Import(row.import_id, row.filename, row.total, row.created_at, row.finished_at, counts)

    def entries(self, import_id: str, *, limit: int, offset: int) -> list[ImportEntry]:
        with self.ledger.engine.connect() as connection:
            rows = connection.execute(
                select(import_entries)
                .where(import_entries.c.import_id == import_id)
                .order_by(import_entries.c.position)
                .limit(limit)
                .offset(offset)
            )
            return [ImportEntry(r.position, r.url, r.outcome, r.item_id, r.task_id, r.error) for r in rows]

    def capture_counts(self, import_id: str) -> Counter[str]:
        """The imported captures by how they stand: ``running`` (not all formats finished) or ``finished``."""
        started = (import_entries.c.import_id == import_id, import_entries.c.outcome == STARTED)
        unfinished = exists().where(Artifact.task_id == import_entries.c.task_id, Artifact.status.in_(UNFINISHED))
        with self.ledger.engine.connect() as connection:
            total = connection.scalar(select(func.count()).select_from(import_entries).where(*started)) or 0
            running = (
                connection.scalar(select(func.count()).select_from(import_entries).where(*started, unfinished)) or 0
            )
        return +Counter({"running": running, "finished": total - running})

    def advance(self) -> list[OutboxRow]:
        """Start queued captures while fewer than ``captures_at_once`` imported ones are unfinished;
        returns the messages to publish."""
        with self._advancing, self.ledger.session() as session, session.begin():
            if not session.scalar(select(exists().where(import_entries.c.outcome == QUEUED))):
                return []  # the usual case, and a cheap one: no import waits
            running = (
                session.scalar(
                    select(func.count())
                    .select_from(import_entries)
                    .where(
                        import_entries.c.outcome == STARTED,
                        exists().where(Artifact.task_id == import_entries.c.task_id, Artifact.status.in_(UNFINISHED)),
                    )
                )
                or 0
            )
            free = self.captures_at_once - running
            if free <= 0:
                return []
            due = session.execute(
                select(import_entries.c.id, import_entries.c.import_id, import_entries.c.item_id, imports.c.archivers)
                .join(imports, imports.c.import_id == import_entries.c.import_id)
                .where(import_entries.c.outcome == QUEUED)
                .order_by(imports.c.created_at, import_entries.c.position)
                .limit(free)
                .with_for_update(of=import_entries, skip_locked=True)
            ).all()
            now = utcnow()
            snapshots = NewSnapshots(now)
            started: dict[int, str] = {}  # entry id -> its task id
            for entry_id, import_id, item_id, archivers in due:
                item = session.get(Item, item_id) if item_id else None
                if item is None:  # deleted since it was imported
                    _set(session, entry_id, outcome=INVALID, error="the item was deleted before its capture")
                    continue
                started[entry_id] = snapshots.add(
                    item.item_id, item.url, archivers, {}, request_id=f"import:{import_id}"
                )
            outbox = snapshots.write(session)  # the tasks first: the entries refer to them
            for entry_id, task_id in started.items():
                _set(session, entry_id, outcome=STARTED, task_id=task_id)
            self._finish(session, {import_id for _, import_id, _, _ in due}, now)
            return outbox

    @staticmethod
    def _finish(session: Session, import_ids: set[str], now: datetime) -> None:
        for import_id in import_ids:
            queued = exists().where(import_entries.c.import_id == import_id, import_entries.c.outcome == QUEUED)
            session.execute(imports.update().where(imports.c.import_id == import_id, ~queued).values(finished_at=now))


def _items_of(session: Session, digests: list[str]) -> dict[str, str]:
    """The item each URL hash already names (the first saved, where several do)."""
    known: dict[str, str] = {}
    unique = list(dict.fromkeys(digests))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        rows = session.execute(
            select(Item.url_hash, Item.item_id)
            .where(Item.url_hash.in_(chunk))
            .order_by(Item.created_at.desc(), Item.item_id.desc())
        )
        known.update(dict(rows.all()))  # the oldest comes last, and stays
    return known


def _new_items(session: Session, bookmarks: dict[str, Bookmark], now: datetime) -> dict[str, str]:
    """Items for these new URLs (by hash), named as the ledger names a new URL's item: after its hash,
    unless a client took that name."""
    names = {digest: digest[:32] for digest in bookmarks}
    taken: set[str] = set()
    candidates = list(names.values())
    for start in range(0, len(candidates), CHUNK):
        taken.update(session.scalars(select(Item.item_id).where(Item.item_id.in_(candidates[start : start + CHUNK]))))
    names = {digest: uuid.uuid4().hex if name in taken else name for digest, name in names.items()}
    if names:
        session.execute(
            insert(Item),
            [
                {"item_id": names[digest], "url": validate_url(bookmark.url), "url_hash": digest, "created_at": now}
                for digest, bookmark in bookmarks.items()
            ],
        )
    return names


def _set(session: Session, entry_id: int, **values: Any) -> None:
    session.execute(update(import_entries).where(import_entries.c.id == entry_id).values(**values))


def _tags(bookmark: Bookmark) -> list[str]:
    return list(dict.fromkeys(normalize_tag(tag) for tag in bookmark.tags))
