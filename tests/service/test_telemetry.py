"""Telemetry on the embedded defaults: one submission is one trace, webhooks and model calls included,
and the metrics follow the captures; the cloud's exporters are made from the settings.

Spans are read from an in-memory exporter added to the process's tracer provider; metrics from
the Prometheus text the process serves, parsed as Prometheus parses it.
"""

from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from functions.summarizer.providers import OpenAICompatibleProvider
from htbase.config import Settings
from htbase.messages import ARCHIVERS, build_push_envelope
from htbase.topology import DEAD_LETTER_PATH
from infra.health import readiness
from infra.ledger import NewItem
from infra.runtime import Runtime
from infra.telemetry import TRACER, exporters, prometheus_text
from service.embedded import EmbeddedService
from tests.functions.summarizer.stub_llm import StubLLM, chat
from tests.helpers import embedded_settings, finished, submit, time_passes
from tests.keys import service_account_key
from tests.receiver import SECRET, Receiver


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    settings = embedded_settings(tmp_path_factory.mktemp("telemetry"), webhook_secret=SECRET)
    with EmbeddedService(settings) as service:
        yield service


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def spans(service) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    service.api_service.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def trace_of(spans: list[ReadableSpan], task_id: str) -> list[ReadableSpan]:
    """Every span of the trace whose capture spans name ``task_id``."""
    [trace_id] = {s.context.trace_id for s in spans if (s.attributes or {}).get("task_id") == task_id}
    return [s for s in spans if s.context.trace_id == trace_id]


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span's parent, its parent's parent, ... up to the root."""
    chain = []
    while span.parent is not None:
        span = by_id[span.parent.span_id]  # a parent missing from the trace fails here
        chain.append(span)
    return chain


def test_one_submission_is_one_trace_from_the_api_through_every_capture_to_the_summary(service, spans, test_site):
    client = service.api.test_client()
    task_id = submit(client, test_site.url("/article.html"))
    assert finished(client, task_id)["status"] == "success"
    assert service.dispatcher.wait_idle(60)  # the summary follows the readable article

    found = trace_of(spans.get_finished_spans(), task_id)
    by_id = {s.context.span_id: s for s in found}
    [root] = [s for s in found if s.parent is None]
    assert root.kind is SpanKind.SERVER and root.name == "POST /api/v2/archive"
    assert root.attributes["http.response.status_code"] == 202

    # One capture span per attempt (SingleFile flakes now and then, and is tried again), the last a success.
    attempts = sorted((s for s in found if s.name.startswith("capture ")), key=lambda s: s.attributes["attempt"])
    captures = {s.attributes["archiver"]: s for s in attempts}
    assert all(s.attributes["outcome"] == "retried" for s in attempts if s not in captures.values())
    assert set(captures) == set(ARCHIVERS)
    for archiver, capture in captures.items():
        assert capture.attributes["outcome"] == "success"
        chain = ancestors(capture, by_id)
        assert chain[-1] is root
        # capture <- deliver (the push, a consumer) <- publish (a producer) <- ... <- the API's request
        delivery, publish = chain[0], chain[1]
        assert delivery.kind is SpanKind.CONSUMER and delivery.name == f"deliver archive-{archiver}"
        assert publish.kind is SpanKind.PRODUCER and publish.name == f"publish archive-{archiver}"
        assert delivery.start_time >= publish.start_time
        inside = {s.name for s in found if capture in ancestors(s, by_id)}
        assert "storage put" in inside and "ledger complete" in inside

    [summary] = [s for s in found if s.name == "summarize"]
    chain = ancestors(summary, by_id)
    assert captures["readability"] in chain and chain[-1] is root
    assert chain[0].name == "deliver summarize"
    assert any(s.name == "publish summarize" for s in chain)
    assert any(s.name == "summarize with extractive" and summary in ancestors(s, by_id) for s in found)
    assert {s.name for s in found} >= {"ledger create_task", "ledger claim"}


def traceparent_ids(header: str) -> tuple[int, int]:
    """The trace id and the parent span id a W3C ``traceparent`` header names."""
    _, trace_id, span_id, _ = header.split("-")
    return int(trace_id, 16), int(span_id, 16)


def test_a_webhook_delivery_is_a_span_of_the_submissions_trace_and_sends_it_on(service, spans, receiver, test_site):
    client = service.api.test_client()
    task_id = submit(client, test_site.url("/missing"), archivers=["monolith"], webhook_url=receiver.url("/hook"))
    [hook] = receiver.wait("/hook")
    assert service.dispatcher.wait_idle(60)  # the delivery's span ends once it has recorded the answer

    found = trace_of(spans.get_finished_spans(), task_id)
    by_id = {s.context.span_id: s for s in found}
    [root] = [s for s in found if s.parent is None]
    assert root.name == "POST /api/v2/archive"
    [delivery] = [s for s in found if s.name == "deliver webhooks"]
    assert delivery.kind is SpanKind.CONSUMER and delivery.attributes["http.response.status_code"] == 200
    chain = ancestors(delivery, by_id)
    assert chain[0].name == "publish webhooks" and chain[-1] is root
    assert any(s.name == "capture monolith" for s in chain)  # the capture that ended the task wrote it

    # The receiver can continue the trace: the header names the trace and the delivery's span.
    trace_id, parent_id = traceparent_ids(hook.headers["traceparent"])
    assert (trace_id, parent_id) == (root.context.trace_id, delivery.context.span_id)


def test_a_model_call_is_a_client_span_whose_traceparent_reaches_the_model_server(spans):
    stub = StubLLM()
    try:
        stub.script(chat("hi", prompt_tokens=11, completion_tokens=2))
        with TRACER.start_as_current_span("summarize with openai") as summarizing:
            OpenAICompatibleProvider(stub.url, "stub-model", timeout=5).complete([{"role": "user", "content": "hi"}], 8)
        [call] = stub.calls
    finally:
        stub.close()

    parent = summarizing.get_span_context()
    [post] = [s for s in spans.get_finished_spans() if s.parent is not None and s.parent.span_id == parent.span_id]
    assert post.kind is SpanKind.CLIENT and post.name == "POST"
    assert post.attributes["url.full"] == f"{stub.url}/chat/completions"
    assert post.attributes["http.response.status_code"] == 200
    headers = {name.lower(): value for name, value in call.headers.items()}
    assert traceparent_ids(headers["traceparent"]) == (parent.trace_id, post.context.span_id)


def metric(name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` with these labels in the process's Prometheus text."""
    text, _ = prometheus_text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_captures_count_successes_permanent_failures_by_kind_and_retries(service, test_site):
    client = service.api.test_client()

    def captured(path: str) -> dict:
        return finished(client, submit(client, test_site.url(path), archivers=["monolith"]))

    before = {
        "success": metric("htbase_captures_total", archiver="monolith", outcome="success"),
        "failed": metric("htbase_captures_total", archiver="monolith", outcome="failed"),
        "retried": metric("htbase_captures_total", archiver="monolith", outcome="retried"),
        "durations": metric("htbase_capture_duration_seconds_count", archiver="monolith"),
        "sizes": metric("htbase_capture_size_bytes_count", archiver="monolith"),
        "submissions": metric("htbase_submissions_total", kind="single"),
    }

    assert captured("/article.html")["status"] == "success"
    assert metric("htbase_captures_total", archiver="monolith", outcome="success") == before["success"] + 1
    assert metric("htbase_capture_size_bytes_count", archiver="monolith") == before["sizes"] + 1
    assert metric("htbase_capture_size_bytes_sum", archiver="monolith") > 0

    missing = captured("/missing")
    assert missing["status"] == "failed"
    assert metric("htbase_captures_total", archiver="monolith", outcome="failed") == before["failed"] + 1
    failures = [
        sample.labels
        for family in text_string_to_metric_families(prometheus_text()[0].decode())
        for sample in family.samples
        if sample.name == "htbase_captures_total" and sample.labels["outcome"] == "failed"
    ]
    assert failures and all(labels["error_kind"] for labels in failures)  # a failure names its kind

    flaky = captured(f"/flaky?key={uuid.uuid4().hex}")  # 500 once, then the article
    assert flaky["status"] == "success" and flaky["subtasks"]["monolith"]["attempts"] == 2
    assert metric("htbase_captures_total", archiver="monolith", outcome="retried") == before["retried"] + 1
    assert metric("htbase_captures_total", archiver="monolith", outcome="success") == before["success"] + 2

    # Every attempt is timed, whatever its outcome: 1 + 1 + 2.
    assert metric("htbase_capture_duration_seconds_count", archiver="monolith") == before["durations"] + 4
    assert metric("htbase_submissions_total", kind="single") == before["submissions"] + 3
    assert metric("htbase_push_redeliveries_total", route="/push/archive") >= 1
    assert metric("htbase_push_deliveries_total", route="/push/archive", answer="retry") >= 1


