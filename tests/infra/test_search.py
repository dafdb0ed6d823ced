"""Full-text search on both engines (SQLite FTS5, PostgreSQL tsvector): ranking, snippets, phrases,
prefixes, languages, tags, and items that leave the index when they or their snapshots are deleted."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text

from functions.deliveries.archive import archive
from functions.deliveries.summary import summarize
from functions.worker import Worker
from htbase.messages import ArchiveRequest, SummarizeRequest
from htbase.urls import url_hash
from infra.db import migrate
from infra.ledger import NewItem
from infra.models import Artifact, Item, Task
from infra.search import InvalidQuery, Search, parse_query, search_documents
from infra.storage import LocalFileStore
from infra.summaries import Summaries
from infra.tags import Tags
from tests.functions.summarizer import articles


@pytest.fixture
def store(tmp_path):
    return LocalFileStore(tmp_path / "files")


@pytest.fixture
def search(engine, store):
    return Search(engine, store)


def capture(
    ledger,
    store,
    url: str,
    *,
    title: str = "",
    body: str = "",
    language: str = "en",
    item_id: str | None = None,
    archivers=("readability",),
) -> str:
    """A finished snapshot of ``url``: a readability capture with ``body`` as its article text."""
    created = ledger.create_task([NewItem(url, url_hash(url), item_id)], archivers)
    task_id = created.task_id
    for archiver in archivers:
        ledger.claim(task_id, archiver, "test")
        meta = {"title": title, "language": language, "sitename": ""}
        if archiver == "readability":
            meta["extras"] = {"txt": store.put(f"{task_id}/readability.txt", body.encode(), "text/plain").key}
        stored = store.put(f"{task_id}/{archiver}.bin", b"x", "application/octet-stream")
        ledger.complete(task_id, archiver, "test", stored, meta=meta, duration_ms=1)
    return task_id


def item_of(ledger, task_id: str) -> str:
    return ledger.task(task_id).item_id


def found(search, query: str) -> list[str]:
    return [hit.url for hit in search.search(query).hits]


def indexed(ledger, store, search, url, **fields) -> str:
    task_id = capture(ledger, store, url, **fields)
    search.refresh_task(task_id)
    return task_id


def test_words_must_all_match_and_title_outranks_body(ledger, store, search):
    indexed(ledger, store, search, "https://a.example/", title="Notes", body="the lighthouse keeper kept a diary")
    indexed(
        ledger,
        store,
        search,
        "https://b.example/",
        title="The lighthouse keeper",
        body="a story about the sea and a keeper",
    )
    indexed(ledger, store, search, "https://c.example/", title="Gardening", body="tomatoes and the lighthouse")
    assert found(search, "lighthouse keeper") == ["https://b.example/", "https://a.example/"]
    assert found(search, "tomatoes") == ["https://c.example/"]
    assert found(search, "tomatoes keeper") == []


def test_snippets_mark_the_matches_and_escape_the_text(ledger, store, search):
    body = "Tom & Jerry <script>alert(1)</script> text before the word quokka and plenty after it " * 3
    indexed(ledger, store, search, "https://a.example/", title="Animals", body=body)
    [hit] = search.search("quokka").hits
    assert "<mark>quokka</mark>" in hit.snippet
    # Escaped text (PostgreSQL's parser also drops what looks like a tag).
    assert "<script>" not in hit.snippet and "Tom &amp; Jerry" in hit.snippet
    assert hit.title == "Animals" and hit.site == "a.example" and hit.score > 0


def test_phrases_match_words_in_order_only(ledger, store, search):
    indexed(ledger, store, search, "https://a.example/", body="the red fox jumped over a brown dog today")
    indexed(ledger, store, search, "https://b.example/", body="the brown fox jumped over a red dog today")
    assert found(search, '"red fox"') == ["https://a.example/"]
    assert sorted(found(search, "red fox")) == ["https://a.example/", "https://b.example/"]


def test_prefixes_match_the_words_that_start_so(ledger, store, search):
    indexed(ledger, store, search, "https://a.example/", body="marmalade on toast needs patience and care every day")
    indexed(ledger, store, search, "https://b.example/", body="the marmoset arrived early and stayed late")
    indexed(ledger, store, search, "https://c.example/", body="nothing here starts like that at all, mar")
    assert sorted(found(search, "marm*")) == ["https://a.example/", "https://b.example/"]
    assert found(search, "marm") == []


def test_stemming_finds_other_forms_of_an_english_word(ledger, store, search):
    indexed(ledger, store, search, "https://a.example/", body="she was running through the fields every morning")
    assert found(search, "runs") == ["https://a.example/"]


def test_url_site_tags_and_summary_are_indexed(ledger, store, search, engine):
    task_id = indexed(ledger, store, search, "https://news.example.org/tech/zeppelin-story", body="")
    item_id = item_of(ledger, task_id)
    assert found(search, "zeppelin") == ["https://news.example.org/tech/zeppelin-story"]
    assert found(search, "news") == ["https://news.example.org/tech/zeppelin-story"]
    Tags(engine).add(item_id, ["Reading List"])
    summaries = Summaries(engine)
    summaries.save(
        task_id,
        "k" * 64,
        status="success",
        model="m",
        prompt_version="1",
        result={
            "lede": "An airship.",
            "summary": "About dirigibles.",
            "key_points": ["helium matters"],
            "tags": ["aviation"],
        },
    )
    assert found(search, "dirigibles") == []  # not until the index is told
    search.refresh(item_id)
    for word in ("dirigibles", "helium", "aviation", '"reading list"'):
        assert found(search, word) == ["https://news.example.org/tech/zeppelin-story"], word


def test_accents_fold_and_postgres_stems_in_the_articles_language(ledger, store, search, engine):
    indexed(
        ledger,
        store,
        search,
        "https://a.example/",
        language="de",
        body="Die Häuser der Altstadt wurden im Jahr renoviert und sehen schön aus",
    )
    assert found(search, "häuser") == found(search, "hauser") == ["https://a.example/"]
    # PostgreSQL's German stemmer makes Häuser "haus"; SQLite's Porter stemmer knows English only.
    assert found(search, "haus") == (["https://a.example/"] if engine.dialect.name == "postgresql" else [])


def test_an_item_is_found_by_its_newest_snapshot(ledger, store, search):
    first = indexed(ledger, store, search, "https://a.example/", item_id="page", body="old words about walruses")
    second = indexed(ledger, store, search, "https://a.example/", item_id="page", body="new words about narwhals")
    assert found(search, "walruses") == []
    [hit] = search.search("narwhals").hits
    assert hit.task_id == second and hit.item_id == "page" != first


def test_deleted_items_and_snapshots_leave_the_index(ledger, store, search, engine):
    gone = indexed(ledger, store, search, "https://a.example/", body="the platypus lays eggs and swims well")
    kept_old = indexed(ledger, store, search, "https://b.example/", item_id="b", body="an older text on emus")
    kept_new = indexed(ledger, store, search, "https://b.example/", item_id="b", body="a newer text on ostriches")
    with engine.begin() as connection:  # as a delete does: artifacts, tasks, then the item
        for task_id in (gone, kept_new):
            connection.execute(delete(Artifact).where(Artifact.task_id == task_id))
            connection.execute(delete(Task).where(Task.task_id == task_id))
        connection.execute(delete(Item).where(Item.item_id == item_of_url(connection, "https://a.example/")))
    assert found(search, "platypus") == [] and found(search, "ostriches") == []
    search.refresh("b")  # the snapshot it was found by is gone: the next newest stands in
    assert found(search, "emus") == ["https://b.example/"]
    assert search.search("emus").hits[0].task_id == kept_old
    search.remove("b")
    assert found(search, "emus") == []


def item_of_url(connection, url: str) -> str:
    return connection.scalar(text("SELECT item_id FROM items WHERE url = :url"), {"url": url})


def test_pages_and_totals(ledger, store, search):
    for n in range(7):
        indexed(ledger, store, search, f"https://{n}.example/", body=f"common words and the number {n} here")
    first, rest = search.search("common", limit=5), search.search("common", limit=5, offset=5)
    assert first.total == rest.total == 7
    assert len(first.hits) == 5 and len(rest.hits) == 2
    assert {h.url for h in first.hits}.isdisjoint(h.url for h in rest.hits)
    assert search.search("common", limit=5, offset=10).total == 7


def test_snapshots_without_an_article_are_found_by_title_and_url(ledger, store, search):
    task_id = capture(
        ledger, store, "https://shots.example/gallery", title="Mountain photos", archivers=("screenshot",)
    )
    search.refresh_task(task_id)
    assert found(search, "mountain") == ["https://shots.example/gallery"]


def test_queries_that_hold_no_words_or_too_many_are_refused():
    for query in ("", "   ", '"" *', "!!!"):
        with pytest.raises(InvalidQuery):
            parse_query(query)
    with pytest.raises(InvalidQuery):
        parse_query(" ".join(f"w{n}" for n in range(17)))
    with pytest.raises(InvalidQuery):
        parse_query("x" * 501)


def test_query_syntax():
    terms = parse_query('Red "big Fox" archiv* e-mail "unclosed phrase')
    assert [(t.words, t.prefix) for t in terms] == [
        (("red",), False),
        (("big", "fox"), False),
        (("archiv",), True),
        (("e", "mail"), False),
        (("unclosed", "phrase"), False),
    ]


def test_operators_in_a_query_are_only_words(ledger, store, search):
    indexed(ledger, store, search, "https://a.example/", body="plain words: and or not near")
    for query in ("AND", "NOT near", "words:", "near(", "'or' | !", "^plain", "plain AND"):
        search.search(query)  # never a syntax error from either engine
    assert found(search, "NOT near") == ["https://a.example/"]


@pytest.fixture
def worker(settings):
    worker = Worker(settings.with_(llm_providers=("extractive",)))
    migrate(worker.engine)
    yield worker
    worker.close()


def test_a_finished_summary_is_indexed(worker):
    task_id = capture(worker.ledger, worker.store, "https://news.example/bikes", body=articles.ENGLISH)
    worker.search.refresh_task(task_id)  # as the capture's end does: the article, no summary yet
    assert indexed_row(worker, task_id)[:2] == ("", "")

    assert summarize(worker, SummarizeRequest(task_id)).reason == "stored"

    result = worker.summaries.get(worker.ledger.task(task_id).summary_key).result
    summary, key_points, tags = indexed_row(worker, task_id)
    assert summary == f"{result['lede']} {result['summary']}" and key_points == "\n".join(result["key_points"])
    assert set(result["tags"]) <= set(tags.split(", "))
    assert found(worker.search, f'"{result["key_points"][-1]}"') == ["https://news.example/bikes"]


def indexed_row(worker, task_id: str) -> tuple[str, str, str]:
    with worker.engine.connect() as connection:
        row = connection.execute(
            select(search_documents.c.summary, search_documents.c.key_points, search_documents.c.tags).where(
                search_documents.c.task_id == task_id
            )
        ).one()
    return row.summary, row.key_points, row.tags


@pytest.mark.browser
def test_a_finished_readability_capture_indexes_the_article(embedded_settings, test_site):
    worker = Worker(embedded_settings.with_(archivers=("readability",)))
    migrate(worker.engine)
    try:
        url = test_site.url("/hostile-article.html")
        created = worker.ledger.create_task([NewItem(url, url_hash(url))], ["readability"])
        item_id = created.children[0]["item_id"]
        assert found(worker.search, "quokkas") == []
        assert archive(worker, ArchiveRequest(created.task_id, item_id, url, "readability", {})).ack
        [hit] = worker.search.search("quokkas").hits
        assert (hit.item_id, hit.title) == (item_id, "The Quokkas of Rottnest Island")
        assert found(worker.search, "zanzibarwidget") == []  # the ad block is no part of the article
    finally:
        worker.close()
