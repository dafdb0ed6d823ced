"""The public API's contract: validation, errors, pagination, health, database outages."""

from __future__ import annotations

import pytest

from emulators.postgres import ThrowawayPostgres
from service.embedded import EmbeddedService

API = "/api/v2"


@pytest.fixture
def service(embedded_settings):
    # No archiver runs in these tests: the dispatcher is stopped, so accepted work stays queued.
    with EmbeddedService(embedded_settings.with_(archivers=("pdf", "screenshot"))) as service:
        service.dispatcher.close()
        yield service


@pytest.fixture
def client(service):
    return service.api.test_client()


def error_of(response):
    body = response.get_json()
    return response.status_code, body["error"]["code"]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"url": "not a url"}, "invalid_url"),
        ({"url": "file:///etc/passwd"}, "invalid_url"),
        ({"url": "javascript:alert(1)"}, "invalid_url"),
        ({"url": "ftp://example.org/x"}, "invalid_url"),
        ({"url": "http://"}, "invalid_url"),
        ({}, "invalid_url"),
        ({"url": 42}, "invalid_url"),
        ({"url": "https://example.org", "archivers": ["pdf", "telepathy"]}, "unknown_archiver"),
        ({"url": "https://example.org", "archivers": ["monolith"]}, "archiver_disabled"),
        ({"url": "https://example.org", "archivers": "pdf"}, "bad_request"),
        ({"url": "https://example.org", "item_id": ""}, "bad_request"),
        ({"url": "https://example.org", "options": {"timeout": -1}}, "bad_request"),
        ({"url": "https://example.org", "webhook_url": "file:///tmp/x"}, "invalid_webhook_url"),
        ({"url": "https://example.org", "webhook_url": 7}, "invalid_webhook_url"),
    ],
)
def test_bad_archive_requests_get_400_and_write_nothing(client, service, body, code):
    response = client.post(f"{API}/archive", json=body)
    assert error_of(response) == (400, code)
    assert service.runtime.ledger.list_tasks(limit=1, offset=0)[1] == 0


def test_body_must_be_json(client):
    response = client.post(
        f"{API}/archive", data="url=https://example.org", content_type="application/x-www-form-urlencoded"
    )
    assert error_of(response) == (400, "bad_request")


def test_archive_accepts_with_202_and_defaults_to_enabled_archivers(client, service):
    response = client.post(f"{API}/archive", json={"url": "https://Example.org/page#frag", "item_id": "mine"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending" and body["status_url"] == f"{API}/tasks/{body['task_id']}"
    assert response.headers["Location"] == body["status_url"] and body["item_id"] == "mine"
    task = client.get(body["status_url"]).get_json()
    assert task["status"] == "pending" and task["progress"] == 0
    assert task["url"] == "https://example.org/page"
    assert set(task["subtasks"]) == {"pdf", "screenshot"}
    assert task["completed_at"] is None


def test_item_id_reused_for_another_url_is_a_conflict(client):
    assert client.post(f"{API}/archive", json={"url": "https://a.example/", "item_id": "x"}).status_code == 202
    assert client.post(f"{API}/archive", json={"url": "https://a.example/", "item_id": "x"}).status_code == 202
    response = client.post(f"{API}/archive", json={"url": "https://b.example/", "item_id": "x"})
    assert error_of(response) == (409, "item_conflict")


def test_batch_creates_one_task_per_url(client):
    response = client.post(
        f"{API}/archive/batch",
        json={
            "items": [{"url": "https://a.example/"}, {"url": "https://b.example/", "item_id": "b"}],
            "archivers": ["pdf"],
        },
    )
    assert response.status_code == 202
    body = response.get_json()
    assert [t["url"] for t in body["tasks"]] == ["https://a.example/", "https://b.example/"]
    batch = client.get(body["status_url"]).get_json()
    assert batch["kind"] == "batch" and batch["status"] == "pending"
    assert [item["subtasks"].keys() == {"pdf"} for item in batch["items"]] == [True, True]


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": "x"},
        {"items": [{"url": "file:///x"}]},
        {"items": [{"url": f"https://e.org/{n}"} for n in range(101)]},
    ],
)
def test_bad_batches_are_refused(client, body):
    assert client.post(f"{API}/archive/batch", json=body).status_code == 400


def test_task_history_is_newest_first_and_paginated(client):
    ids = [client.post(f"{API}/archive", json={"url": f"https://e.org/{n}"}).get_json()["task_id"] for n in range(3)]
    page = client.get(f"{API}/tasks?limit=2").get_json()
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2]
    assert page["total"] == 3 and page["next"] == f"{API}/tasks?limit=2&offset=2"
    last = client.get(page["next"]).get_json()
    assert [t["task_id"] for t in last["tasks"]] == [ids[0]] and last["next"] is None
    assert client.get(f"{API}/tasks?limit=abc").status_code == 400


def test_unknown_things_are_json_404s(client):
    assert error_of(client.get(f"{API}/tasks/nope")) == (404, "not_found")
    assert error_of(client.get(f"{API}/archives/nope/pdf")) == (404, "not_found")
    assert error_of(client.get(f"{API}/archives/nope/all")) == (404, "not_found")
    assert client.get("/no/such/route").status_code == 404
    assert client.get("/no/such/route").get_json()["error"]["code"] == "not_found"
    assert client.get(f"{API}/archive").status_code == 405


def test_unfinished_artifact_is_not_ready(client):
    task_id = client.post(f"{API}/archive", json={"url": "https://e.org/"}).get_json()["task_id"]
    assert error_of(client.get(f"{API}/archives/{task_id}/pdf")) == (409, "not_ready")
    assert error_of(client.get(f"{API}/archives/{task_id}/singlefile")) == (404, "not_found")
    assert error_of(client.get(f"{API}/archives/{task_id}/all")) == (404, "not_found")


def test_health(client):
    for path in (f"{API}/health", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_database_outage_answers_503_and_half_writes_nothing(tmp_path, embedded_settings):
    with ThrowawayPostgres() as postgres:
        settings = embedded_settings.with_(database_url=postgres.url, archivers=("pdf",))
        with EmbeddedService(settings) as service:
            service.dispatcher.close()
            client = service.api.test_client()
            postgres.halt()
            response = client.post(f"{API}/archive", json={"url": "https://e.org/"})
            assert error_of(response) == (503, "unavailable")
            assert error_of(client.get("/healthz")) == (503, "unhealthy")
            postgres.start()
            assert client.get("/healthz").status_code == 200
            assert service.runtime.ledger.list_tasks(limit=5, offset=0)[1] == 0
            assert service.runtime.outbox.unsent() == []
            assert client.post(f"{API}/archive", json={"url": "https://e.org/"}).status_code == 202
