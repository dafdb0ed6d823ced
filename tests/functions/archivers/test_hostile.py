"""Hostile pages on the local test site: a gzip bomb (straight in, and through
the egress proxy with its size limit, as a worker runs them), a page that never
ends, WebRTC to a private address, a cookie left behind for the next capture.
Each fails the capture the way it should (or leaks nothing), and the next
ordinary capture on the same browser still works (``captures_normally``).
Navigations to a refused address are in test_egress."""

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
from functions.worker import Worker
from tests.functions.archivers.conftest import BROWSER_ARCHIVERS, captures_normally, served
from tests.helpers import embedded_settings, wait_for

MB = 1024 * 1024


@pytest.mark.parametrize("megabytes", [120, 300])
@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_gzip_bomb_is_refused_as_too_large_and_the_next_capture_succeeds(make_archiver, test_site, name, megabytes):
    archiver = make_archiver(name)  # the default limit: 50 MB, far below what the bomb inflates to
    with pytest.raises(PermanentCaptureError, match=r"page is at least \d+ bytes, over the limit of 52428800"):
        archiver.capture(test_site.url(f"/gzip-bomb?mb={megabytes}"), {})
    captures_normally(archiver, test_site)


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    """Archivers as a worker builds them: behind its egress proxy, which cuts a body at the size limit."""
    running = Worker(embedded_settings(tmp_path_factory.mktemp("worker"), max_capture_bytes=10 * MB))
    yield running
    running.close()


@pytest.mark.parametrize("name", [*BROWSER_ARCHIVERS, "monolith"])
def test_a_gzip_bomb_through_the_egress_proxy_fails_for_good_as_too_large(worker, test_site, name):
    archiver = worker.archiver(name)
    # Too large, and so permanent: not the transient network error of a body the proxy cut off.
    with pytest.raises(PermanentCaptureError, match=r"page is .*over the limit of 10485760"):
        archiver.capture(test_site.url("/gzip-bomb?mb=300"), {})
    captures_normally(archiver, test_site)


@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_page_that_never_ends_is_stopped_at_the_size_limit(make_archiver, test_site, name):
    # Stopped by its size (a permanent failure), not by its time (a CaptureTimeout).
    with pytest.raises(PermanentCaptureError, match=r"page is at least \d+ bytes, over the limit of 2097152"):
        make_archiver(name, max_capture_bytes=2 * MB).capture(test_site.url("/endless"), {"timeout": 60})
    captures_normally(make_archiver(name), test_site)


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


def test_webrtc_sends_no_stun_request_past_the_proxy(browser, make_archiver, test_site, stun_server):
    url = test_site.url(f"/webrtc?stun=127.0.0.1:{stun_server.getsockname()[1]}")
    assert browser.capture(url, ice_gathered, timeout=30, max_bytes=50 * MB) == "complete"
    assert datagram(stun_server, 0) is None
    captures_normally(make_archiver("screenshot"), test_site)


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
    captures_normally(archiver, test_site)
