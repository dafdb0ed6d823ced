"""Concurrent page captures of one URL for one task share one load (``Browser.capture(task=...)``):
one document request, each artifact still right, each capture its own result or error. Another
task's captures load it apart.

The test site's gate holds the page's answer until every capture has joined the
load (``Browser.sharing``), so the joining does not depend on timing."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from PIL import Image
from pypdf import PdfReader

from functions.archivers.base import Capture, CaptureTimeout, PermanentCaptureError, TransientCaptureError
from tests.functions.archivers.conftest import served
from tests.helpers import wait_for

SHARING = ("pdf", "screenshot", "readability")  # in the order they join, so the order they render in
JS_TEXT = "Rendered by JavaScript 7f3a"


def gated(test_site, **query: str) -> tuple[str, str, str]:
    """A fresh gate: its key, its path and its URL."""
    key = uuid.uuid4().hex
    path = "/gate?" + "&".join(f"{name}={value}" for name, value in {"key": key, **query}.items())
    return key, path, test_site.url(path)


def join_one_load(pool, browser, make_archiver, url: str, names=SHARING, options=None) -> dict[str, Future]:
    """Start a capture per archiver, each once the ones before it are on the shared load."""
    captures = {}
    for count, name in enumerate(names, 1):
        captures[name] = pool.submit(make_archiver(name).capture, url, options or {})
        wait_for(lambda count=count: browser.sharing(url) == count, 30, f"{count} captures on the load")
    return captures


def document_requests(test_site, path: str) -> int:
    return sum(1 for request in test_site.requests if request[1] == path)


def pdf_text(capture: Capture) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(capture.data)).pages)


def test_concurrent_captures_of_a_url_load_it_once_and_each_artifact_is_right(browser, make_archiver, test_site):
    key, path, url = gated(test_site)
    with ThreadPoolExecutor(len(SHARING)) as pool:
        futures = join_one_load(pool, browser, make_archiver, url)
        test_site.open_gate(key)
        pdf, shot, article = (futures[name].result() for name in SHARING)
    assert document_requests(test_site, path) == 1
    assert browser.sharing(url) == 0  # closed with the last capture

    assert pdf.data.startswith(b"%PDF") and pdf.metadata["pages"] >= 1
    assert "Varne Point" in pdf_text(pdf) and JS_TEXT in pdf_text(pdf)
    image = Image.open(io.BytesIO(shot.data)).convert("RGB")
    assert image.width == 1280 and image.height > 800  # the whole page, not the viewport
    assert image.getpixel((5, 5)) == (0x1D, 0x35, 0x57)  # the masthead, styled
    assert JS_TEXT in article.extras["txt"][0].decode()
    for capture in (pdf, shot, article):
        assert capture.metadata["final_url"] == url and capture.metadata["http_status"] == 200


def test_the_pdf_printed_before_a_screenshot_on_the_same_page_leaves_no_print_style_in_it(
    browser, make_archiver, test_site
):
    key, path, url = gated(test_site, page="print-style.html")
    with ThreadPoolExecutor(2) as pool:
        futures = join_one_load(pool, browser, make_archiver, url, names=("pdf", "screenshot"))
        test_site.open_gate(key)
        pdf, shot = futures["pdf"].result(), futures["screenshot"].result()
    assert document_requests(test_site, path) == 1
    assert "Printed copy only." in pdf_text(pdf) and "Shown on screen only." not in pdf_text(pdf)
    image = Image.open(io.BytesIO(shot.data)).convert("RGB")
    assert image.getpixel((200, 100)) == (0, 0, 255)  # the screen's blue box, not print's red


@pytest.mark.parametrize(("status", "error"), [(404, PermanentCaptureError), (500, TransientCaptureError)])
def test_a_shared_load_that_fails_fails_every_capture_on_it(browser, make_archiver, test_site, status, error):
    key, path, url = gated(test_site, status=str(status))
    with ThreadPoolExecutor(len(SHARING)) as pool:
        futures = join_one_load(pool, browser, make_archiver, url)
        test_site.open_gate(key)
        errors = [future.exception() for future in futures.values()]
    assert document_requests(test_site, path) == 1
    for raised in errors:
        assert type(raised) is error and str(raised).startswith(f"HTTP {status} ") and url in str(raised)
    assert len({id(raised) for raised in errors}) == len(errors)  # each capture its own error


def test_a_shared_load_that_times_out_times_out_every_capture_on_it(browser, make_archiver, test_site):
    _, path, url = gated(test_site)  # never opened
    with ThreadPoolExecutor(len(SHARING)) as pool:
        futures = join_one_load(pool, browser, make_archiver, url, options={"timeout": 5})
        errors = [future.exception() for future in futures.values()]
    assert document_requests(test_site, path) == 1
    for raised in errors:
        assert type(raised) is CaptureTimeout and str(raised) == f"timed out after 5s loading {url}"
    assert browser.sharing(url) == 0


def test_a_capture_after_the_shared_page_closed_loads_the_page_again(browser, make_archiver, test_site):
    path = f"/article.html?fresh={uuid.uuid4().hex}"
    url = test_site.url(path)
    assert make_archiver("pdf").capture(url, {}).data.startswith(b"%PDF")
    assert make_archiver("screenshot").capture(url, {}).metadata["width"] == 1280
    assert document_requests(test_site, path) == 2


def test_captures_of_one_url_for_two_tasks_load_it_apart_and_share_no_cookie(make_archiver, test_site):
    """Task a's pdf loads a page that sets cookies and keeps loading; task b's screenshot of that URL
    meanwhile loads it again, in its own context: it sends none of a's cookies."""
    secret = uuid.uuid4().hex
    path = f"/cookie/set?value={secret}&hold=5"
    url = test_site.url(path)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(make_archiver("pdf").capture, url, {}, "task-a")
        wait_for(lambda: served(test_site, f"/delay?s=5&cookie={secret}"), 30, "task a's page holding its cookies")
        second = make_archiver("screenshot").capture(url, {}, "task-b")
        assert first.result().data.startswith(b"%PDF") and second.metadata["width"] == 1280
    assert [header for sent_to, header in test_site.cookies if sent_to == path] == ["", ""]
