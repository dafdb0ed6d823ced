"""Each metric moves as its event happens, read from an in-memory reader added to the process's meter
provider (the embedded service's): dead letters, lease take-overs, summaries with their tokens and
time, webhook deliveries by outcome, the outbox's and the replica's backlogs. And ``/metrics`` is
kept like the API: open until a key exists, then a read key's, and absent when turned off.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import infra.metrics
from htbase.messages import build_push_envelope
from htbase.topology import DEAD_LETTER_PATH
from infra.keys import ApiKeys
from infra.ledger import NewItem
from infra.outbox import Outbox
from infra.replica_queue import PendingReplica, ReplicaQueue
from service.embedded import EmbeddedService
from tests.api.conftest import quiet_service
from tests.functions.summarizer.stub_llm import GOOD_SUMMARY, StubLLM, chat
from tests.helpers import embedded_settings, finished, submit, time_passes
from tests.receiver import SECRET, Receiver

MODEL_DELAY_S = 0.2  # each model call's time, which the summary's time includes


@pytest.fixture(scope="module")
def llm():
    server = StubLLM()
    reply = chat(json.dumps(GOOD_SUMMARY), prompt_tokens=300, completion_tokens=90)
    server.respond = lambda call: replace(reply, delay=MODEL_DELAY_S)
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, llm):
    settings = embedded_settings(
        tmp_path_factory.mktemp("metrics"),
        webhook_secret=SECRET,
        archivers=("monolith", "readability"),
        llm_providers=("openai",),
        llm_base_url=llm.url,
        llm_model="stub-model",
        llm_requests_per_minute=0,
        llm_timeout_s=10,
    )
    with EmbeddedService(settings) as service:
        yield service


@pytest.fixture(scope="module")
def reader(service) -> InMemoryMetricReader:
    found = InMemoryMetricReader()
    service.api_service.telemetry.meter_provider.add_metric_reader(found)
    return found


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def value(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    """A counter's or a gauge's value summed over the points with these attributes; a histogram's count."""
    data = reader.get_metrics_data()
    return sum(
        getattr(point, "count", None) or getattr(point, "value", 0)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if all(point.attributes.get(k) == v for k, v in attributes.items())
    )


