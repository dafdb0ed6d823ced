"""Logging: JSON lines that Cloud Logging understands, or readable lines on a laptop.

As in Google's Cloud Run template: ``severity`` maps the level, and a request's
``X-Cloud-Trace-Context`` becomes ``logging.googleapis.com/trace`` so a
request's lines group together in the console.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

from htbase.config import Settings

trace_context: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="")


class JsonFormatter(logging.Formatter):
    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
        }
        entry.update(getattr(record, "fields", {}))
        trace = trace_context.get()
        if trace and self.project:
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace}"
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
    handler.setFormatter(JsonFormatter(settings.google_cloud_project) if settings.log_format == "json"
                         else PrettyFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("werkzeug", "urllib3", "google", "trafilatura", "htmldate", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def set_trace(header: str) -> None:
    """Remember the trace id of the current request (``TRACE_ID/SPAN;o=1``)."""
    trace_context.set(header.split("/", 1)[0] if header else "")


def log(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log a message with structured fields (task_id, archiver, ...)."""
    logger.log(level, message, extra={"fields": fields})
