"""Following a task, on SQLite and Postgres, over real HTTP: server-sent events through to the terminal one,
a reconnect with Last-Event-ID that still gets it, and a submission that waits for its task."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import requests

from infra.models import utcnow
from tests.api.conftest import API, quiet_service, served
from tests.helpers import wait_for

URL = "https://example.org/followed"


@pytest.fixture
def service(settings):
    service = quiet_service(settings)
    yield service
    service.close()


@pytest.fixture
def base_url(service):
    with served(service.api) as url:
        yield url


def submit(base_url: str, **fields) -> str:
    response = requests.post(
        f"{base_url}{API}/archive", json={"url": URL, "archivers": ["pdf", "screenshot"], **fields}, timeout=30
    )
    assert response.status_code == 202
    return response.json()["task_id"]


def finish(service, task_id: str, archiver: str) -> None:
    ledger = service.runtime.ledger
    ledger.claim(task_id, archiver, "test")
    stored = service.runtime.store.put(f"{task_id}/{archiver}.pdf", b"%PDF", "application/pdf")
    assert ledger.complete(task_id, archiver, "test", stored, meta={}, duration_ms=1) is not None


def read_events(response: requests.Response) -> Iterator[dict]:
    """Each event of a text/event-stream as {id, event, data} (comments and retry lines skipped)."""
    event: dict = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith((":", "retry:")):
            name, _, value = line.partition(": ")
            event[name] = value


class Follower:
    """Reads a task's event stream on a thread, keeping what arrives."""

    def __init__(self, base_url: str, task_id: str, last_event_id: str | None = None) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.response = requests.get(
            f"{base_url}{API}/tasks/{task_id}/events", headers=headers, stream=True, timeout=60
        )
        assert self.response.status_code == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for event in read_events(self.response):
            self.events.append(event)

    def wait(self, count: int) -> list[dict]:
        return wait_for(lambda: len(self.events) >= count and self.events[:count], 30, f"{count} events")

    def ended(self) -> list[dict]:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.events


def status(event: dict) -> tuple[str, str, dict[str, str]]:
    document = json.loads(event["data"])
    return event["event"], document["status"], {k: v["status"] for k, v in document["subtasks"].items()}


def test_events_follow_every_change_to_the_terminal_one(service, base_url):
    task_id = submit(base_url)
    follower = Follower(base_url, task_id)
    assert status(follower.wait(1)[0]) == ("task", "pending", {"pdf": "pending", "screenshot": "pending"})
    service.runtime.ledger.claim(task_id, "pdf", "test")
    assert status(follower.wait(2)[1]) == ("task", "processing", {"pdf": "processing", "screenshot": "pending"})
    finish(service, task_id, "pdf")
    assert status(follower.wait(3)[2]) == ("task", "processing", {"pdf": "success", "screenshot": "pending"})
    finish(service, task_id, "screenshot")
    events = follower.ended()
    assert status(events[-1]) == ("task.completed", "success", {"pdf": "success", "screenshot": "success"})
    assert [e["event"] for e in events[:-1]] == ["task"] * (len(events) - 1)  # the end comes last, once
    for event in events:  # an event's id is its document's hash: a client can tell what it has seen
        assert event["id"] == hashlib.sha256(event["data"].encode()).hexdigest()[:32]
    assert len({event["id"] for event in events}) == len(events)


def test_a_reconnect_starts_with_the_current_state_and_never_misses_the_end(service, base_url):
    task_id = submit(base_url)
    with requests.get(f"{base_url}{API}/tasks/{task_id}/events", stream=True, timeout=60) as response:
        seen = next(read_events(response))
    # The connection dropped; meanwhile the task ends.
    finish(service, task_id, "pdf")
    finish(service, task_id, "screenshot")

    again = Follower(base_url, task_id, last_event_id=seen["id"]).ended()
    assert [status(e)[:2] for e in again] == [("task.completed", "success")]
    once_more = Follower(base_url, task_id, last_event_id=again[0]["id"]).ended()
    assert once_more == again  # the end is said again to whoever asks, with the same id


def test_events_of_an_unknown_task_are_404(base_url):
    response = requests.get(f"{base_url}{API}/tasks/0f0f0f0f-0000-0000-0000-000000000000/events", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_sync_answers_the_finished_task_or_202_with_it_as_it_stands(service, base_url):
    pending = requests.post(
        f"{base_url}{API}/archive/sync", json={"url": URL, "archivers": ["pdf"], "timeout": 0.5}, timeout=30
    )
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    assert pending.headers["Location"] == pending.json()["status_url"]

    answer: dict = {}
    waiting = threading.Thread(
        target=lambda: answer.update(
            response=requests.post(
                f"{base_url}{API}/archive/sync",
                json={"url": f"{URL}/2", "archivers": ["pdf"], "timeout": 60},
                timeout=90,
            )
        )
    )
    waiting.start()
    listed = wait_for(
        lambda: [
            t for t in requests.get(f"{base_url}{API}/tasks", timeout=10).json()["tasks"] if t["url"] == f"{URL}/2"
        ],
        what="the waited-for task",
    )
    finish(service, listed[0]["task_id"], "pdf")
    waiting.join(60)
    done = answer["response"]
    assert done.status_code == 200 and done.json()["status"] == "success"
    assert done.json()["task_id"] == listed[0]["task_id"]


@pytest.mark.parametrize("timeout", [0, 121, "60", True])
def test_sync_waits_at_most_two_minutes(base_url, timeout):
    response = requests.post(f"{base_url}{API}/archive/sync", json={"url": URL, "timeout": timeout}, timeout=30)
    assert response.status_code == 400


def test_a_format_waiting_for_a_retry_says_when_it_is_due(service, base_url):
    task_id = submit(base_url)
    ledger, backoff = service.runtime.ledger, service.runtime.settings.retry_backoff_s

    def pdf() -> dict:
        return requests.get(f"{base_url}{API}/tasks/{task_id}", timeout=10).json()["subtasks"]["pdf"]

    for attempt in (1, 2):
        ledger.claim(task_id, "pdf", "test")
        assert "next_attempt_at" not in pdf()  # being tried
        failed_at = utcnow()
        assert not ledger.fail(task_id, "pdf", "test", "timed out", permanent=False)
        waiting = pdf()
        assert (waiting["status"], waiting["attempts"], waiting["error"]) == ("pending", attempt, "timed out")
        due = datetime.fromisoformat(waiting["next_attempt_at"].removesuffix("Z"))
        wait = backoff * 2 ** (attempt - 1)  # the broker's backoff doubles
        assert failed_at + timedelta(seconds=wait - 0.01) <= due <= utcnow() + timedelta(seconds=wait)
