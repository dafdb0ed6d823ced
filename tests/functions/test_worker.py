"""The Worker's health: what the push services' liveness probe (GET /healthz) reports."""

from __future__ import annotations

from functions.worker import Worker
from tests.functions.archivers.conftest import kill_driver, playwright_drivers


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
