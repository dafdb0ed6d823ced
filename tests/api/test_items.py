"""Items over time, through the API on SQLite and Postgres: one URL captured three times is one item with
three snapshots; downloads pick the newest successful capture, or the newest at or before ``?at=``; items
are listed and filtered; tasks are filtered by status, item and time; schedules add snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from infra.models import Schedule, utcnow
from tests.api.conftest import API, error_of, quiet_service

URL = "https://example.org/over-time"


@pytest.fixture
def service(settings):
    service = quiet_service(settings)
    yield service
    service.close()


@pytest.fixture
def client(service):
    return service.api.test_client()


def submit(client, url: str = URL, **fields) -> dict:
    response = client.post(f"{API}/archive", json={"url": url, "archivers": ["pdf", "screenshot"], **fields})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def finish(service, task_id: str, archiver: str, data: bytes, title: str = "Over time") -> None:
    ledger, store = service.runtime.ledger, service.runtime.store
    ledger.claim(task_id, archiver, "test")
    stored = store.put(f"{task_id}/{archiver}.pdf", data, "application/pdf")
    assert ledger.complete(task_id, archiver, "test", stored, meta={"title": title}, duration_ms=1) is not None


def fail(service, task_id: str, archiver: str) -> None:
    ledger = service.runtime.ledger
    ledger.claim(task_id, archiver, "test")
    assert ledger.fail(task_id, archiver, "test", "the page said 500", permanent=True)


def at(moment: str, **shift) -> str:
    return (datetime.fromisoformat(moment.removesuffix("Z")) + timedelta(**shift)).isoformat() + "Z"


def test_three_captures_of_one_url_are_three_snapshots_of_one_item(service, client):
    tasks = [submit(client) for _ in range(3)]
    assert len({t["item_id"] for t in tasks}) == 1
    item_id = tasks[0]["item_id"]
    for n, task in enumerate(tasks[:2], 1):
        finish(service, task["task_id"], "pdf", f"%PDF capture {n}".encode())
    fail(service, tasks[2]["task_id"], "pdf")  # the newest snapshot holds no PDF

    item = client.get(f"{API}/items/{item_id}").get_json()
    assert (item["url"], item["title"], item["snapshots_count"]) == (URL, "Over time", 3)
    assert [s["task_id"] for s in item["snapshots"]] == [t["task_id"] for t in reversed(tasks)]
    assert [s["formats"] for s in item["snapshots"]] == [[], ["pdf"], ["pdf"]]
    assert item["schedule"] is None
    first, second, third = (s["created_at"] for s in reversed(item["snapshots"]))

    def pdf(**query) -> tuple[int, bytes]:
        response = client.get(f"{API}/archives/{item_id}/pdf", query_string=query)
        return response.status_code, response.data

    assert pdf() == (200, b"%PDF capture 2")  # the newest successful one, not the newest
    assert pdf(at=second) == (200, b"%PDF capture 2")
    assert pdf(at=at(second, microseconds=-1000)) == (200, b"%PDF capture 1")
    assert pdf(at=first) == (200, b"%PDF capture 1")
    assert pdf(at=at(first, hours=2).replace("Z", "+02:00")) == (200, b"%PDF capture 1")  # a zone counts
    assert error_of(client.get(f"{API}/archives/{item_id}/pdf", query_string={"at": at(first, seconds=-1)})) == (
        404,
        "not_found",
    )
    assert error_of(client.get(f"{API}/archives/{item_id}/pdf", query_string={"at": "yesterday"})) == (
        400,
        "bad_request",
    )
    assert error_of(client.get(f"{API}/archives/{tasks[0]['task_id']}/pdf", query_string={"at": first})) == (
        400,
        "bad_request",
    )
    assert error_of(client.get(f"{API}/archives/{item_id}/screenshot")) == (409, "not_ready")
    assert client.get(f"{API}/archives/{tasks[0]['task_id']}/pdf").data == b"%PDF capture 1"  # a task: its own


def test_a_clients_item_id_still_wins_and_items_are_listed_newest_first(client):
    mine = submit(client, item_id="mine")
    other = submit(client, "https://example.org/other")
    again = submit(client)  # the URL is the item "mine" already
    named = submit(client, item_id="named")  # the same URL, but the client names another item
    assert (mine["item_id"], again["item_id"], named["item_id"]) == ("mine", "mine", "named")

    listed = client.get(f"{API}/items").get_json()
    assert [i["item_id"] for i in listed["items"]] == ["named", "mine", other["item_id"]]
    assert listed["total"] == 3 and [i["snapshots_count"] for i in listed["items"]] == [1, 2, 1]
    assert listed["items"][1]["latest"]["task_id"] == again["task_id"]
    assert listed["items"][1]["latest"]["status"] == "pending"
    of_url = client.get(f"{API}/items", query_string={"url": URL}).get_json()
    assert [i["item_id"] for i in of_url["items"]] == ["named", "mine"]
    paged = client.get(f"{API}/items", query_string={"limit": 1}).get_json()
    assert paged["next"] == f"{API}/items?limit=1&offset=1" and len(paged["items"]) == 1
    assert error_of(client.get(f"{API}/items/nothing-here")) == (404, "not_found")
    assert error_of(client.get(f"{API}/items", query_string={"url": "javascript:alert(1)"}))[0] == 400


def test_tasks_are_filtered_by_status_item_and_time_and_show_url_and_title(service, client):
    done, failed, waiting = (submit(client, f"https://example.org/{name}") for name in ("done", "failed", "waiting"))
    for archiver in ("pdf", "screenshot"):
        finish(service, done["task_id"], archiver, b"%PDF", title="Done page")
        fail(service, failed["task_id"], archiver)

    def listed(**query) -> list[dict]:
        response = client.get(f"{API}/tasks", query_string=query)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["tasks"]

    assert [(t["task_id"], t["url"], t["title"]) for t in listed(status="success")] == [
        (done["task_id"], "https://example.org/done", "Done page")
    ]
    assert [t["task_id"] for t in listed(status="failed")] == [failed["task_id"]]
    assert [t["task_id"] for t in listed(status="pending")] == [waiting["task_id"]]
    assert listed(status="partial") == [] and listed(status="cancelled") == []
    assert [t["task_id"] for t in listed(item_id=failed["item_id"])] == [failed["task_id"]]
    since = client.get(f"{API}/tasks/{failed['task_id']}").get_json()["created_at"]
    assert [t["task_id"] for t in listed(since=since)] == [waiting["task_id"], failed["task_id"]]
    assert listed(since=at(since, days=1)) == []
    paged = client.get(f"{API}/tasks", query_string={"status": "pending", "limit": 1, "since": since}).get_json()
    assert paged["next"] is None and paged["total"] == 1
    assert error_of(client.get(f"{API}/tasks", query_string={"status": "done"}))[0] == 400


def test_a_schedule_adds_a_snapshot_when_housekeeping_finds_it_due(service, client):
    item_id = submit(client)["item_id"]
    response = client.post(f"{API}/items/{item_id}/schedule", json={"every": "1d", "archivers": ["pdf"]})
    assert response.status_code == 200, response.get_json()
    schedule = response.get_json()
    assert (schedule["every_s"], schedule["archivers"]) == (86400, ["pdf"])
    assert client.get(f"{API}/items/{item_id}").get_json()["schedule"] == schedule

    service.runtime.housekeep()  # not due: nothing happens
    assert client.get(f"{API}/items/{item_id}").get_json()["snapshots_count"] == 1
    with service.runtime.ledger.session() as session, session.begin():  # a day (and a week more) went by
        session.execute(update(Schedule).values(next_run_at=utcnow() - timedelta(days=7)))
    assert service.runtime.housekeep()["recaptured"] == 1
    assert service.runtime.housekeep()["recaptured"] == 0  # one snapshot for the missed days, not seven
    item = client.get(f"{API}/items/{item_id}").get_json()
    assert item["snapshots_count"] == 2
    newest = client.get(item["snapshots"][0]["status_url"]).get_json()
    assert list(newest["subtasks"]) == ["pdf"]
    assert datetime.fromisoformat(item["schedule"]["next_run_at"].removesuffix("Z")) > utcnow()

    assert client.delete(f"{API}/items/{item_id}/schedule").status_code == 200
    assert error_of(client.delete(f"{API}/items/{item_id}/schedule")) == (404, "not_found")
    assert client.get(f"{API}/items/{item_id}").get_json()["schedule"] is None


@pytest.mark.parametrize(
    "body, code",
    [
        ({"every": "1s"}, 400),
        ({"every": "30m"}, 400),
        ({"every": "400d"}, 400),
        ({"every": 3600}, 400),
        ({"every": "1d", "archivers": ["fax"]}, 400),
        ({"every": "1d", "archivers": ["singlefile"]}, 400),
    ],
)
def test_a_schedule_must_make_sense(client, body, code):
    item_id = submit(client)["item_id"]
    assert client.post(f"{API}/items/{item_id}/schedule", json=body).status_code == code
    assert error_of(client.post(f"{API}/items/nobody/schedule", json={"every": "1d"})) == (404, "not_found")
