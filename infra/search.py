"""Full-text search over the archive: one interface, an engine per database.

An item is found by its newest snapshot that holds an article (else its newest
that holds anything): title, URL, site, article text, summary, key points and
tags, one row per item in ``search_documents``. SQLite indexes that row with
FTS5 (triggers keep the FTS table in step; Porter stemming, accents folded);
PostgreSQL with a weighted ``tsvector`` under a GIN index, made in the
article's own language where it is known (its text search configuration, else
``simple``).

A query is words (all must match), "quoted phrases" and prefixes (``archiv*``).
Both engines answer the same shape: hits ranked best first, each with a
snippet of the text in which the matches are marked ``<mark>``, HTML-escaped.
A row's foreign keys cascade: deleting an item or the snapshot it was indexed
from deletes its row too.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Column, DateTime, Engine, ForeignKey, Integer, String, Table, Text, and_, select, text
from sqlalchemy.engine import Connection

from infra.models import Artifact, Base, Summary, Task
from infra.storage import FileStore, ObjectNotFound
from infra.tags import item_tags

logger = logging.getLogger("htbase.search")
MAX_QUERY_CHARS = 500
MAX_TERMS = 16
FIELDS = ("title", "url", "site", "body", "summary", "key_points", "tags")
# Private-use characters mark a match until the snippet is escaped; no page text holds them.
MARK_START, MARK_END = "\ue000", "\ue001"
WORD = re.compile(r"\w+")
TERM = re.compile(r'"([^"]*)"?|(\S+)')
# Languages (ISO 639-1) PostgreSQL has a stemming configuration for.
PG_CONFIGS = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
CONFIGS_TTL_S = 60.0

search_documents = Table(
    "search_documents",
    Base.metadata,
    # An integer key: FTS5 addresses its rows by it (a text key's rowid may change on VACUUM).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(200), ForeignKey("items.item_id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("task_id", String(36), ForeignKey("tasks.task_id", ondelete="CASCADE"), nullable=False, index=True),
    *(Column(name, Text, nullable=False) for name in FIELDS),
    Column("language", String(16), nullable=False),
    Column("captured_at", DateTime(), nullable=False),
    # PostgreSQL adds ``config`` (the text search configuration) and ``document`` (the tsvector).
)


class InvalidQuery(ValueError):
    pass


@dataclass(frozen=True)
class Document:
    """What one item gives the index: its newest snapshot's text and the item's tags."""

    item_id: str
    task_id: str
    captured_at: datetime
    url: str
    title: str = ""
    site: str = ""
    body: str = ""
    summary: str = ""
    key_points: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    language: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "task_id": self.task_id,
            "captured_at": self.captured_at,
            "url": self.url,
            "title": self.title,
            "site": self.site,
            "body": self.body,
            "summary": self.summary,
            "key_points": "\n".join(self.key_points),
            "tags": ", ".join(self.tags),
            "language": self.language,
        }


@dataclass(frozen=True)
class Hit:
    item_id: str
    task_id: str
    url: str
    title: str
    site: str
    snippet: str  # HTML: escaped text with the matches in <mark>
    score: float  # higher is better; comparable within one answer only
    captured_at: datetime


@dataclass(frozen=True)
class Results:
    hits: list[Hit]
    total: int


@dataclass(frozen=True)
class Term:
    """Words that must stand together in this order; ``prefix``: the last one may go on."""

    words: tuple[str, ...]
    prefix: bool = False


def parse_query(query: str) -> list[Term]:
    """Words, "quoted phrases" and prefixes (``word*``); a word joined by punctuation (``e-mail``) is a phrase."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"a query is at most {MAX_QUERY_CHARS} characters")
    terms = []
    for quoted, bare in TERM.findall(query):
        source = quoted if quoted else bare
        words = tuple(word.lower() for word in WORD.findall(source))
        if words:
            terms.append(Term(words, prefix=not quoted and bare.endswith("*")))
    if not terms:
        raise InvalidQuery("the query has no words to look for")
    if len(terms) > MAX_TERMS:
        raise InvalidQuery(f"a query has at most {MAX_TERMS} words or phrases")
    return terms


