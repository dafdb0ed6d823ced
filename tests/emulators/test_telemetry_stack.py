"""One trace across real process boundaries: the API, the archivers and the summarizer, each its own
process on the emulator stack, exporting OTLP/HTTP to a receiver in this test; the context crosses
the Pub/Sub emulator in the messages' ``traceparent`` attribute, and the Cloud Tasks emulator in the
task's ``traceparent`` header. Readiness answers with the parts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from emulators.cloudtasks import CloudTasksEmulator
from emulators.stack import Stack
from htbase.config import Settings
from htbase.messages import WebhookRequest
from htbase.topology import WEBHOOK_PATH, WEBHOOKS
from infra.cloudtasks import CloudTasksPublisher
from infra.telemetry import message_context
from tests.emulators.conftest import Receiver
from tests.helpers import HttpApi, finished, submit, wait_for

SERVICES = ("api", "archiver-monolith", "archiver-readability", "summarizer")


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict


class OtlpReceiver:
    """What a collector receives over OTLP/HTTP (protobuf): spans, and the names of metrics by service."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/traces":
                    receiver._traces(body)
                elif self.path == "/v1/metrics":
                    receiver._metrics(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @staticmethod
    def _service(resource) -> str:
        return next(a.value.string_value for a in resource.attributes if a.key == "service.name")

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = [
            Span(
                self._service(resource_spans.resource),
                span.trace_id.hex(),
                span.span_id.hex(),
                span.parent_span_id.hex(),
                span.name,
                {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes},
            )
            for resource_spans in request.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.spans += found

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            for resource_metrics in request.resource_metrics:
                names = self.metrics.setdefault(self._service(resource_metrics.resource), set())
                names |= {m.name for scope in resource_metrics.scope_metrics for m in scope.metrics}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, receiver):
    overrides = {
        "ALLOW_PRIVATE_URLS": "1",
        "TELEMETRY_EXPORTER": "otlp",
        "OTLP_ENDPOINT": receiver.url,
        "METRICS_EXPORT_INTERVAL": "1",
    }
    with Stack(tmp_path_factory.mktemp("telemetry-stack"), overrides=overrides, services=SERVICES) as running:
        yield running


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_one_submission_is_one_trace_across_the_services(stack, receiver, test_site):
    api = HttpApi(stack.api_url)
    task_id = submit(api, test_site.url("/article.html"), archivers=["monolith", "readability"])
    assert finished(api, task_id)["status"] == "success"

    def whole_trace() -> list[Span] | None:
        mine = [s for s in receiver.spans if s.attributes.get("task_id") == task_id]
        if not mine:
            return None
        found = [s for s in receiver.spans if s.trace_id == mine[0].trace_id]
        # Each service exports on its own schedule (every 5 s, whichever span ended first): wait for the
        # summary and both successful captures, and for every parent they name, the API's request's
        # included (its export may well come last).
        captured = {
            s.attributes.get("archiver")
            for s in found
            if s.name.startswith("capture ") and s.attributes.get("outcome") == "success"
        }
        ids = {s.span_id for s in found}
        ended = (
            any(s.name == "summarize" for s in found)
            and captured == {"monolith", "readability"}
            and all(not s.parent_id or s.parent_id in ids for s in found)
        )
        return found if ended else None

    found = wait_for(whole_trace, 60, "the request's, the captures' and the summary's spans to reach the receiver")
    by_id = {s.span_id: s for s in found}
    assert {s.service for s in found} == {f"htbase-{name}" for name in SERVICES}
    [root] = [s for s in found if not s.parent_id]
    assert (root.service, root.name) == ("htbase-api", "POST /api/v2/archive")

    # One capture span per attempt, the last a success.
    attempts = sorted((s for s in found if s.name.startswith("capture ")), key=lambda s: s.attributes["attempt"])
    captures = {s.attributes["archiver"]: s for s in attempts}
    assert set(captures) == {"monolith", "readability"}
    for archiver, capture in captures.items():
        assert capture.service == f"htbase-archiver-{archiver}"
        assert capture.attributes["outcome"] == "success"
        delivery, publish, *_ = chain = ancestors(capture, by_id)
        assert delivery.service == capture.service and delivery.name.startswith("deliver ")
        assert (publish.service, publish.name) == ("htbase-api", f"publish archive-{archiver}")
        assert chain[-1] == root

    [summary] = [s for s in found if s.name == "summarize"]
    chain = ancestors(summary, by_id)
    assert summary.service == "htbase-summarizer"
    assert captures["readability"] in chain and chain[-1] == root
    assert any(s.name == "publish summarize" and s.service == "htbase-archiver-readability" for s in chain)

    # The metrics travel the same way.
    wait_for(
        lambda: "htbase.captures" in receiver.metrics.get("htbase-archiver-monolith", set()),
        30,
        "the archiver's capture counter",
    )
    assert "htbase.submissions" in wait_for(lambda: receiver.metrics.get("htbase-api"), 30, "the API's metrics")


def test_readiness_reports_each_part(stack):
    ready = requests.get(f"{stack.api_url}/api/v2/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"ledger": "ok", "broker": "ok", "storage": "ok"}
    worker = requests.get(f"{stack.url('archiver-readability')}ready", timeout=30)
    assert worker.status_code == 200, worker.text
    assert worker.json()["checks"] == {"ledger": "ok", "broker": "ok", "storage": "ok", "browser": "ok"}

    stack.stop("pubsub")
    try:
        down = requests.get(f"{stack.api_url}/api/v2/ready", timeout=30)
        assert down.status_code == 503 and down.json()["checks"]["broker"] != "ok"
        assert down.json()["checks"]["ledger"] == "ok"
        assert requests.get(f"{stack.api_url}/healthz", timeout=30).status_code == 200  # liveness stays cheap
    finally:
        stack.start("pubsub")


def test_the_trace_context_crosses_cloud_tasks_as_a_header():
    target = Receiver()  # where the queue's tasks go: the webhooks service's route
    try:
        with CloudTasksEmulator() as emulator:
            settings = Settings(
                cloud_tasks_emulator_host=emulator.host,
                google_cloud_project="htbase-local",
                webhook_delivery_url=target.url("/"),
            )
            publisher = CloudTasksPublisher(settings)
            queue = publisher.queue_path(WEBHOOKS)
            publisher.client.create_queue(parent=queue.rsplit("/queues/", 1)[0], queue={"name": queue})
            # A webhook attempt written inside a submission's trace, as the ledger writes its outbox row.
            with TracerProvider().get_tracer("test").start_as_current_span("submission") as submission:
                attributes = message_context()
            try:
                publisher.publish(WEBHOOKS, WebhookRequest("delivery-1").to_json(), attributes).result(timeout=30)
            finally:
                publisher.close()
            [task] = target.wait_for(lambda r: r.path == WEBHOOK_PATH, timeout_s=30)
    finally:
        target.close()
    assert task.headers["x-cloudtasks-queuename"]  # it came through Cloud Tasks
    _, trace_id, _, _ = task.headers["traceparent"].split("-")
    assert int(trace_id, 16) == submission.get_span_context().trace_id
