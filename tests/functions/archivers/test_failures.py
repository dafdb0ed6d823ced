"""Every browser-based archiver fails the same way for the same page: Permanent
for what a retry cannot fix, Transient for what it might."""

from __future__ import annotations

import time

import pytest

from functions.archivers.base import PermanentCaptureError, TransientCaptureError
from tests.functions.archivers.conftest import BROWSER_ARCHIVERS

pytestmark = pytest.mark.parametrize("name", BROWSER_ARCHIVERS)


def test_redirect_chain_is_followed(make_archiver, test_site, name):
    capture = make_archiver(name).capture(test_site.url("/redirect/3"), {})
    assert capture.metadata["final_url"] == test_site.url("/article.html")
    assert capture.metadata["http_status"] == 200
    assert capture.metadata["title"] == "Lighthouse Keepers Return to Varne Point After Forty Years"


def test_404_is_permanent(make_archiver, test_site, name):
    url = test_site.url("/missing")
    with pytest.raises(PermanentCaptureError, match=f"HTTP 404 Not Found for {url}"):
        make_archiver(name).capture(url, {})


def test_500_is_transient(make_archiver, test_site, name):
    with pytest.raises(TransientCaptureError, match="HTTP 500 Internal Server Error"):
        make_archiver(name).capture(test_site.url("/server-error"), {})


def test_page_that_never_finishes_times_out_quickly(make_archiver, test_site, name):
    url = test_site.url("/slow")
    start = time.monotonic()
    with pytest.raises(TransientCaptureError, match=f"timed out after 2s loading {url}"):
        make_archiver(name).capture(url, {"timeout": 2})
    assert time.monotonic() - start < 5


def test_oversized_page_is_permanent(make_archiver, test_site, name):
    # Refused on its Content-Length, before the body is read (test_browser covers pages without one).
    archiver = make_archiver(name, max_capture_bytes=1_000_000)
    start = time.monotonic()
    with pytest.raises(PermanentCaptureError, match=r"page is \d+ bytes, over the limit of 1000000"):
        archiver.capture(test_site.url("/huge"), {})
    assert time.monotonic() - start < 5


def test_unresolvable_host_is_permanent(make_archiver, name):
    with pytest.raises(PermanentCaptureError, match="ERR_NAME_NOT_RESOLVED"):
        make_archiver(name).capture("http://no-such-host.invalid/", {})


@pytest.mark.parametrize("url", ["file:///etc/passwd", "chrome://version", "ftp://example.com/", "javascript:alert(1)"])
def test_only_http_urls_are_opened(make_archiver, name, url):
    with pytest.raises(PermanentCaptureError):
        make_archiver(name).capture(url, {})


def test_bad_timeout_option_is_permanent(make_archiver, test_site, name):
    with pytest.raises(PermanentCaptureError, match="option 'timeout'"):
        make_archiver(name).capture(test_site.url("/article.html"), {"timeout": "soon"})
