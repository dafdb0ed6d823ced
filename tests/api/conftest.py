"""The API on the embedded service with its dispatcher stopped: accepted work stays queued, nothing is captured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from werkzeug.serving import make_server

from service.embedded import EmbeddedService

API = "/api/v2"


def quiet_service(settings):
    service = EmbeddedService(settings.with_(archivers=("pdf", "screenshot"))).start()
    service.dispatcher.close()
    return service


@pytest.fixture
def service(embedded_settings):
    service = quiet_service(embedded_settings)
    yield service
    service.close()


@pytest.fixture
def service_on_each_database(settings):
    """SQLite and Postgres: they refuse different things (Postgres: NUL in text)."""
    service = quiet_service(settings)
    yield service
    service.close()


@pytest.fixture
def client(service):
    return service.api.test_client()


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` on a real HTTP server on loopback, as `htbase serve` runs it; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def served_api(service):
    with served(service.api) as url:
        yield url
