"""Search, tags, import and export through the API, on SQLite and Postgres (captures are made in the ledger:
the dispatcher is stopped, so nothing is captured for real)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import delete

from infra.bookmarks import parse as parse_bookmarks
from infra.models import Artifact, Item, Task
from infra.storage import StoredObject
from tests.api.conftest import API, error_of, quiet_service
from tests.bookmark_files import POCKET_CSV, URL_LIST, netscape_file
from tests.infra.test_search import capture


@pytest.fixture
def runtime(service_on_each_database):
    return service_on_each_database.runtime


@pytest.fixture
def client(service_on_each_database):
    return service_on_each_database.api.test_client()


def indexed(runtime, url: str, **fields) -> str:
    task_id = capture(runtime.ledger, runtime.store, url, **fields)
    runtime.search.refresh_task(task_id)
    return runtime.ledger.task(task_id).item_id


def upload(client, data: bytes, name: str = "bookmarks.html", **fields):
    return client.post(
        f"{API}/import", data={"file": (io.BytesIO(data), name), **fields}, content_type="multipart/form-data"
    )


def test_search_ranks_marks_and_pages(client, runtime):
    indexed(runtime, "https://a.example/", title="Notes", body="the lighthouse keeper kept a diary of storms")
    indexed(runtime, "https://b.example/", title="The lighthouse keeper", body="a story of the sea and its keeper")
    answer = client.get(f"{API}/search", query_string={"q": "lighthouse keeper", "limit": 1}).get_json()
    assert answer["total"] == 2 and answer["results"][0]["url"] == "https://b.example/"
    assert answer["next"] == f"{API}/search?q=lighthouse+keeper&limit=1&offset=1"
    second = client.get(answer["next"]).get_json()
    assert [r["url"] for r in second["results"]] == ["https://a.example/"] and second["next"] is None
    assert "<mark>lighthouse</mark>" in second["results"][0]["snippet"]


def test_search_phrases_prefixes_and_deleted_items(client, runtime):
    gone = indexed(runtime, "https://a.example/", body="the red fox jumped over the marmalade jar today")
    indexed(runtime, "https://b.example/", body="the brown fox jumped over a red marmoset today")

    def urls(q: str) -> list[str]:
        return sorted(r["url"] for r in client.get(f"{API}/search", query_string={"q": q}).get_json()["results"])

    assert urls('"red fox"') == ["https://a.example/"]
    assert urls("marm*") == ["https://a.example/", "https://b.example/"]
    with runtime.engine.begin() as connection:  # a delete: the snapshots' rows, then the item
        tasks = [
            t
            for (t,) in connection.execute(
                Task.__table__.select().with_only_columns(Task.task_id).where(Task.item_id == gone)
            )
        ]
        connection.execute(delete(Artifact).where(Artifact.task_id.in_(tasks)))
        connection.execute(delete(Task).where(Task.task_id.in_(tasks)))
        connection.execute(delete(Item).where(Item.item_id == gone))
    assert urls("fox") == ["https://b.example/"]


def test_a_query_without_words_is_refused(client):
    assert error_of(client.get(f"{API}/search", query_string={"q": "!!"})) == (400, "bad_query")
    assert error_of(client.get(f"{API}/search"))[0] == 400


def test_tags_on_items_are_counted_searched_and_removed(client, runtime):
    first = indexed(runtime, "https://a.example/", body="a page about ferns and mosses in the forest")
    second = indexed(runtime, "https://b.example/", body="a page about pines and firs in the mountains")
    answer = client.post(f"{API}/items/{first}/tags", json={"tags": ["Botany", "  to   read "]})
    assert answer.status_code == 200 and answer.get_json() == {"item_id": first, "tags": ["botany", "to read"]}
    client.post(f"{API}/items/{second}/tags", json={"tags": ["botany"]})
    assert client.get(f"{API}/tags").get_json() == {
        "tags": [{"tag": "botany", "count": 2}, {"tag": "to read", "count": 1}]
    }
    found = client.get(f"{API}/search", query_string={"q": '"to read"'}).get_json()["results"]
    assert [r["item_id"] for r in found] == [first]
    assert client.delete(f"{API}/items/{first}/tags/to read").get_json()["tags"] == ["botany"]
    assert client.get(f"{API}/search", query_string={"q": '"to read"'}).get_json()["total"] == 0
    assert error_of(client.post(f"{API}/items/nope/tags", json={"tags": ["x"]})) == (404, "not_found")
    assert error_of(client.post(f"{API}/items/{first}/tags", json={"tags": []}))[0] == 400


def test_importing_2000_browser_bookmarks_with_folders(client, runtime):
    data, expected = netscape_file(2000)
    answer = upload(client, data, archivers="pdf")
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["total"] == 2000 and body["counts"] == {"queued": 2000 - 10, "started": 10}
    assert body["captures"] == {"running": 10} and body["status"] == "capturing"
    # Every item is there at once, with its folders as tags; only IMPORT_CAPTURES_AT_ONCE captures started.
    entries = client.get(body["status_url"], query_string={"limit": 1000}).get_json()["entries"]
    assert [e["outcome"] for e in entries[:12]] == ["started"] * 10 + ["queued"] * 2
    assert entries[0]["status"] == "pending" and entries[11]["status"] is None
    tags = {tag: count for tag, count in runtime.tags.counts()}
    assert tags["topic 0"] == 190 and tags["sub 0.0"] == 40 and tags["firefox-tag"] == 200
    item = entries[0]["item_id"]
    assert runtime.tags.of(item) == ["firefox-tag", "sub 0.0", "topic 0"]
    assert len(expected) == 2000


def test_an_import_starts_the_next_captures_as_earlier_ones_finish(client, runtime):
    body = upload(
        client, b"\n".join(f"https://paced.example/{n}".encode() for n in range(25)), name="urls.txt", archivers="pdf"
    ).get_json()
    started = [e for e in client.get(body["status_url"]).get_json()["entries"] if e["outcome"] == "started"]
    assert len(started) == 10
    for entry in started[:4]:  # four captures finish...
        runtime.ledger.claim(entry["task_id"], "pdf", "test")
        runtime.ledger.complete(
            entry["task_id"], "pdf", "test", StoredObject("k", "u", 1, "s", "application/pdf"), meta={}, duration_ms=1
        )
    progress = client.get(body["status_url"]).get_json()  # ...and a look at the progress starts four more
    assert progress["counts"] == {"queued": 11, "started": 14}
    assert progress["captures"] == {"running": 10, "finished": 4}


def test_pocket_csv_and_url_lists_with_their_outcomes(client, runtime):
    pocket = upload(client, POCKET_CSV, name="pocket.csv", archivers="pdf").get_json()
    assert pocket["counts"] == {"started": 3} and pocket["total"] == 3
    assert runtime.tags.counts() == [("longform", 1), ("reading", 1), ("tech", 1)]
    listed = upload(client, URL_LIST + b"https://pocket.example/one\n", name="urls.txt").get_json()
    entries = client.get(listed["status_url"]).get_json()["entries"]
    assert [(e["url"], e["outcome"]) for e in entries] == [
        ("https://list.example/a", "started"),
        ("https://list.example/b", "started"),
        ("not a url", "invalid"),
        ("https://list.example/a", "duplicate"),
        ("https://pocket.example/one", "duplicate"),
    ]
    assert entries[2]["error"] and entries[3]["error"] == "the file lists it before"


def test_duplicates_add_nothing_unless_asked_to_capture_again(client, runtime):
    data = b"https://twice.example/a\nhttps://twice.example/b\n"
    first = upload(client, data, name="urls.txt").get_json()
    again = upload(client, data, name="urls.txt").get_json()
    assert again["counts"] == {"duplicate": 2} and again["status"] == "done"
    entries = client.get(again["status_url"]).get_json()["entries"]
    first_items = {e["item_id"] for e in client.get(first["status_url"]).get_json()["entries"]}
    assert {e["item_id"] for e in entries} == first_items
    recaptured = upload(client, data, name="urls.txt", recapture="true").get_json()
    assert recaptured["counts"] == {"started": 2}
    with runtime.ledger.session() as session:
        assert session.query(Item).count() == 2 and session.query(Task).count() == 4


def test_files_that_hold_no_bookmarks_are_refused(client):
    assert error_of(upload(client, b"\xff\xfe\x00")) == (400, "unreadable_file")
    assert error_of(upload(client, b"# nothing\n", name="urls.txt")) == (400, "unreadable_file")
    assert error_of(upload(client, b"https://a.example/", archivers="nope")) == (400, "archiver_disabled")


@pytest.mark.parametrize("format", ["html", "json", "csv"])
def test_an_export_imports_into_a_fresh_instance_as_the_same_items_and_tags(
    client, runtime, format, embedded_settings, tmp_path
):
    first = indexed(runtime, "https://a.example/x?y=1&z=2", title="Page A", body="words enough for an article")
    indexed(runtime, "https://b.example/", title="Page B", body="more words enough for an article")
    client.post(f"{API}/items/{first}/tags", json={"tags": ["one", "two words"]})
    with runtime.ledger.session() as session, session.begin():  # saved a day before its capture: not mixed up
        session.get_one(Item, first).created_at -= timedelta(days=1)
    exported = client.get(f"{API}/export", query_string={"format": format})
    assert exported.status_code == 200 and "attachment" in exported.headers["Content-Disposition"]
    # What the fresh instance reads: each item's title, when it was saved and (where the format has a place
    # for it: not the browsers' HTML) when it was captured, to the second.
    entries, _ = runtime.catalog.page(limit=10, offset=0)
    assert {(b.url, b.title, b.added_at, b.captured_at) for b in parse_bookmarks(exported.data)} == {
        (
            e.url,
            e.title,
            e.created_at.replace(microsecond=0),
            None if format == "html" else e.captured_at.replace(microsecond=0),
        )
        for e in entries
    }

    fresh = quiet_service(
        embedded_settings.with_(
            database_url=f"sqlite:///{tmp_path / 'fresh.db'}", local_storage_path=tmp_path / "fresh"
        )
    )
    try:
        answer = upload(fresh.api.test_client(), exported.data, name=f"export.{format}")
        assert answer.status_code == 202 and answer.get_json()["counts"] == {"started": 2}
        with fresh.runtime.ledger.session() as session:
            urls = sorted(url for (url,) in session.query(Item.url))
        assert urls == ["https://a.example/x?y=1&z=2", "https://b.example/"]
        items = {item.url: item.item_id for item in fresh.runtime.ledger.session().query(Item)}
        assert fresh.runtime.tags.of(items["https://a.example/x?y=1&z=2"]) == ["one", "two words"]
        assert fresh.runtime.tags.of(items["https://b.example/"]) == []
    finally:
        fresh.close()


def test_the_archive_export_is_a_zip_with_an_index_that_opens_offline(client, runtime):
    item = indexed(runtime, "https://a.example/", title="Page <A>", body="the article text of page a")
    answer = client.get(f"{API}/export/archive")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.data))
    names = archive.namelist()
    assert f"{item}/readability.bin" in names and f"{item}/readability.txt" in names
    index = archive.read("index.html").decode()
    assert "Page &lt;A&gt;" in index and f'href="{item}/readability.txt"' in index and "<script" not in index


def test_the_feed_lists_new_archives(client, runtime):
    indexed(runtime, "https://a.example/", title="Page A", body="the article text of page a")
    answer = client.get("/feed.xml")
    assert answer.status_code == 200 and answer.mimetype == "application/atom+xml"
    atom = "{http://www.w3.org/2005/Atom}"
    entries = ET.fromstring(answer.data).findall(f"{atom}entry")
    assert [e.findtext(f"{atom}title") for e in entries] == ["Page A"]


def test_the_feed_takes_a_key_in_its_url_and_nothing_else_does(client, runtime):
    from infra.keys import ApiKeys

    _, key = ApiKeys(runtime.engine).create("feed reader", "read")
    assert error_of(client.get("/feed.xml"))[0] == 401
    assert client.get("/feed.xml", query_string={"key": key}).status_code == 200
    assert error_of(client.get(f"{API}/search", query_string={"q": "x", "key": key}))[0] == 401


def test_the_sign_in_cookie_needs_the_csrf_token_for_what_changes_things(client, runtime):
    from infra.keys import ApiKeys

    item = indexed(runtime, "https://a.example/", body="a page about ferns and mosses in the forest")
    _, key = ApiKeys(runtime.engine).create("browser", "admin")
    assert client.get("/").status_code == 302  # to the sign-in page
    client.get("/sign-in")
    csrf = client.get_cookie("htbase_csrf").value
    assert client.post("/sign-in", data={"key": key}).status_code == 400  # no token
    assert client.post("/sign-in", data={"key": "htb_nope", "csrf_token": csrf}).status_code == 401
    assert client.post("/sign-in", data={"key": key, "csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 200 and client.get(f"{API}/tags").status_code == 200
    tagging = {"json": {"tags": ["x"]}}
    assert error_of(client.post(f"{API}/items/{item}/tags", **tagging)) == (403, "csrf")
    assert client.post(f"{API}/items/{item}/tags", headers={"X-CSRF-Token": csrf}, **tagging).status_code == 200
    assert client.post(f"/items/{item}/tags", data={"tag": "y"}).status_code == 400
    assert client.post(f"/items/{item}/tags", data={"tag": "y", "csrf_token": csrf}).status_code == 303
    assert runtime.tags.of(item) == ["x", "y"]
    client.post("/sign-out", data={"csrf_token": csrf})
    assert client.get("/").status_code == 302


def test_deleting_a_snapshot_or_an_item_through_the_api_updates_search(client, runtime):
    older = capture(runtime.ledger, runtime.store, "https://a.example/", item_id="page", body="old text about emus")
    newer = capture(runtime.ledger, runtime.store, "https://a.example/", item_id="page", body="new text on ostriches")
    runtime.search.refresh("page")

    def found(q: str) -> list[str]:
        return [r["task_id"] for r in client.get(f"{API}/search", query_string={"q": q}).get_json()["results"]]

    assert found("ostriches") == [newer] and found("emus") == []
    assert client.delete(f"{API}/tasks/{newer}").status_code == 204
    assert found("ostriches") == [] and found("emus") == [older]  # the older snapshot stands in
    assert client.delete(f"{API}/items/page").status_code == 204
    assert found("emus") == []