# Every instrument the issue names, as Prometheus names them.
INSTRUMENTS = {
    "htbase_submissions",
    "htbase_captures",
    "htbase_capture_duration_seconds",
    "htbase_capture_size_bytes",
    "htbase_push_deliveries",
    "htbase_push_redeliveries",
    "htbase_dead_letters",
    "htbase_outbox_depth",
    "htbase_outbox_oldest_age_seconds",
    "htbase_lease_takeovers",
    "htbase_replica_pending",
    "htbase_replica_lag_seconds",
    "htbase_summaries",
    "htbase_summary_tokens",
    "htbase_summary_duration_seconds",
    "htbase_webhook_deliveries",
    "htbase_http_server_duration_seconds",
}


def test_the_prometheus_text_parses_and_holds_every_instrument(service, receiver, test_site):
    # A counter shows once it has counted: a submission that is retried, summarized and reported by
    # webhook, a dead letter and a lease taken over.
    client = service.api.test_client()
    flaky = test_site.url(f"/flaky?key={uuid.uuid4().hex}")  # 500 once, then the article
    submit(client, flaky, archivers=["readability"], webhook_url=receiver.url("/every"))
    receiver.wait("/every")
    assert service.dispatcher.wait_idle(60)
    dead = build_push_envelope(
        b"{}",
        {"CloudPubSubDeadLetterSourceSubscription": "projects/p/subscriptions/htbase-summarize-push"},
        subscription="projects/p/subscriptions/htbase-dead-letter-push",
    )
    assert service.push_app.test_client().post(DEAD_LETTER_PATH, json=dead).status_code == 200
    ledger = service.runtime.ledger
    stale = ledger.create_task([NewItem(test_site.url("/article.html?stale"), "stale" * 8)], ["pdf"]).task_id
    ledger.claim(stale, "pdf", "crashed")
    time_passes(ledger, stale, service.settings.lease_s + 1)
    ledger.sweep()

    text, content_type = prometheus_text()
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text.decode())}
    assert INSTRUMENTS - names == set()


