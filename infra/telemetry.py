"""Traces and metrics (OpenTelemetry), set up once per process from Settings.

``TELEMETRY_EXPORTER`` picks where they go: ``none`` (spans are still made, so
log lines carry a trace id, and context still crosses every hop), ``otlp`` (a
collector over OTLP/HTTP, as in the compose ``monitoring`` profile) or ``gcp``
(Cloud Trace and Cloud Monitoring). With ``PROMETHEUS_METRICS`` the process's
metrics are also kept for a scrape of ``/metrics`` (``prometheus_text``).

One submission is one trace. Context crosses Pub/Sub (and the embedded
dispatcher, which carries the same attributes) as a W3C ``traceparent``
message attribute, written into the outbox row when the work is written
(``message_context``), so that a message the relay publishes later still
continues the trace; HTTP requests carry it as the ``traceparent`` header
(``outgoing_headers``, for webhook deliveries and Cloud Tasks).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, request
from opentelemetry import context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from htbase.config import Settings
from htbase.topology import archiver_service

TRACER = trace.get_tracer("htbase")  # a proxy until ``install``: spans made before it are no-ops
PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent (and tracestate), nothing else
F = TypeVar("F", bound=Callable[..., Any])


def service_name(settings: Settings) -> str:
    """The service a process is, as the topology names it (``htbase-archiver-pdf``)."""
    role = settings.service_role
    if role == "archiver" and len(settings.archivers) == 1:
        return f"htbase-{archiver_service(settings.archivers[0])}"
    return f"htbase-{role}"


@dataclass(frozen=True)
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    prometheus: bool  # whether ``prometheus_text`` has this process's metrics

    def flush(self, timeout_ms: int = 10_000) -> None:
        """Export what is pending now (a Cloud Run request that is the instance's last CPU for a while)."""
        self.tracer_provider.force_flush(timeout_ms)
        self.meter_provider.force_flush(timeout_ms)


_installed: Telemetry | None = None
_install_lock = threading.Lock()


def install(settings: Settings) -> Telemetry:
    """Set up this process's tracer and meter providers (the first call does; later ones return them:
    OpenTelemetry's providers are global, one per process). A gunicorn worker installs after its fork."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = _build(settings)
            trace.set_tracer_provider(_installed.tracer_provider)
            metrics.set_meter_provider(_installed.meter_provider)
        return _installed


def exporters(settings: Settings) -> tuple[SpanExporter, MetricExporter] | None:
    """Where ``TELEMETRY_EXPORTER`` sends spans and metrics; None: nowhere. Made without a request
    to anyone: the cloud's clients only load their credentials."""
    if settings.telemetry_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = settings.otlp_endpoint.rstrip("/")
        return OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=10), OTLPMetricExporter(
            endpoint=f"{base}/v1/metrics", timeout=10
        )
    if settings.telemetry_exporter == "gcp":
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        project = settings.google_cloud_project or None
        # A unique identifier: each instance writes series of its own.
        return CloudTraceSpanExporter(project_id=project), CloudMonitoringMetricsExporter(
            project_id=project, add_unique_identifier=True
        )
    return None


def _build(settings: Settings) -> Telemetry:
    resource = Resource.create({"service.name": service_name(settings), "service.namespace": "htbase"})
    if settings.telemetry_exporter == "gcp":
        from opentelemetry.resourcedetector.gcp_resource_detector import GoogleCloudResourceDetector

        # The Cloud Run revision and instance the series and spans come from.
        resource = GoogleCloudResourceDetector().detect().merge(resource)
    tracer_provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
    )
    readers: list[MetricReader] = []
    if (chosen := exporters(settings)) is not None:
        spans, metric_exporter = chosen
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        readers.append(
            PeriodicExportingMetricReader(
                metric_exporter, export_interval_millis=settings.metrics_export_interval_s * 1000
            )
        )
    if settings.prometheus_metrics:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    return Telemetry(
        tracer_provider, MeterProvider(metric_readers=readers, resource=resource), settings.prometheus_metrics
    )


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(), CONTENT_TYPE_LATEST


