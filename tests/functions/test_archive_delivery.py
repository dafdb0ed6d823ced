"""One archive delivery's verdict on a failure: tried again only while another
try is worth it. The monolith archiver against the local test site (no browser)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from functions.deliveries.archive import archive
from functions.worker import Worker
from htbase.messages import ArchiveRequest
from infra.db import migrate
from tests.egress_fixtures import fake_dns
from tests.helpers import new_item


@pytest.fixture
def make_worker(embedded_settings) -> Iterator[Callable[..., Worker]]:
    """``make_worker(**setting_changes)``: a Worker on a fresh SQLite ledger, 1 s a capture, 5 attempts."""
    made: list[Worker] = []

    def make(**changes) -> Worker:
        made.append(
            Worker(embedded_settings.with_(archivers=("monolith",), max_attempts=5, capture_timeout_s=1.0, **changes))
        )
        migrate(made[-1].engine)
        return made[-1]

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
def worker(make_worker) -> Worker:
    return make_worker()


def deliveries(worker: Worker, url: str, options: dict | None = None) -> tuple[list[bool], object]:
    """Deliver the capture of ``url`` until it is acknowledged: whether each delivery
    asked to be retried, and the artifact at the end."""
    created = worker.ledger.create_task([new_item(url)], ["monolith"], options=options)
    request = ArchiveRequest(created.task_id, created.children[0]["item_id"], url, "monolith", options or {})
    retried = []
    while True:
        delivery = archive(worker, request)
        retried.append(not delivery.ack)
        if delivery.ack:
            return retried, worker.ledger.task(created.task_id).artifact("monolith")


def test_a_page_that_timed_out_twice_is_not_tried_again(worker, test_site):
    retried, artifact = deliveries(worker, test_site.url("/slow"))
    assert retried == [True, False]
    assert (artifact.status, artifact.attempts) == ("failed", 2)
    assert artifact.error.startswith("timed out after 1s fetching") and artifact.error.endswith(
        "; not retried: timed out 2 times"
    )


def test_no_try_starts_that_could_pass_the_tasks_capture_time(make_worker, test_site):
    # 2 s a try, 5 s in all: a third try could end at 6 s.
    retried, artifact = deliveries(make_worker(max_task_capture_s=5.0), test_site.url("/server-error"), {"timeout": 2})
    assert retried == [True, False]
    assert artifact.error.startswith("HTTP 500 Internal Server Error") and artifact.error.endswith(
        "; not retried: another try of up to 2s would pass the task's 5s of capture time"
    )


def test_a_failure_worth_retrying_is_retried_up_to_the_ledgers_attempts(worker, test_site):
    retried, artifact = deliveries(worker, test_site.url("/server-error"))
    assert retried == [True] * 4 + [False] and artifact.attempts == 5
    assert "not retried" not in artifact.error


def test_a_host_that_does_not_exist_fails_at_once(worker, monkeypatch):
    fake_dns(monkeypatch, {"gone.example": ["NXDOMAIN"]})
    retried, artifact = deliveries(worker, "http://gone.example/page")
    assert retried == [False]
    assert artifact.error == "host not found: 'gone.example' (Name or service not known)"


def test_a_resolver_that_fails_is_tried_again(worker, monkeypatch):
    fake_dns(monkeypatch, {"flaky.example": ["SERVFAIL", "NXDOMAIN"]})
    retried, artifact = deliveries(worker, "http://flaky.example/page")
    assert retried == [True, False]
    assert artifact.error == "host not found: 'flaky.example' (Name or service not known)"
