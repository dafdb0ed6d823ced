"""Serving archives: written by strangers, they never run script with the API's origin; big ones stream."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Route, expect, sync_playwright

from api.archives import ARCHIVE_POLICY, CHUNK_BYTES
from infra.ledger import NewItem
from tests.api.conftest import API

HOSTILE = (Path(__file__).resolve().parents[1] / "site" / "pages" / "stored-xss.html").read_bytes()
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)
BIG_PDF = b"%PDF-1.4\n" + bytes(range(256)) * (3 * CHUNK_BYTES // 256 * 16)  # ~3 MB, many chunks


def finish(
    service,
    task_id: str,
    archiver: str,
    data: bytes,
    content_type: str,
    extension: str,
    extras: dict[str, tuple[bytes, str]] | None = None,
) -> None:
    """Record a finished capture the way a push handler does: claim, store, complete."""
    ledger, store = service.runtime.ledger, service.runtime.store
    ledger.claim(task_id, archiver, "test")
    stored = store.put(f"{task_id}/{archiver}.{extension}", data, content_type)
    meta = (
        {
            "extras": {
                ext: store.put(f"{task_id}/{archiver}.{ext}", extra, kind).key
                for ext, (extra, kind) in (extras or {}).items()
            }
        }
        if extras
        else {}
    )
    assert ledger.complete(task_id, archiver, "test", stored, meta=meta, duration_ms=1) is not None


@pytest.fixture
def archived(service) -> str:
    """A task whose page was hostile, captured five ways."""
    url = "https://hostile.example/stored-xss.html"
    task_id = service.runtime.ledger.create_task(
        [NewItem(url, "x" * 64, "hostile")], ["singlefile", "readability", "pdf", "screenshot"]
    ).task_id
    finish(service, task_id, "singlefile", HOSTILE, "text/html; charset=utf-8", "html")
    finish(
        service,
        task_id,
        "readability",
        HOSTILE,
        "text/html; charset=utf-8",
        "html",
        {"txt": (b"Nothing to see here\n", "text/plain; charset=utf-8")},
    )
    finish(service, task_id, "pdf", BIG_PDF, "application/pdf", "pdf")
    finish(service, task_id, "screenshot", PNG, "image/png", "png")
    return task_id


@pytest.mark.parametrize(
    "archiver, content_type, disposition, sandboxed",
    [
        ("singlefile", "text/html; charset=utf-8", "inline", True),
        ("readability", "text/html; charset=utf-8", "inline", True),
        ("screenshot", "image/png", "inline", False),  # no document to run script in
        ("pdf", "application/pdf", "inline", False),  # Chromium shows no PDF under a sandbox
    ],
)
def test_each_archive_is_served_with_deliberate_headers(
    client, archived, archiver, content_type, disposition, sandboxed
):
    response = client.get(f"{API}/archives/{archived}/{archiver}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type  # the charset said once
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    extension = {"singlefile": "html", "readability": "html", "screenshot": "png", "pdf": "pdf"}[archiver]
    assert response.headers["Content-Disposition"] == f'{disposition}; filename="{archived}-{archiver}.{extension}"'
    assert response.headers.get("Content-Security-Policy") == (ARCHIVE_POLICY if sandboxed else None)


def test_the_article_text_is_served_on_its_own(client, archived):
    response = client.get(f"{API}/archives/{archived}/readability?format=txt")
    assert response.status_code == 200 and response.data == b"Nothing to see here\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{archived}-readability.txt"'
    assert response.headers["Content-Security-Policy"] == ARCHIVE_POLICY
    assert client.get(f"{API}/archives/{archived}/pdf?format=txt").status_code == 404
    assert client.get(f"{API}/archives/{archived}/readability?format=xml").status_code == 400


def test_the_task_document_names_downloads_never_storage(client, archived):
    for name, subtask in client.get(f"{API}/tasks/{archived}").get_json()["subtasks"].items():
        assert subtask["artifact"]["url"] == f"{API}/archives/{archived}/{name}" and "uri" not in subtask["artifact"]


def test_the_policy_is_a_sandbox_that_keeps_the_origin_opaque_and_loads_nothing():
    directives = dict((d.split(" ", 1) + [""])[:2] for d in ARCHIVE_POLICY.split("; "))
    assert directives["sandbox"] == ""  # no allow-scripts, no allow-same-origin, no allow-forms
    assert directives["default-src"] == "'none'"
    assert not re.search(r"https?:|\*|'self'", ARCHIVE_POLICY)


def test_the_zip_is_an_attachment_and_every_answer_says_nosniff(client, archived):
    response = client.get(f"{API}/archives/{archived}/all")
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{archived}.zip"'
    assert response.headers["Content-Security-Policy"] == ARCHIVE_POLICY
    for answer in (
        response,
        client.get(f"{API}/tasks/{archived}"),
        client.get(f"{API}/tasks/nope"),
        client.post(f"{API}/archive", json={}),
        client.get("/healthz"),
    ):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_download_streams_from_storage(client, archived):
    response = client.get(f"{API}/archives/{archived}/pdf", buffered=False)
    assert response.is_streamed and "Content-Length" not in response.headers  # chunked: no size cap
    pieces = list(response.response)
    assert len(pieces) > 1 and max(map(len, pieces)) <= CHUNK_BYTES
    assert b"".join(pieces) == BIG_PDF


def test_the_zip_of_all_artifacts_streams(client, archived):
    response = client.get(f"{API}/archives/hostile/all", buffered=False)  # by item id
    assert response.is_streamed
    pieces = list(response.response)
    assert len(pieces) > 1 and max(map(len, pieces)) <= 2 * CHUNK_BYTES
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == [
        "pdf.pdf",
        "readability.html",
        "readability.txt",
        "screenshot.png",
        "singlefile.html",
    ]
    assert archive.read("pdf.pdf") == BIG_PDF and archive.read("singlefile.html") == HOSTILE


def test_a_list_of_tasks_counts_a_batchs_children_instead_of_showing_them(client, service):
    batch = client.post(
        f"{API}/archive/batch", json={"items": [{"url": f"https://e.org/{n}"} for n in range(3)], "archivers": ["pdf"]}
    ).get_json()
    single = client.post(f"{API}/archive", json={"url": "https://e.org/single"}).get_json()
    first_child = batch["tasks"][0]["task_id"]
    finish(service, first_child, "pdf", b"%PDF-1.4", "application/pdf", "pdf")

    listed = {t["task_id"]: t for t in client.get(f"{API}/tasks").get_json()["tasks"]}
    assert set(listed) == {batch["task_id"], single["task_id"]}  # children are not listed on their own
    summary = listed[batch["task_id"]]
    assert "items" not in summary
    assert (summary["items_count"], summary["items_url"]) == (3, f"{API}/tasks/{batch['task_id']}")
    assert (summary["status"], summary["progress"], summary["completed_at"]) == ("processing", 0.3333, None)
    assert "subtasks" in listed[single["task_id"]]

    document = client.get(summary["items_url"]).get_json()
    # the ledger's order (creation, then id): the children share their creation time
    assert sorted(item["task_id"] for item in document["items"]) == sorted(c["task_id"] for c in batch["tasks"])
    assert (document["status"], document["progress"]) == (summary["status"], summary["progress"])


def test_a_hostile_archive_opened_from_the_api_runs_no_script(served_api, archived, test_site, service):
    """In Chromium: the page's script, javascript: links (an SVG <set> makes one), form and onerror
    handler never run on the API's origin, so they read no cookie and no task list; its inline style
    still applies."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=service.settings.chromium_path)
        try:
            context = browser.new_context()
            for origin in (served_api, test_site.url("/")):
                context.add_cookies([{"name": "session", "value": "s3cret", "url": origin}])
            page = context.new_page()

            # Control: outside the sandbox the page is as hostile as it means to be.
            page.goto(test_site.url("/stored-xss.html"))
            expect(page.locator("#verdict")).to_contain_text("cookie: session=s3cret")

            page.goto(f"{served_api}{API}/archives/{archived}/singlefile")
            expect(page.locator("#verdict")).to_have_text("no script ran")
            expect(page.locator("#verdict")).to_have_css("color", "rgb(0, 128, 0)")
            for target, refusal in (
                ("#js-link", "JavaScript URL"),
                ("#svg-link", "JavaScript URL"),
                ("#svg-set", "JavaScript URL"),
                ("#js-button", "form submission"),
            ):
                with page.expect_console_message(lambda message, refusal=refusal: refusal in message.text):
                    page.click(target)
                expect(page.locator("#verdict")).to_have_text("no script ran")
            expect(page.locator("#api")).to_have_text("no answer from the API")
            assert page.url == f"{served_api}{API}/archives/{archived}/singlefile"
        finally:
            browser.close()