def histogram_sum(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    data = reader.get_metrics_data()
    return sum(
        point.sum
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if all(point.attributes.get(k) == v for k, v in attributes.items())
    )


def test_a_dead_letter_counts_by_the_subscription_it_came_from(service, reader):
    before = value(reader, "htbase.dead_letters", subscription="htbase-summarize-push")
    envelope = build_push_envelope(
        b"{}",
        {"CloudPubSubDeadLetterSourceSubscription": "projects/p/subscriptions/htbase-summarize-push"},
        subscription="projects/p/subscriptions/htbase-dead-letter-push",
    )
    assert service.push_app.test_client().post(DEAD_LETTER_PATH, json=envelope).status_code == 200
    assert value(reader, "htbase.dead_letters", subscription="htbase-summarize-push") == before + 1


def test_a_lease_the_sweeper_takes_over_counts_by_archiver(service, reader, test_site):
    ledger = service.runtime.ledger
    labels = {"archiver": "monolith", "noticed_by": "sweeper"}
    before = value(reader, "htbase.lease.takeovers", **labels)
    task_id = ledger.create_task([NewItem(test_site.url("/missing?lease"), "lease" * 8)], ["monolith"]).task_id
    ledger.claim(task_id, "monolith", "crashed")
    ledger.sweep()
    assert value(reader, "htbase.lease.takeovers", **labels) == before  # still held
    time_passes(ledger, task_id, service.settings.lease_s + 1)
    ledger.sweep()
    assert value(reader, "htbase.lease.takeovers", **labels) == before + 1


def test_a_summary_counts_by_provider_with_its_tokens_and_time(service, reader, llm, test_site):
    provider = {"provider": "openai"}
    before = {
        "success": value(reader, "htbase.summaries", outcome="success", **provider),
        "in": value(reader, "htbase.summary.tokens", direction="in", **provider),
        "out": value(reader, "htbase.summary.tokens", direction="out", **provider),
        "timed": value(reader, "htbase.summary.duration", **provider),
        "time": histogram_sum(reader, "htbase.summary.duration", **provider),
        "calls": len(llm.calls),
    }
    client = service.api.test_client()
    task_id = submit(client, test_site.url(f"/article.html?{uuid.uuid4().hex}"), archivers=["readability"])
    assert finished(client, task_id)["status"] == "success"
    assert service.dispatcher.wait_idle(60)  # the summary follows the readable article

    calls = len(llm.calls) - before["calls"]
    assert calls >= 1
    assert value(reader, "htbase.summaries", outcome="success", **provider) == before["success"] + 1
    assert value(reader, "htbase.summary.tokens", direction="in", **provider) == before["in"] + 300 * calls
    assert value(reader, "htbase.summary.tokens", direction="out", **provider) == before["out"] + 90 * calls
    assert value(reader, "htbase.summary.duration", **provider) == before["timed"] + 1
    assert histogram_sum(reader, "htbase.summary.duration", **provider) >= before["time"] + MODEL_DELAY_S * calls


def test_webhook_deliveries_count_by_outcome(service, reader, receiver, test_site):
    before = {o: value(reader, "htbase.webhook.deliveries", outcome=o) for o in ("delivered", "retry")}
    receiver.answers["/hook"] = [503, 204]
    client = service.api.test_client()
    submit(client, test_site.url("/missing?webhook"), archivers=["monolith"], webhook_url=receiver.url("/hook"))
    receiver.wait("/hook", 2)
    assert service.dispatcher.wait_idle(60)
    assert value(reader, "htbase.webhook.deliveries", outcome="retry") == before["retry"] + 1
    assert value(reader, "htbase.webhook.deliveries", outcome="delivered") == before["delivered"] + 1


@pytest.fixture
def uncached(monkeypatch):
    """Backlogs read on every collection, not once per 15 s."""
    monkeypatch.setattr(infra.metrics, "BACKLOG_CACHE_S", 0.0)


def test_the_outbox_depth_and_oldest_age_follow_unsent_messages(service, reader, uncached, test_site):
    assert service.dispatcher.wait_idle(60)
    outbox = Outbox(service.runtime.engine)
    depth = value(reader, "htbase.outbox.depth")
    # Written, not yet published: what a relay that cannot reach the broker leaves behind.
    service.runtime.ledger.create_task([NewItem(test_site.url("/missing?outbox"), "outbox" * 8)], ["monolith"])
    assert value(reader, "htbase.outbox.depth") == depth + 1
    time.sleep(1.1)
    assert value(reader, "htbase.outbox.oldest_age") >= 1
    outbox.mark_sent(row.id for row in outbox.unsent())
    assert value(reader, "htbase.outbox.depth") == 0
    assert value(reader, "htbase.outbox.oldest_age") == 0


def test_the_replica_pending_count_and_lag_follow_documents_behind(service, reader, uncached):
    queue = ReplicaQueue(service.runtime.engine)
    pending = value(reader, "htbase.replica.pending")
    queue.add("task-behind", "Firestore: 503")  # a replica write that failed
    assert value(reader, "htbase.replica.pending") == pending + 1
    time.sleep(1.1)
    assert value(reader, "htbase.replica.lag") >= 1
    assert queue.written(PendingReplica("task-behind", 1))
    assert value(reader, "htbase.replica.pending") == pending


# --- /metrics, kept like the API ---------------------------------------------------------------


def test_metrics_need_a_read_key_once_a_key_exists(tmp_path):
    service = quiet_service(embedded_settings(tmp_path))
    try:
        client = service.api.test_client()
        assert client.get("/metrics").status_code == 200  # loopback, no key yet: open like the API
        _, key = ApiKeys(service.runtime.engine).create("prometheus", "read")
        response = client.get("/metrics")
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert scraped.status_code == 200 and b"htbase_" in scraped.data
    finally:
        service.close()


def test_metrics_are_absent_when_turned_off(tmp_path):
    service = quiet_service(embedded_settings(tmp_path, prometheus_metrics=False))
    try:
        response = service.api.test_client().get("/metrics")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    finally:
        service.close()
