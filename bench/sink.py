"""An OTLP/HTTP endpoint that takes every export and keeps nothing: what ``--tracing`` exports to,
so a benchmark pays for making and sending spans and metrics, not for a collector's work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Discard(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    """The sink's base URL, for OTLP_ENDPOINT."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def telemetry_settings(tracing: bool, endpoint: str) -> dict[str, str]:
    """The settings of a run: every span recorded and exported (``--tracing``), or none recorded."""
    if tracing:
        return {"TELEMETRY_EXPORTER": "otlp", "OTLP_ENDPOINT": endpoint, "TRACE_SAMPLE_RATIO": "1"}
    return {"TELEMETRY_EXPORTER": "none", "TRACE_SAMPLE_RATIO": "0"}
