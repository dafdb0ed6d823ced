"""Hostile requests get 400 (413 for a body too large), never 500 or 503, and write nothing."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from sqlalchemy import select

from infra.ledger import ITEMS
from tests.api.conftest import API, error_of

URL = "https://example.org/page"
DEEP = "[" * 100_000 + "]" * 100_000


def post_raw(client, path: str, text: str):
    return client.post(path, data=text.encode("utf-8", "surrogatepass"), content_type="application/json")


def nothing_written(service) -> bool:
    return service.runtime.ledger.list_tasks(limit=1, offset=0)[1] == 0 and service.runtime.outbox.unsent() == []


@pytest.mark.parametrize(
    "text, code",
    [
        ('{"url": "https://example.org/\\ud800"}', "invalid_url"),  # a lone surrogate
        ('{"url": "https://example.org/", "item_id": "a\\udfff"}', "bad_request"),
        ('{"url": "https://example.org/", "webhook_url": "https://hook.example/\\ud800"}', "invalid_webhook_url"),
        ('{"url": "https://example.org/", "x": ' + DEEP + "}", "bad_request"),  # nested 100,000 deep
        ('{"url": "https://example.org/", "options": ' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}", "bad_request"),
        ('{"url": "https://example.org/", "options": {"timeout": NaN}}', "bad_request"),
        ('{"url": "https://example.org/", "options": {"timeout": 1e400}}', "bad_request"),
        ('{"url": "https://example.org/"', "bad_request"),
        ('"https://example.org/"', "bad_request"),
    ],
)
def test_malformed_json_and_unstorable_text_get_400(client, service, text, code):
    assert error_of(post_raw(client, f"{API}/archive", text)) == (400, code)
    assert nothing_written(service)


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"archivers": []}, "bad_request"),
        ({"archivers": 0}, "bad_request"),
        ({"archivers": ""}, "bad_request"),
        ({"archivers": False}, "bad_request"),
        ({"archivers": {}}, "bad_request"),
        ({"archivers": ["pdf", 3]}, "bad_request"),
        ({"options": {"timeout": True}}, "bad_request"),  # bool is not a number of seconds
        ({"options": {"timeout": False}}, "bad_request"),
        ({"options": {"timeout": "5"}}, "bad_request"),
        ({"options": {"timeout": 0}}, "bad_request"),
        ({"options": {"timeout": 601}}, "bad_request"),
        ({"options": {"timeout": 10, "headers": {"Cookie": "x"}}}, "bad_request"),  # unknown options
        ({"options": []}, "bad_request"),
        ({"options": "fast"}, "bad_request"),
        ({"item_id": "a" * 201}, "bad_request"),
        ({"item_id": "a\x00b"}, "bad_request"),
        ({"item_id": "a/b"}, "bad_request"),
        ({"item_id": ".."}, "bad_request"),
        ({"item_id": "with space"}, "bad_request"),
        ({"item_id": 7}, "bad_request"),
        ({"url": URL + "?" + "q" * 2048}, "invalid_url"),
        ({"url": URL + "\x00"}, "invalid_url"),
        ({"webhook_url": "https://hook.example/" + "h" * 2048}, "invalid_webhook_url"),
    ],
)
def test_fields_out_of_bounds_get_400(client, service, fields, code):
    assert error_of(client.post(f"{API}/archive", json={"url": URL, **fields})) == (400, code)
    assert nothing_written(service)


@pytest.mark.parametrize(
    "fields, archivers",
    [
        ({}, {"pdf", "screenshot"}),
        ({"archivers": None}, {"pdf", "screenshot"}),
        ({"archivers": ["pdf", "pdf"]}, {"pdf"}),
    ],
)
def test_only_an_absent_archivers_means_all_enabled(client, fields, archivers):
    response = client.post(f"{API}/archive", json={"url": URL, **fields})
    assert response.status_code == 202
    assert set(client.get(response.headers["Location"]).get_json()["subtasks"]) == archivers


def test_a_valid_request_with_every_field_is_accepted(client):
    response = client.post(
        f"{API}/archive",
        json={
            "url": URL,
            "item_id": "Item-1.2_x~y:z@w+v=u",
            "archivers": ["pdf"],
            "options": {"timeout": 12.5},
            "webhook_url": "https://hook.example/done",
        },
    )
    assert response.status_code == 202 and response.get_json()["item_id"] == "Item-1.2_x~y:z@w+v=u"


def test_a_bare_host_is_taken_as_https(client):
    response = client.post(f"{API}/archive", json={"url": "Example.org/page"})
    assert response.status_code == 202
    assert client.get(response.headers["Location"]).get_json()["url"] == "https://example.org/page"


def test_a_body_over_the_limit_gets_413_and_writes_nothing(client, service):
    huge = {"url": URL, "options": {"timeout": 5, "padding": "x" * (11 * 1024 * 1024)}}
    assert error_of(client.post(f"{API}/archive", json=huge)) == (413, "request_entity_too_large")
    assert nothing_written(service)


def test_a_chunked_body_over_the_limit_gets_413_on_a_real_server(served_api, service):
    """Without a Content-Length the limit holds while the body is read."""
    body = json.dumps({"url": URL, "options": {"padding": "x" * (2 * 1024 * 1024)}}).encode()
    response = requests.post(
        f"{served_api}{API}/archive",
        data=iter([body[:1000], body[1000:]]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_entity_too_large")
    assert nothing_written(service)


def test_batch_bounds(client, service):
    too_many = {"items": [{"url": f"{URL}/{n}"} for n in range(101)]}
    assert error_of(client.post(f"{API}/archive/batch", json=too_many)) == (400, "batch_too_large")
    assert error_of(client.post(f"{API}/archive/batch", json={"items": [{"url": URL, "item_id": "\x00"}]})) == (
        400,
        "bad_request",
    )
    assert error_of(client.post(f"{API}/archive/batch", json={"items": [{"url": URL}], "archivers": []})) == (
        400,
        "bad_request",
    )
    assert error_of(post_raw(client, f"{API}/archive/batch", '{"items": ' + DEEP + "}")) == (400, "bad_request")
    assert nothing_written(service)
    one_id_two_urls = {"items": [{"url": URL, "item_id": "same"}, {"url": URL + "/other", "item_id": "same"}]}
    assert error_of(client.post(f"{API}/archive/batch", json=one_id_two_urls)) == (409, "item_conflict")
    one_id_one_url = {"items": [{"url": URL, "item_id": "same"}, {"url": URL, "item_id": "same"}]}
    assert client.post(f"{API}/archive/batch", json=one_id_one_url).status_code == 202


@pytest.mark.parametrize(
    "query", ["offset=99999999999999999999", "offset=-1", "offset=x", "limit=1.5", "offset=" + "9" * 5000]
)
def test_out_of_range_paging_gets_400(client, query):
    assert error_of(client.get(f"{API}/tasks?{query}")) == (400, "bad_request")


def test_a_huge_limit_is_capped(client):
    page = client.get(f"{API}/tasks?limit=99999999999999999999").get_json()
    assert page["limit"] == 100 and page["total"] == 0


def test_summarize_bodies(client, service):
    task_id = client.post(f"{API}/archive", json={"url": URL}).get_json()["task_id"]
    assert error_of(post_raw(client, f"{API}/summarize/{task_id}", '{"force": ' + DEEP + "}")) == (400, "bad_request")
    assert error_of(post_raw(client, f"{API}/summarize/{task_id}", "[1]")) == (400, "bad_request")
    assert error_of(client.post(f"{API}/summarize/{task_id}", json={"force": 1})) == (400, "bad_request")
    # The body is checked before the task: no readability capture here, so a good body gets 409.
    assert error_of(client.post(f"{API}/summarize/{task_id}")) == (409, "no_article")


def test_a_request_id_keeps_only_what_can_be_stored(client, service):
    response = client.post(f"{API}/archive", json={"url": URL}, headers={"X-Request-Id": "ab\x01c d\x7f" + "e" * 100})
    assert response.status_code == 202
    assert service.runtime.ledger.task(response.get_json()["task_id"]).request_id == "abcd" + "e" * 60


@pytest.mark.parametrize(
    "path",
    [
        "/tasks/a%00b",
        "/tasks/%ED%A0%80",
        "/archives/a%00b/pdf",
        "/archives/a%00b/all",
        "/summaries/a%00b",
        "/tasks/" + "a" * 201,
        "/archives/a%20b/pdf",
    ],
)
def test_ids_that_could_name_nothing_get_400_on_each_database(service_on_each_database, path):
    client = service_on_each_database.api.test_client()
    assert error_of(client.get(API + path)) == (400, "bad_request")
    assert error_of(client.post(f"{API}/summarize/a%00b")) == (400, "bad_request")


def test_nul_in_a_body_gets_400_on_each_database(service_on_each_database):
    client = service_on_each_database.api.test_client()
    for body in ({"url": URL, "item_id": "x\x00"}, {"url": URL + "\x00"}, {"url": URL, "webhook_url": URL + "\x00"}):
        assert client.post(f"{API}/archive", json=body).status_code == 400
    assert nothing_written(service_on_each_database)


def test_concurrent_submissions_of_one_new_item_id_all_succeed_on_each_database(service_on_each_database):
    service, answers = service_on_each_database, []
    start = threading.Barrier(12)

    def submit() -> None:
        client = service.api.test_client()
        start.wait()
        answers.append(client.post(f"{API}/archive", json={"url": URL, "item_id": "fresh"}).status_code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 12
    assert service.runtime.ledger.list_tasks(limit=20, offset=0)[1] == 12


def test_concurrent_submissions_of_one_new_item_id_for_two_urls_get_202_or_409(service_on_each_database):
    service, answers = service_on_each_database, []
    start = threading.Barrier(12)

    def submit(n: int) -> None:
        client = service.api.test_client()
        start.wait()
        answers.append(client.post(f"{API}/archive", json={"url": f"{URL}/{n % 2}", "item_id": "fresh"}).status_code)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(answers) == {202, 409}
    tasks, total = service.runtime.ledger.list_tasks(limit=20, offset=0)
    assert total == answers.count(202) and len({t.item.url for t in tasks}) == 1


def test_concurrent_batches_sharing_new_item_ids_all_succeed_on_each_database(service_on_each_database):
    """Each batch names the same four new items, in its own order: a submission may lose the race for
    one item, then for another, and still gets 202, never 503."""
    service, answers = service_on_each_database, []
    names = ["north", "east", "south", "west"]
    start = threading.Barrier(12)

    def submit(n: int) -> None:
        client = service.api.test_client()
        order = names[n % 4 :] + names[: n % 4]
        items = [{"url": f"{URL}/{name}", "item_id": name} for name in order]
        start.wait()
        answers.append(client.post(f"{API}/archive/batch", json={"items": items, "archivers": ["pdf"]}).status_code)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 12
    with service.runtime.engine.connect() as connection:
        items = dict(connection.execute(select(ITEMS.c.item_id, ITEMS.c.url)).all())
    assert items == {name: f"{URL}/{name}" for name in names}
