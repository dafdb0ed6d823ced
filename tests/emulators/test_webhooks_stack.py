"""Webhooks through the Cloud Tasks emulator on the emulator stack: the outbox hands each attempt to Cloud
Tasks, which POSTs it to our own ``webhooks`` service (functions-framework, ``deliver_webhook``), which signs
it and sends it to the receiver; a retry is a task held back until it is due; a Cloud Tasks outage only
delays a webhook. And the API under gunicorn streams a task's events."""

from __future__ import annotations

import json

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider

from emulators.stack import Stack
from htbase.topology import WEBHOOKS
from infra.ledger import NewItem
from infra.runtime import Runtime, make_publisher
from tests.helpers import wait_for
from tests.receiver import Receiver, verified


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    overrides = {"ALLOW_PRIVATE_URLS": "1", "RETRY_BACKOFF_SECONDS": "0.5"}
    with Stack(tmp_path_factory.mktemp("stack"), overrides=overrides, services=("api", "webhooks")) as running:
        yield running


@pytest.fixture(scope="module")
def runtime(stack):
    """A process of the deployment, as an archiver is: it ends tasks, and its outbox relays their webhooks."""
    process = Runtime(stack.settings, make_publisher(stack.settings))
    yield process
    process.close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def ended_task(runtime: Runtime, webhook_url: str, name: str) -> str:
    """A task whose one capture is stored and recorded, as an archiver records it."""
    ledger = runtime.ledger
    task_id = ledger.create_task(
        [NewItem(f"https://example.org/{name}", name * 8)], ["pdf"], webhook_url=webhook_url
    ).task_id
    ledger.claim(task_id, "pdf", "test")
    stored = runtime.store.put(f"{task_id}/pdf.pdf", b"%PDF stack", "application/pdf")
    assert ledger.complete(task_id, "pdf", "test", stored, meta={}, duration_ms=1) is not None
    return task_id


def unsent_webhooks(runtime: Runtime) -> int:
    return sum(row.topic == WEBHOOKS for row in runtime.outbox.unsent())


def webhook(stack, task_id: str) -> dict:
    return requests.get(f"{stack.api_url}/api/v2/tasks/{task_id}", timeout=10).json()["webhook"]


def test_a_webhook_goes_through_cloud_tasks_to_our_service_signed(stack, runtime, receiver):
    with TracerProvider().get_tracer("test").start_as_current_span("submission") as submission:
        task_id = ended_task(runtime, receiver.url("/hook"), "tasks")
    [hook] = receiver.wait("/hook")
    # The webhook continues the trace the task ended in, across Cloud Tasks and our service.
    assert hook.headers["traceparent"].split("-")[1] == format(submission.get_span_context().trace_id, "032x")
    body = verified(hook, stack.env["WEBHOOK_SECRET"])
    assert body["task_id"] == task_id and body["event"] == "task.completed" and body["status"] == "success"
    delivered = wait_for(lambda: (found := webhook(stack, task_id))["status"] == "delivered" and found)
    assert (delivered["attempts"], delivered["last_status"]) == (1, 204)
    # Cloud Tasks called our service (the emulator's log says where), which sent the webhook (its log).
    assert f"Requesting POST {stack.url('webhooks')}push/webhook?token=" in (stack.logs / "tasks.log").read_text()
    assert not any(name.startswith("x-cloudtasks") for name in hook.headers)
    wait_for(lambda: hook.headers["webhook-id"] in (stack.logs / "webhooks.log").read_text(), what="its log line")


def test_a_5xx_is_retried_by_a_task_held_back_until_due(stack, runtime, receiver):
    receiver.answers["/flaky"] = [503, 200]
    task_id = ended_task(runtime, receiver.url("/flaky"), "flaky")
    first, second = receiver.wait("/flaky", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    delivered = wait_for(lambda: (found := webhook(stack, task_id))["status"] == "delivered" and found)
    assert (delivered["attempts"], delivered["last_status"]) == (2, 200)


def test_a_cloud_tasks_outage_only_delays_a_webhook(stack, runtime, receiver):
    stack.stop("tasks")
    try:
        task_id = ended_task(runtime, receiver.url("/later"), "later")
        runtime.housekeep()
        assert unsent_webhooks(runtime) == 1  # nowhere to hand it to: the outbox keeps it
        assert receiver.at("/later") == [] and webhook(stack, task_id)["status"] == "pending"
    finally:
        stack.start("tasks")  # empty, with its queues made again
    wait_for(lambda: runtime.housekeep() and not unsent_webhooks(runtime), what="the outbox relayed it")
    receiver.wait("/later")
    assert wait_for(lambda: webhook(stack, task_id)["status"] == "delivered")


def test_the_api_under_gunicorn_streams_events_to_the_end(stack, runtime, receiver):
    ledger = runtime.ledger
    task_id = ledger.create_task([NewItem("https://example.org/streamed", "streamed" * 4)], ["pdf"]).task_id
    with requests.get(f"{stack.api_url}/api/v2/tasks/{task_id}/events", stream=True, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events, lines = [], response.iter_lines(decode_unicode=True)
        for line in lines:
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                events[-1] = (events[-1], json.loads(line.removeprefix("data: "))["status"])
                if len(events) == 1:  # the first state seen: now the capture ends
                    ledger.claim(task_id, "pdf", "test")
                    stored = runtime.store.put(f"{task_id}/pdf.pdf", b"%PDF", "application/pdf")
                    ledger.complete(task_id, "pdf", "test", stored, meta={}, duration_ms=1)
    assert events[0] == ("task", "pending") and events[-1] == ("task.completed", "success")
