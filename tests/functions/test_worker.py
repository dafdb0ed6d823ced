"""The Worker's health: what the push services' liveness probe (GET /healthz) reports, and readiness
(a push service's GET /ready, the all-in-one process's GET /api/v2/ready) naming a dead browser."""

from __future__ import annotations

import sys

from functions.worker import Worker
from service.embedded import EmbeddedService
from tests.api.conftest import API
from tests.functions.archivers.conftest import kill_driver, playwright_drivers
from tests.helpers import wait_for

TERMINAL = ("success", "partial", "failed")


def test_health_reports_a_browser_that_died_and_cannot_start_again(embedded_settings, test_site):
    worker = Worker(embedded_settings.with_(archivers=("pdf",)))
    try:
        assert worker.health() == {"ledger": True, "browser": True}  # no browser needed yet
        others, pdf = playwright_drivers(), worker.archiver("pdf")
        assert pdf.capture(test_site.url("/article.html"), {}).data[:4] == b"%PDF"
        assert worker.health() == {"ledger": True, "browser": True}
        [driver] = playwright_drivers() - others
        pdf.browser.settings = worker.settings.with_(chromium_path="/nonexistent/chromium")
        kill_driver(driver)
        assert worker.health() == {"ledger": True, "browser": False}
    finally:
        worker.close()


def test_the_liveness_probe_needs_no_token_and_reports_the_checks(serve_target):
    client = serve_target("archive_pdf", PUSH_AUTH_TOKEN="a-shared-token")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "ledger": True, "browser": True}
    assert client.post("/healthz", json={}).status_code == 401  # only the probe goes without a token


def test_the_liveness_probe_fails_while_the_ledger_does_not_answer(serve_target):
    client = serve_target(
        "archive_pdf",
        PUSH_AUTH_TOKEN="a-shared-token",
        DATABASE_URL="postgresql+pg8000://nobody@127.0.0.1:9/nothing",
        RUN_MIGRATIONS="0",
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unhealthy", "ledger": False, "browser": True}


def dead_browser_that_cannot_start(worker: Worker, others: set[int]) -> None:
    """Kill the worker's Playwright driver (the OOM killer's way) where Chromium cannot be started again."""
    [driver] = playwright_drivers() - others
    browser = worker.archiver("pdf").browser
    browser.settings = worker.settings.with_(chromium_path="/nonexistent/chromium")
    kill_driver(driver)


def test_the_all_in_one_process_is_unready_while_its_browser_is_dead_and_ready_once_it_captures_again(
    embedded_settings, test_site
):
    others = playwright_drivers()
    with EmbeddedService(embedded_settings.with_(archivers=("pdf",))) as service:
        client = service.api.test_client()

        def captured() -> None:
            task_id = client.post(f"{API}/archive", json={"url": test_site.url("/article.html")}).get_json()["task_id"]
            ended = wait_for(lambda: client.get(f"{API}/tasks/{task_id}").get_json()["status"] in TERMINAL, 60)
            assert ended and client.get(f"{API}/tasks/{task_id}").get_json()["status"] == "success"

        captured()
        [first] = playwright_drivers() - others
        kill_driver(first)
        # Readiness finds the driver dead and starts a new one: the process can capture, so it is ready.
        ready = client.get(f"{API}/ready")
        assert (ready.status_code, ready.get_json()["checks"]["browser"]) == (200, "ok")
        assert len(playwright_drivers() - others - {first}) == 1

        dead_browser_that_cannot_start(service.runtime, others)
        ready = client.get(f"{API}/ready")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["browser"] == "RuntimeError: Chromium died and could not be started again"
        assert client.get(f"{API}/health").status_code == 200  # liveness stays cheap: the ledger only

        service.runtime.archiver("pdf").browser.settings = service.runtime.settings  # Chromium can start again
        captured()
        assert client.get(f"{API}/ready").status_code == 200


def test_an_archiver_service_is_unready_while_its_browser_is_dead(serve_target, test_site):
    client = serve_target("archive_pdf", PUSH_AUTH_TOKEN="a-shared-token", ALLOW_PRIVATE_URLS="1")
    worker = sys.modules["main"].runtime()
    others = playwright_drivers()
    assert worker.archiver("pdf").capture(test_site.url("/article.html"), {}).data[:4] == b"%PDF"
    dead_browser_that_cannot_start(worker, others)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["browser"] == "RuntimeError: Chromium died and could not be started again"