# --- context across hops ---------------------------------------------------------------------


def message_context() -> dict[str, str]:
    """The current trace context as message attributes (``traceparent``), for a message written now."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier


def outgoing_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the current trace context: for an HTTP request to another hop (a webhook
    delivery, a Cloud Tasks task's headers), which its receiver continues."""
    carrier = dict(headers or {})
    PROPAGATOR.inject(carrier)
    return carrier


def context_of(carrier: Mapping[str, str]) -> context.Context:
    """The trace context a message's attributes or a request's headers carry (none: a new trace)."""
    return PROPAGATOR.extract({key.lower(): value for key, value in carrier.items()})


# --- spans -----------------------------------------------------------------------------------


def traced(name: str) -> Callable[[F], F]:
    """Run the decorated function in a span called ``name`` (a ledger commit, a storage write)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with TRACER.start_as_current_span(name):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@contextmanager
def consuming(name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]) -> Iterator[Span]:
    """The span of a message being handled, continuing the trace the message carries."""
    with TRACER.start_as_current_span(
        name, context=context_of(carrier), kind=SpanKind.CONSUMER, attributes=dict(attributes)
    ) as span:
        yield span


def publishing(topic: str, carrier: Mapping[str, str]) -> tuple[Span, dict[str, str]]:
    """A started publish span, continuing the trace the outbox row carries, and the attributes to
    send: ``carrier`` with the publish span as the receiver's parent. End it when the broker answers.

    A row written outside any trace (a sweep's republish) is sent as it is: its delivery starts a
    trace of its own, rather than a trace of one publish span."""
    parent = context_of(carrier)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return trace.INVALID_SPAN, dict(carrier)
    span = TRACER.start_span(
        f"publish {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "gcp_pubsub", "messaging.destination.name": topic},
    )
    attributes = dict(carrier)
    PROPAGATOR.inject(attributes, context=trace.set_span_in_context(span))
    return span, attributes


def end_publish(span: Span, error: BaseException | None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def current_trace_id() -> str:
    """The current span's trace id in hex, or "" outside any span."""
    found = trace.get_current_span().get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else ""


# --- the API's requests ----------------------------------------------------------------------

ROUTE_KEY = "htbase.route"  # where the matched route waits in the WSGI environ


def trace_requests(app: Flask) -> None:
    """One server span per request to ``app``, continuing a caller's ``traceparent`` (Cloud Run's
    front end sends one), named by its route; and the request duration by route and status class."""
    from infra.metrics import HTTP_DURATION

    wsgi_app = app.wsgi_app

    def traced_app(environ: dict, start_response: Callable) -> Any:
        headers = {
            key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        method = environ.get("REQUEST_METHOD", "GET")
        started, status = time.perf_counter(), [500]

        def starting(line: str, response_headers: list, *exc_info: Any) -> Any:
            status[0] = int(line.split(" ", 1)[0])
            return start_response(line, response_headers, *exc_info)

        with TRACER.start_as_current_span(
            method,
            context=context_of(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": environ.get("PATH_INFO", "")},
        ) as span:
            try:
                return wsgi_app(environ, starting)
            finally:
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                HTTP_DURATION.record(
                    time.perf_counter() - started,
                    {
                        "http.request.method": method,
                        "http.route": environ.get(ROUTE_KEY, "unmatched"),
                        "http.response.status_class": f"{status[0] // 100}xx",
                    },
                )

    @app.before_request
    def name_span() -> None:
        if request.url_rule is not None:
            route = request.url_rule.rule
            request.environ[ROUTE_KEY] = route
            span = trace.get_current_span()
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.route", route)

    app.wsgi_app = traced_app  # type: ignore[method-assign]
