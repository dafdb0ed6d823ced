"""End to end on the embedded defaults: the API, the dispatcher, the push handlers, the real tools.

One process, SQLite, local files, real Chromium and SingleFile, the local test
site on 127.0.0.1 — the way `make run` works.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import pytest
from PIL import Image

from htbase.messages import ArchiveRequest
from infra.outbox import archive_outgoing
from service.embedded import EmbeddedService
from tests.helpers import API, ARCHIVE_FILES, embedded_settings, finished, submit
from tests.site.server import serve_test_site

EXTERNAL_RESOURCE = re.compile(r"""(?:\b(?:src|srcset|poster)\s*=\s*["']?\s*|url\(\s*["']?)https?://""", re.I)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with EmbeddedService(embedded_settings(tmp_path_factory.mktemp("pipeline"))) as service:
        yield service


@pytest.fixture(scope="module")
def client(service):
    return service.api.test_client()


@pytest.fixture(scope="module")
def article_task(client, service, test_site) -> dict:
    task_id = submit(client, test_site.url("/article.html"), item_id="varne-point")
    task = finished(client, task_id)
    assert service.dispatcher.wait_idle(60)  # the summary follows the readable article
    return task


def test_all_five_captures_succeed(article_task):
    assert article_task["status"] == "success", article_task
    assert article_task["progress"] == 1 and article_task["completed_at"]
    assert set(article_task["subtasks"]) == {"singlefile", "monolith", "readability", "pdf", "screenshot"}
    for name, sub in article_task["subtasks"].items():
        artifact = sub["artifact"]
        assert sub["attempts"] == 1 and artifact["size"] > 0 and len(artifact["sha256"]) == 64, name
        assert artifact["url"] == f"{API}/archives/{article_task['task_id']}/{name}" and "uri" not in artifact


def download(client, task: dict, archiver: str):
    response = client.get(task["subtasks"][archiver]["artifact"]["url"])
    assert response.status_code == 200
    return response


def test_the_bytes_served_are_the_bytes_recorded(client, article_task):
    for name, sub in article_task["subtasks"].items():
        served = download(client, article_task, name).data
        assert len(served) == sub["artifact"]["size"], name
        assert hashlib.sha256(served).hexdigest() == sub["artifact"]["sha256"], name


def test_pdf_is_a_pdf_with_pages(client, article_task):
    from pypdf import PdfReader

    response = download(client, article_task, "pdf")
    assert response.mimetype == "application/pdf" and response.data.startswith(b"%PDF")
    assert len(PdfReader(io.BytesIO(response.data)).pages) >= 1


def test_screenshot_is_a_full_page_png_of_the_page_width(client, article_task):
    response = download(client, article_task, "screenshot")
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "PNG" and image.width == 1280 and image.height > 720


@pytest.mark.parametrize("archiver", ["singlefile", "monolith"])
def test_self_contained_html_embeds_resources(client, article_task, archiver):
    html = download(client, article_task, archiver).data.decode()
    assert "Lighthouse Keepers Return to Varne Point" in html
    assert "data:image/png;base64," in html
    assert "data:font/" in html or "data:application/font" in html or "data:application/octet-stream" in html
    assert not EXTERNAL_RESOURCE.search(html), EXTERNAL_RESOURCE.search(html)


def test_singlefile_keeps_javascript_built_content(client, article_task):
    assert "Rendered by JavaScript 7f3a" in download(client, article_task, "singlefile").data.decode()


def test_monolith_runs_no_javascript(client, article_task):
    html = download(client, article_task, "monolith").data.decode()
    assert "<script" not in html.lower()


def test_readability_holds_the_article_not_the_ad(client, article_task):
    html = download(client, article_task, "readability").data.decode()
    assert "Varne Point" in html and "SPONSORED" not in html
    metadata = article_task["subtasks"]["readability"]["metadata"]
    assert metadata["title"].startswith("Lighthouse Keepers") and metadata["author"] == "Margaret Ellison"
    assert metadata["date"]


def test_all_artifacts_as_one_zip_by_task_or_item_id(client, article_task):
    for archive_id in (article_task["task_id"], "varne-point"):
        response = client.get(f"{API}/archives/{archive_id}/all")
        assert response.status_code == 200 and response.mimetype == "application/zip"
        names = set(zipfile.ZipFile(io.BytesIO(response.data)).namelist())
        assert names == set(ARCHIVE_FILES)
        text = zipfile.ZipFile(io.BytesIO(response.data)).read("readability.txt").decode()
        assert "Varne Point" in text and "SPONSORED" not in text


def test_a_redelivered_finished_capture_does_nothing(client, service, article_task):
    task_id = article_task["task_id"]
    before = service.runtime.ledger.task(task_id).artifacts
    request = ArchiveRequest(task_id, "varne-point", article_task["url"], "pdf")
    for _ in range(2):
        message = archive_outgoing(request)
        service.dispatcher.publish(message.topic, message.data, message.attributes)
    assert service.dispatcher.wait_idle(30)
    after = service.runtime.ledger.task(task_id).artifacts
    assert [(a.attempts, a.sha256, a.finished_at) for a in after] == [
        (a.attempts, a.sha256, a.finished_at) for a in before
    ]


def test_a_duplicate_delivery_during_a_capture_starts_no_second_capture(client, service, test_site):
    task_id = submit(client, test_site.url("/article.html?dup"), archivers=["pdf"])
    ledger = service.runtime.ledger
    request = ArchiveRequest(task_id, ledger.task(task_id).item_id, test_site.url("/article.html?dup"), "pdf")
    message = archive_outgoing(request)
    for _ in range(3):  # the same message, delivered again while the first is running
        service.dispatcher.publish(message.topic, message.data, message.attributes)
    task = finished(client, task_id)
    assert service.dispatcher.wait_idle(30)
    assert task["status"] == "success" and task["subtasks"]["pdf"]["attempts"] == 1
    stored = list((service.settings.local_storage_path / task_id).iterdir())
    assert [p.name for p in stored] == ["pdf.pdf"]


def test_bad_pages_fail_with_a_clear_error_and_the_service_lives_on(tmp_path, test_site):
    settings = embedded_settings(
        tmp_path,
        capture_timeout_s=3,
        max_attempts=2,
        retry_backoff_s=0.1,
        max_capture_bytes=2 * 1024 * 1024,
        archivers=("monolith", "pdf"),
    )
    cases = {
        "/missing": "HTTP 404",
        "/slow": "timed out",
        "/huge": "limit",
        "/server-error": "HTTP 500",
    }
    with EmbeddedService(settings) as service:
        client = service.api.test_client()
        tasks = {path: submit(client, test_site.url(path)) for path in cases}
        for path, expected in cases.items():
            task = finished(client, tasks[path])
            assert task["status"] == "failed", (path, task)
            for name, sub in task["subtasks"].items():
                assert expected.lower() in sub["error"].lower(), (path, name, sub)
        assert client.get("/healthz").status_code == 200


def test_the_egress_guard_refuses_private_targets(tmp_path, test_site):
    """With the guard on, only the site on 127.0.0.2 is allowed; loopback, metadata and redirects there are not."""
    settings = embedded_settings(
        tmp_path,
        allow_private_urls=False,
        egress_allow_cidrs=("127.0.0.2/32",),
        capture_timeout_s=10,
        max_attempts=2,
        retry_backoff_s=0.1,
    )
    with serve_test_site(host="127.0.0.2") as allowed_site, EmbeddedService(settings) as service:
        client = service.api.test_client()
        cases = {
            test_site.url("/article.html"): "127.0.0.1",
            test_site.url("/article.html").replace("127.0.0.1", "localhost"): "127.0.0.1",
            "http://169.254.169.254/latest/meta-data/": "169.254.169.254",
            allowed_site.url("/redirect-to?url=http://169.254.169.254/latest/meta-data/"): "169.254.169.254",
            allowed_site.url("/redirect-to?url=" + test_site.url("/article.html")): "127.0.0.1",
        }
        tasks = {url: submit(client, url) for url in cases}
        for url, address in cases.items():
            task = finished(client, tasks[url])
            assert task["status"] == "failed", (url, task)
            for name, sub in task["subtasks"].items():
                assert "refused" in sub["error"] and address in sub["error"], (url, name, sub["error"])
                assert sub["attempts"] == 1, "a refusal is permanent: no retries"
        # The allowed host itself archives fine with the guard on.
        ok = finished(client, submit(client, allowed_site.url("/article.html"), archivers=["pdf", "monolith"]))
        assert ok["status"] == "success", ok