def test_the_api_serves_metrics_and_readiness(service):
    client = service.api.test_client()
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert "htbase_captures" in names and "htbase_http_server_duration_seconds" in names
    ready = client.get("/api/v2/ready")
    assert ready.status_code == 200 and ready.get_json() == {
        "status": "ok",
        "checks": {"ledger": "ok", "broker": "ok", "storage": "ok", "browser": "ok"},  # it captures
    }


def test_readiness_names_what_is_not_ready(tmp_path):
    unreachable = Settings(
        database_url="postgresql+pg8000://htbase@127.0.0.1:1/htbase", local_storage_path=tmp_path / "archives"
    )
    runtime = Runtime(unreachable)
    try:
        checks = readiness(runtime)
    finally:
        runtime.close()
    assert checks["storage"] == "ok"
    assert checks["ledger"].startswith(("OperationalError", "InterfaceError")), checks
    assert checks["broker"] == "RuntimeError: no broker is configured"


def test_the_cloud_exporters_are_made_from_the_settings_offline(tmp_path, monkeypatch):
    # A key no Google endpoint knows: the clients load it; nothing is exported, so nothing asks Google.
    key = tmp_path / "key.json"
    key.write_text(json.dumps(service_account_key("telemetry@htbase-test.iam.gserviceaccount.com", "htbase-test")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    made = exporters(Settings(telemetry_exporter="gcp", google_cloud_project="htbase-test"))
    assert made is not None
    spans, metrics = made
    assert isinstance(spans, CloudTraceSpanExporter) and spans.project_id == "htbase-test"
    assert isinstance(metrics, CloudMonitoringMetricsExporter) and metrics.project_name == "projects/htbase-test"
    assert exporters(Settings(telemetry_exporter="none")) is None
