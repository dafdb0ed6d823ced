"""The Worker's health: what the push services' liveness probe (GET /healthz) reports."""
from __future__ import annotations

from functions.worker import Worker
from tests.archivers.conftest import kill_driver, playwright_drivers


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