def marked_html(snippet: str) -> str:
    return html.escape(snippet).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


def site_of(url: str) -> str:
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.")


class Fts5Engine:
    """SQLite: the FTS5 table ``search_fts`` over ``search_documents`` (the migration's triggers fill it)."""

    # bm25 weights, in FIELDS order: a word in the title or the tags counts most, in the body least.
    WEIGHTS = "10.0, 3.0, 3.0, 1.0, 4.0, 4.0, 8.0"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        names = list(rows[0])
        connection.execute(
            text(
                f"INSERT INTO search_documents ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)}) "
                f"ON CONFLICT (item_id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}"
            ),
            rows,
        )

    def search(self, terms: list[Term], limit: int, offset: int) -> Results:
        match = " ".join('"' + " ".join(term.words) + '"' + ("*" if term.prefix else "") for term in terms)
        with self.engine.connect() as connection:
            total = connection.scalar(
                text("SELECT count(*) FROM search_fts WHERE search_fts MATCH :match"), {"match": match}
            )
            rows = connection.execute(
                text(
                    f"SELECT d.item_id, d.task_id, d.url, d.title, d.site, d.captured_at, "
                    f"snippet(search_fts, -1, :start, :end, '…', 24) AS snippet, "
                    f"bm25(search_fts, {self.WEIGHTS}) AS score "
                    f"FROM search_fts JOIN search_documents d ON d.id = search_fts.rowid "
                    f"WHERE search_fts MATCH :match ORDER BY score, d.captured_at DESC LIMIT :limit OFFSET :offset"
                ),
                {"match": match, "start": MARK_START, "end": MARK_END, "limit": limit, "offset": offset},
            ).all()
        return Results([_hit(row, -row.score) for row in rows], total or 0)


