"""Logging: JSON lines that Cloud Logging understands, or readable lines on a laptop.

As in Google's Cloud Run template: ``severity`` maps the level, and the current
OpenTelemetry span becomes ``logging.googleapis.com/trace`` and ``spanId``, so
Cloud Logging shows each line under its span in the trace (infra/telemetry.py).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace

from htbase.config import Settings


class JsonFormatter(logging.Formatter):
    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        entry.update(getattr(record, "fields", {}))
        span = trace.get_current_span().get_span_context()
        if self.project and span.is_valid:
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{span.trace_id:032x}"
            entry["logging.googleapis.com/spanId"] = f"{span.span_id:016x}"
            entry["logging.googleapis.com/trace_sampled"] = span.trace_flags.sampled
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PrettyFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", {})
        return line + ("  " + " ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(settings.google_cloud_project) if settings.log_format == "json" else PrettyFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("werkzeug", "urllib3", "google", "trafilatura", "htmldate", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def log(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log a message with structured fields (task_id, archiver, ...)."""
    logger.log(level, message, extra={"fields": fields})
