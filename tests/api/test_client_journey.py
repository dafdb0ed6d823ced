"""The issue's "done when", on SQLite and Postgres with auth on: a script holding a write key submits, follows
the events to the end, gets a signed webhook and downloads any snapshot of the item; no key is 401, a read key's
submission 403. And who may undo what: untagging and unscheduling need write, deleting data and keys admin."""

from __future__ import annotations

import json
import re

import pytest
import requests

from infra.keys import ApiKeys
from service.embedded import EmbeddedService
from tests.api.conftest import API, served
from tests.api.test_progress import read_events
from tests.receiver import SECRET, Receiver, verified


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refusal(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def served_as(response: requests.Response) -> str:
    """The task whose file a download is (its filename is the task id and the archiver)."""
    return re.search(r'filename="(.+)-monolith\.html"', response.headers["Content-Disposition"])[1]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def htbase(settings):
    """The whole service capturing with monolith, served over HTTP, webhooks signed; the operator's admin key."""
    changes = {"archivers": ("monolith",), "webhook_secret": SECRET, "retry_backoff_s": 0.2, "sweep_interval_s": 3600}
    with EmbeddedService(settings.with_(**changes)) as service:
        admin = ApiKeys(service.runtime.engine).create("operator", "admin")[1]
        with served(service.api) as url:
            yield url, admin


def test_a_script_with_a_write_key_submits_follows_is_told_and_downloads_any_snapshot(htbase, receiver, test_site):
    base, admin = htbase
    write, read = (
        requests.post(
            f"{base}{API}/keys", json={"name": f"script {scope}", "scope": scope}, headers=bearer(admin)
        ).json()["key"]
        for scope in ("write", "read")
    )
    page = test_site.url("/article.html")
    assert refusal(requests.get(f"{base}{API}/tasks", timeout=10)) == (401, "unauthorized")
    submitted = requests.post(f"{base}{API}/archive", json={"url": page}, headers=bearer(read), timeout=10)
    assert refusal(submitted) == (403, "forbidden")

    accepted = requests.post(
        f"{base}{API}/archive", json={"url": page, "webhook_url": receiver.url("/hook")}, headers=bearer(write)
    )
    assert accepted.status_code == 202, accepted.text
    task_id, item_id = accepted.json()["task_id"], accepted.json()["item_id"]

    with requests.get(f"{base}{API}/tasks/{task_id}/events", headers=bearer(write), stream=True, timeout=60) as stream:
        events = list(read_events(stream))  # the server ends the stream with the terminal event
    assert [event["event"] for event in events][-1:] == ["task.completed"]
    ended = json.loads(events[-1]["data"])
    assert ended["status"] == "success"

    [hook] = receiver.wait("/hook")
    told = verified(hook)  # signed with WEBHOOK_SECRET, as Standard Webhooks say
    assert told.pop("event") == "task.completed"
    assert {k: v for k, v in told.items() if k != "webhook"} == {k: v for k, v in ended.items() if k != "webhook"}
    announced = told["subtasks"]["monolith"]["artifact"]
    file = requests.get(f"{base}{announced['url']}", headers=bearer(write), timeout=30)
    assert file.status_code == 200 and file.headers["X-Content-SHA256"] == announced["sha256"]
    delivered = requests.get(f"{base}{API}/tasks/{task_id}", headers=bearer(write), timeout=10).json()["webhook"]
    assert (delivered["status"], delivered["attempts"], delivered["id"]) == ("delivered", 1, hook.headers["webhook-id"])

    # A second snapshot of the item: the same URL again.
    again = requests.post(
        f"{base}{API}/archive/sync", json={"url": page, "timeout": 60}, headers=bearer(write), timeout=90
    )
    assert again.status_code == 200 and again.json()["status"] == "success", again.text
    assert again.json()["item_id"] == item_id and again.json()["task_id"] != task_id

    def snapshot(**query: str) -> requests.Response:
        return requests.get(f"{base}{API}/archives/{item_id}/monolith", params=query, headers=bearer(write), timeout=30)

    assert served_as(snapshot()) == again.json()["task_id"]  # the newest
    assert served_as(snapshot(at=ended["created_at"])) == task_id  # the newest at or before then
    assert refusal(snapshot(at="2000-01-01T00:00:00Z")) == (404, "not_found")


def test_undoing_a_tag_or_a_schedule_needs_write_and_deleting_data_or_keys_admin(service_on_each_database):
    client, keys = service_on_each_database.api.test_client(), ApiKeys(service_on_each_database.runtime.engine)
    read, write, admin = (bearer(keys.create(scope, scope)[1]) for scope in ("read", "write", "admin"))
    task = client.post(f"{API}/archive", json={"url": "https://example.org/scoped"}, headers=write).get_json()
    item = f"{API}/items/{task['item_id']}"
    assert client.post(f"{item}/tags", json={"tags": ["later"]}, headers=write).status_code == 200
    assert client.post(f"{item}/schedule", json={"every": "1d"}, headers=write).status_code == 200

    for undo in (f"{item}/tags/later", f"{item}/schedule"):
        assert client.delete(undo, headers=read).status_code == 403
        assert client.delete(undo, headers=write).status_code == 200
    prefix = keys.list()[0].prefix
    for data_or_key in (item, f"{API}/tasks/{task['task_id']}", f"{API}/keys/{prefix}"):
        assert client.delete(data_or_key, headers=write).status_code == 403
    assert client.post(f"{API}/keys", json={"name": "x", "scope": "read"}, headers=write).status_code == 403
    assert client.delete(item, headers=admin).status_code == 204
    assert client.delete(f"{API}/keys/{prefix}", headers=admin).status_code == 200