@pytest.fixture
def captured(service, test_site) -> str:
    """A task holding real captures of the hostile page, by SingleFile and readability (a worker's)."""
    url = test_site.url("/stored-xss.html")
    task_id = service.runtime.ledger.create_task(
        [NewItem(url, "y" * 64, "captured")], ["singlefile", "readability"]
    ).task_id
    for name in ("singlefile", "readability"):
        capture = service.runtime.archiver(name).capture(url, {})
        finish(service, task_id, name, capture.data, capture.content_type, capture.extension, capture.extras)
    return task_id


# What each capture keeps of the page's javascript: URLs (SingleFile drops the script and the
# onerror handler; readability keeps the link in its prose), and Chromium's refusal of each under the sandbox.
KEPT = {
    "singlefile": {"#svg-link": "JavaScript URL", "#svg-set": "JavaScript URL", "#js-button": "form submission"},
    "readability": {'a[href^="javascript:"]': "JavaScript URL"},
}


def fulfilled_with(body: bytes) -> Callable[[Route], None]:
    return lambda route: route.fulfill(body=body, content_type="text/html")


def test_real_captures_of_a_hostile_page_opened_from_the_api_run_no_script(served_api, captured, test_site, service):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=service.settings.chromium_path)
        try:
            context = browser.new_context()
            for origin in (served_api, test_site.url("/")):
                context.add_cookies([{"name": "session", "value": "s3cret", "url": origin}])
            page = context.new_page()
            outside = test_site.url("/captured.html")  # the capture on a site's own origin, no policy
            for archiver, targets in KEPT.items():
                served = f"{served_api}{API}/archives/{captured}/{archiver}"
                body = context.request.get(served).body()
                page.route(outside, fulfilled_with(body))
                for target, refusal in targets.items():
                    # Control: outside the sandbox, what the capture kept still runs.
                    page.goto(outside)
                    page.click(target)
                    expect(page.locator("#verdict")).to_contain_text("cookie: session=s3cret")

                    page.goto(served)
                    verdict = page.locator("#verdict").text_content()
                    with page.expect_console_message(lambda message, refusal=refusal: refusal in message.text):
                        page.click(target)
                    expect(page.locator("#verdict")).to_have_text(verdict or "")
                    assert "s3cret" not in page.content() and page.url == served
                page.unroute(outside)
        finally:
            browser.close()