class PostgresEngine:
    """PostgreSQL: ``search_documents.document``, a tsvector weighted by field, under a GIN index.

    A document is made in its language's configuration; a query is made in
    ``simple`` and in each configuration the index holds, and matches if any
    of them does (so "running" finds an English "runs", and a name is found
    whatever stemming does to it).
    """

    DOCUMENT = (
        "setweight(to_tsvector(CAST(:config AS regconfig), :title || ' ' || :tags), 'A') || "
        "setweight(to_tsvector(CAST(:config AS regconfig), :summary || ' ' || :key_points), 'B') || "
        "setweight(to_tsvector('simple', regexp_replace(:url || ' ' || :site, '\\W+', ' ', 'g')), 'C') || "
        "setweight(to_tsvector(CAST(:config AS regconfig), :body), 'D')"
    )
    # The distinct configurations by a walk down their index, a probe per configuration (DISTINCT would
    # read every row).
    CONFIGS = (
        "WITH RECURSIVE c AS ((SELECT config FROM search_documents ORDER BY config LIMIT 1) UNION ALL "
        "SELECT (SELECT config FROM search_documents WHERE config > c.config ORDER BY config LIMIT 1) "
        "FROM c WHERE c.config IS NOT NULL) SELECT config FROM c WHERE config IS NOT NULL"
    )
    HEADLINE = (
        f'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=12, MaxFragments=1, FragmentDelimiter=" … "'
    )

    ROWS_PER_STATEMENT = 100  # pg8000 takes at most 32,767 parameters a statement

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._configs: tuple[frozenset[str], float] = (frozenset(), 0.0)

    def put(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Upsert the rows, many to a statement (one round trip per row would be most of the time)."""
        rows = [{**row, "config": PG_CONFIGS.get(row["language"], "simple")} for row in rows]
        names = list(rows[0])
        for start in range(0, len(rows), self.ROWS_PER_STATEMENT):
            batch = rows[start : start + self.ROWS_PER_STATEMENT]
            values = ", ".join(
                "(" + ", ".join(f":{n}_{i}" for n in names) + ", " + re.sub(r":(\w+)", rf":\1_{i}", self.DOCUMENT) + ")"
                for i in range(len(batch))
            )
            connection.execute(
                text(
                    f"INSERT INTO search_documents ({', '.join(names)}, document) VALUES {values} "
                    f"ON CONFLICT (item_id) DO UPDATE SET "
                    f"{', '.join(f'{n} = excluded.{n}' for n in names)}, document = excluded.document"
                ),
                {f"{name}_{i}": value for i, row in enumerate(batch) for name, value in row.items()},
            )
        configs, checked = self._configs
        self._configs = (configs | {row["config"] for row in rows}, checked)

    def configs(self) -> frozenset[str]:
        """The configurations the index holds, looked up again after a while (other processes add some)."""
        configs, checked = self._configs
        if time.monotonic() - checked > CONFIGS_TTL_S:
            with self.engine.connect() as connection:
                configs = frozenset(connection.scalars(text(self.CONFIGS)))
            self._configs = (configs, time.monotonic())
        return configs | {"simple"}

    def search(self, terms: list[Term], limit: int, offset: int) -> Results:
        tsquery = " & ".join("(" + " <-> ".join(term.words) + (":*" if term.prefix else "") + ")" for term in terms)
        configs = sorted(self.configs())
        # The query is written out where it is used, not in a CTE: compared with a constant, the GIN index
        # finds the matches; compared with a CTE's column, the planner may scan every row instead.
        query = (
            "(" + " || ".join(f"to_tsquery(CAST(:config{i} AS regconfig), :tsquery)" for i in range(len(configs))) + ")"
        )
        parameters = {f"config{i}": config for i, config in enumerate(configs)}
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    f"SELECT d.item_id, d.task_id, d.url, d.title, d.site, d.captured_at, ranked.score, ranked.total, "
                    f"ts_headline(CAST(d.config AS regconfig), "
                    f"  coalesce(nullif(d.body, ''), nullif(d.summary, ''), d.title), {query}, :headline) AS snippet "
                    f"FROM (SELECT d.id, ts_rank_cd(d.document, {query}) AS score, count(*) OVER () AS total "
                    f"  FROM search_documents d WHERE d.document @@ {query} "
                    f"  ORDER BY score DESC, d.captured_at DESC LIMIT :limit OFFSET :offset) ranked "
                    f"JOIN search_documents d ON d.id = ranked.id ORDER BY ranked.score DESC, d.captured_at DESC"
                ),
                {**parameters, "tsquery": tsquery, "limit": limit, "offset": offset, "headline": self.HEADLINE},
            ).all()
            total = rows[0].total if rows else 0
            if not rows and offset:  # past the last page: count alone
                total = connection.scalar(
                    text(f"SELECT count(*) FROM search_documents d WHERE d.document @@ {query}"),
                    {**parameters, "tsquery": tsquery},
                )
        return Results([_hit(row, row.score) for row in rows], total or 0)


def _hit(row: Any, score: float) -> Hit:
    # A textual query gets SQLite's timestamps as text.
    captured_at = datetime.fromisoformat(row.captured_at) if isinstance(row.captured_at, str) else row.captured_at
    return Hit(
        row.item_id,
        row.task_id,
        row.url,
        row.title,
        row.site,
        marked_html(row.snippet or ""),
        float(score),
        captured_at,
    )


class Search:
    """The archive's search index: kept by ``refresh`` and ``remove``, read by ``search``."""

    def __init__(self, engine: Engine, store: FileStore) -> None:
        self.engine = engine
        self.store = store
        self.backend = PostgresEngine(engine) if engine.dialect.name == "postgresql" else Fts5Engine(engine)
        # SQLite serves one process: refreshes of one item must not interleave (Postgres locks the item row).
        self._lock = threading.Lock()

    def search(self, query: str, *, limit: int = 20, offset: int = 0) -> Results:
        return self.backend.search(parse_query(query), limit, offset)

    def put(self, documents: list[Document]) -> None:
        """Index these documents as they are (``refresh`` makes them from the ledger)."""
        if documents:
            with self.engine.begin() as connection:
                self.backend.put(connection, [document.row() for document in documents])

    def refresh_task(self, task_id: str) -> None:
        """Index the item this snapshot belongs to (its newest snapshot, which may be another)."""
        with self.engine.connect() as connection:
            item_id = connection.scalar(select(Task.item_id).where(Task.task_id == task_id))
        if item_id:
            self.refresh(item_id)

    def refresh(self, item_id: str) -> None:
        """Index the item as the ledger holds it now; an item with nothing captured leaves the index."""
        with self._lock, self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":
                connection.execute(text("SELECT 1 FROM items WHERE item_id = :id FOR UPDATE"), {"id": item_id})
            document = self._document(connection, item_id)
            if document is None:
                connection.execute(search_documents.delete().where(search_documents.c.item_id == item_id))
            else:
                self.backend.put(connection, [document.row()])

    def try_refresh(self, *, item_id: str | None = None, task_id: str | None = None) -> None:
        """``refresh`` where a capture or a summary was just recorded: the record stands whatever the index
        does, so a failure is logged, and the item's next change brings its row up to date."""
        try:
            self.refresh(item_id) if item_id else self.refresh_task(task_id or "")
        except Exception:
            logger.exception("search index not updated for item %s / task %s", item_id, task_id)

    def remove(self, item_id: str) -> None:
        """Take the item out of the index (deleting the item does too, by the foreign key's cascade)."""
        with self.engine.begin() as connection:
            connection.execute(search_documents.delete().where(search_documents.c.item_id == item_id))

    def _document(self, connection: Connection, item_id: str) -> Document | None:
        succeeded = select(Artifact.task_id).where(Artifact.status == "success")
        article = and_(Artifact.archiver == "readability", Artifact.status == "success")
        row = connection.execute(
            select(Task.task_id, Task.created_at, Task.summary_key)
            .where(Task.item_id == item_id, Task.task_id.in_(succeeded))
            .order_by(Task.task_id.in_(select(Artifact.task_id).where(article)).desc(), Task.created_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        task_id, captured_at, summary_key = row
        url = connection.scalar(text("SELECT url FROM items WHERE item_id = :id"), {"id": item_id})
        artifacts = connection.execute(
            select(Artifact.archiver, Artifact.meta).where(Artifact.task_id == task_id, Artifact.status == "success")
        ).all()
        metas = {archiver: meta or {} for archiver, meta in artifacts}
        reader = metas.get("readability", {})
        title = reader.get("title") or next((m["title"] for m in metas.values() if m.get("title")), "")
        summary = (
            connection.scalar(
                select(Summary.result).where(Summary.cache_key == summary_key, Summary.status == "success")
            )
            if summary_key
            else None
        )
        summary = summary or {}
        tags = list(connection.scalars(select(item_tags.c.tag).where(item_tags.c.item_id == item_id)))
        return Document(
            item_id=item_id,
            task_id=task_id,
            captured_at=captured_at,
            url=url,
            title=title,
            site=reader.get("sitename") or site_of(url),
            body=self._text(reader),
            summary=" ".join(part for part in (summary.get("lede", ""), summary.get("summary", "")) if part),
            key_points=tuple(summary.get("key_points", ())),
            tags=tuple(dict.fromkeys([*tags, *summary.get("tags", ())])),
            language=reader.get("language") or "",
        )

    def _text(self, reader_meta: dict[str, Any]) -> str:
        key = (reader_meta.get("extras") or {}).get("txt")
        if not key:
            return ""
        try:
            return self.store.get(key).decode("utf-8", "replace")
        except ObjectNotFound:  # deleted meanwhile: the delete's own refresh settles it
            return ""
