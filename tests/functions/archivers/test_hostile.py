"""Hostile pages on the local test site: a gzip bomb, a page that never ends,
WebRTC to a private address, a cookie left behind for the next capture. Each
fails the capture the way it should (or leaks nothing), and the next ordinary
capture still works. Navigations to a refused address are in test_egress."""

from __future__ import annotations

import select
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import sync_playwright

from functions.archivers.base import PermanentCaptureError
from functions.archivers.browser import CHROMIUM_FLAGS, LoadedPage
from tests.functions.archivers.conftest import BROWSER_ARCHIVERS
from tests.helpers import wait_for

MB = 1024 * 1024
ARTICLE_TITLE = "Lighthouse Keepers Return to Varne Point After Forty Years"


@pytest.mark.parametrize("megabytes", [120, 300])
@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_gzip_bomb_is_refused_as_too_large_and_the_next_capture_succeeds(make_archiver, test_site, name, megabytes):
    archiver = make_archiver(name)  # the default limit: 50 MB, far below what the bomb inflates to
    with pytest.raises(PermanentCaptureError, match=r"page is at least \d+ bytes, over the limit of 52428800"):
        archiver.capture(test_site.url(f"/gzip-bomb?mb={megabytes}"), {})
    assert archiver.capture(test_site.url("/article.html"), {}).metadata["title"] == ARTICLE_TITLE


@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_page_that_never_ends_is_stopped_at_the_size_limit(make_archiver, test_site, name):
    # Stopped by its size (a permanent failure), not by its time (a CaptureTimeout).
    with pytest.raises(PermanentCaptureError, match=r"page is at least \d+ bytes, over the limit of 2097152"):
        make_archiver(name, max_capture_bytes=2 * MB).capture(test_site.url("/endless"), {"timeout": 60})


@pytest.fixture
def stun_server() -> Iterator[socket.socket]:
    """A UDP socket on loopback standing in for a STUN server on a private address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        yield udp


def datagram(udp: socket.socket, wait: float) -> bytes | None:
    ready, _, _ = select.select([udp], [], [], wait)
    return udp.recv(2048) if ready else None


async def ice_gathered(loaded: LoadedPage) -> str:
    await loaded.page.wait_for_function("document.getElementById('ice').textContent === 'complete'")
    return "complete"


def test_webrtc_sends_no_stun_request_past_the_proxy(browser, test_site, stun_server):
    url = test_site.url(f"/webrtc?stun=127.0.0.1:{stun_server.getsockname()[1]}")
    assert browser.capture(url, ice_gathered, timeout=30, max_bytes=50 * MB) == "complete"
    assert datagram(stun_server, 0) is None


def test_without_the_webrtc_policy_the_stun_request_would_arrive(archiver_settings, test_site, stun_server):
    """The control: the listener does catch what a Chromium without the policy sends."""
    flags = [flag for flag in CHROMIUM_FLAGS if "webrtc-ip-handling-policy" not in flag]  # both switches
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=archiver_settings.chromium_path, args=flags)
        try:
            chromium.new_page().goto(test_site.url(f"/webrtc?stun=127.0.0.1:{stun_server.getsockname()[1]}"))
            request = datagram(stun_server, 20)
        finally:
            chromium.close()
    assert request is not None and request[:2] == b"\x00\x01"  # a STUN Binding Request


def served(test_site, path: str) -> bool:
    return any(request[1] == path for request in test_site.requests)


@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_cookie_set_in_one_capture_is_not_sent_in_another(make_archiver, test_site, name):
    """One capture sets cookies (by header and by script) and stays open; another
    capture, meanwhile, must neither send them nor archive them."""
    archiver, secret = make_archiver(name), uuid.uuid4().hex
    with ThreadPoolExecutor(1) as pool:
        setting = pool.submit(archiver.capture, test_site.url(f"/cookie/set?value={secret}&hold=5"), {})
        # The setter's page has its cookies and waits for its slow image.
        wait_for(lambda: served(test_site, f"/delay?s=5&cookie={secret}"), 30, "the setter's slow image")
        read = archiver.capture(test_site.url(f"/cookie/read?after={secret}"), {})
        setting.result()
    sent = [header for path, header in test_site.cookies if path == f"/cookie/read?after={secret}"]
    assert sent and all(secret not in header for header in sent)
    assert secret.encode() not in read.data.replace(f"after={secret}".encode(), b"")
