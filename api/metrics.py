"""Metrics: this process's metrics as Prometheus text, for a scrape (embedded and VPS modes).

Behind the API's keys like any read (a scraper presents a ``read`` key as a bearer token).
Off (404) with ``PROMETHEUS_METRICS=false``, as in the cloud, where Cloud Monitoring has them.
"""

from __future__ import annotations

from flask import Response

from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import ErrorBody
from infra.telemetry import prometheus_text

bp = blueprint("metrics", "This process's metrics, in the Prometheus text format", url_prefix="")


@bp.get(
    "/metrics",
    responses={
        200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}},
        404: ErrorBody,
    },
)
def metrics() -> Response:
    """Counters, histograms and gauges (infra/metrics.py), as Prometheus scrapes them."""
    if not runtime().settings.prometheus_metrics:
        raise ApiError(404, "not_found", "metrics are not served here (PROMETHEUS_METRICS is off)")
    text, content_type = prometheus_text()
    return Response(text, content_type=content_type)
