"""One headless Chromium per process, shared by the browser-based archivers.

Archivers are called from the worker threads of a pool, and Playwright's sync
API is not thread-safe. So ``Browser`` owns Playwright's *async* API on one
dedicated event-loop thread; every capture is a coroutine submitted to that
loop, and each gets a fresh browser context (no cookies or storage shared
between captures).

Chromium also listens on a DevTools HTTP endpoint on loopback, so the SingleFile
CLI attaches to this same browser (``--browser-server``) instead of starting
its own. When an egress proxy is given, Chromium sends *all* traffic through
it, loopback included, so redirects and sub-resources obey the egress guard too.

``Browser.capture`` (through ``open_page``) is the one way a page gets loaded:
it maps every failure to a Permanent or Transient capture error with a message
fit for the ledger. ``PageArchiver`` is the base of the archivers that render
the loaded page (pdf, screenshot, readability).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Mapping, TypeVar

from playwright.async_api import Browser as PlaywrightBrowser
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Playwright, Response, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from functions.archivers.base import (Capture, CaptureError, PermanentCaptureError, TransientCaptureError,
                                     capture_timeout, check_size, check_url, http_failure)
from infra.egress.proxy import REFUSED_HEADER

log = logging.getLogger("htbase.browser")

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers (Cloud Run, Docker) have a tiny /dev/shm
)
VIEWPORT = {"width": 1280, "height": 800}
# After the load event, wait this long at most for the network to go quiet, so
# content that scripts fetch and build is in the DOM, without stalling on pages
# that poll forever.
SETTLE_CAP_S = 2.0
LAUNCH_TIMEOUT_S = 30.0
LAUNCH_ATTEMPTS = 3

# Navigation errors a retry will not fix. Anything else (connection refused or
# reset, DNS hiccups through a proxy, ...) is treated as transient.
PERMANENT_NET_ERRORS = {
    "ERR_NAME_NOT_RESOLVED": "host name does not resolve",
    "ERR_TUNNEL_CONNECTION_FAILED": "the egress proxy refused or could not reach the host",
    "ERR_INVALID_URL": "invalid URL",
    "ERR_UNSAFE_PORT": "port is not allowed",
    "ERR_UNKNOWN_URL_SCHEME": "unsupported URL scheme",
    "ERR_DISALLOWED_URL_SCHEME": "unsupported URL scheme",
    "ERR_TOO_MANY_REDIRECTS": "too many redirects",
    "ERR_INVALID_REDIRECT": "invalid redirect",
    "ERR_UNSAFE_REDIRECT": "unsafe redirect",
    "ERR_BLOCKED_BY_CLIENT": "blocked",
    "ERR_BLOCKED_BY_RESPONSE": "blocked by the site's response headers",
    "ERR_CERT_COMMON_NAME_INVALID": "TLS certificate does not match the host",
    "ERR_CERT_DATE_INVALID": "TLS certificate expired or not yet valid",
    "ERR_CERT_AUTHORITY_INVALID": "TLS certificate is not trusted",
    "ERR_CERT_INVALID": "TLS certificate is invalid",
    "ERR_SSL_PROTOCOL_ERROR": "TLS protocol error",
}


# ---------------------------------------------------------------- checks


def check_response(url: str, status: int, status_text: str, headers: Mapping[str, str], max_bytes: int) -> None:
    """Judge the main document's response. ``headers`` must have lower-case names."""
    refused = headers.get(REFUSED_HEADER.lower())
    if refused:
        raise PermanentCaptureError(f"egress refused for {url}: {refused.removeprefix('refused: ')}")
    if status >= 400:
        try:
            phrase = status_text or HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        message = f"HTTP {status} {phrase}".rstrip() + f" for {url}"
        raise http_failure(status, message)
    length = headers.get("content-length", "")
    if length.isdigit():
        check_size("page", int(length), max_bytes)


def navigation_error(exc: Exception, url: str, timeout: float) -> CaptureError:
    """The capture error for a failed navigation or a capture that ran out of time."""
    if isinstance(exc, (PlaywrightTimeoutError, TimeoutError)):
        return TransientCaptureError(f"timed out after {timeout:g}s loading {url}")
    message = str(exc)
    for code, meaning in PERMANENT_NET_ERRORS.items():
        if f"net::{code}" in message:
            return PermanentCaptureError(f"{code}: {meaning}, loading {url}")
    if "Download is starting" in message:
        return PermanentCaptureError(f"{url} is a file download, not a web page")
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return TransientCaptureError(f"loading {url} failed: {first_line}")


# ---------------------------------------------------------------- pages


@dataclass
class LoadedPage:
    """A page that loaded with an acceptable main document."""

    page: Page
    response: Response
    url: str  # as requested

    @property
    def final_url(self) -> str:
        return self.response.url

    def redirects(self) -> int:
        hops, request = 0, self.response.request.redirected_from
        while request is not None:
            hops, request = hops + 1, request.redirected_from
        return hops

    async def metadata(self) -> dict[str, Any]:
        return {
            "title": await self.page.title(),
            "url": self.url,
            "final_url": self.final_url,
            "http_status": self.response.status,
            "redirects": self.redirects(),
        }


async def _load(page: Page, url: str, timeout: float, max_bytes: int, settle: bool) -> Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    remaining_ms = lambda: max(1.0, (deadline - loop.time()) * 1000)  # noqa: E731
    try:
        # Stop at the first response byte: a 404, a refusal or an oversized page
        # fails right away instead of after a full load.
        response = await page.goto(url, wait_until="commit", timeout=remaining_ms())
        if response is None:
            raise PermanentCaptureError(f"no document was loaded for {url}")
        check_response(url, response.status, response.status_text, response.headers, max_bytes)
        if "content-length" not in response.headers:  # the size shows once the body is in
            check_size("page", len(await response.body()), max_bytes)
        if not settle:
            return response
        await page.wait_for_load_state("load", timeout=remaining_ms())
    except PlaywrightError as exc:
        raise navigation_error(exc, url, timeout) from None
    with contextlib.suppress(PlaywrightTimeoutError):
        await page.wait_for_load_state("networkidle", timeout=min(SETTLE_CAP_S * 1000, remaining_ms()))
    return response


# ---------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _devtools_version(endpoint: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via env proxies
    with opener.open(f"{endpoint}/json/version", timeout=5) as resp:
        return json.load(resp)


class Browser:
    """The process's Chromium. Thread-safe: call ``capture``/``run`` from any thread."""

    def __init__(self, settings, proxy_url: str | None = None):
        self.settings = settings
        self.proxy_url = proxy_url
        self._thread_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Touched only on the loop thread:
        self._start_lock: asyncio.Lock | None = None
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None
        self._devtools_url = ""

    # ---- running coroutines on the loop thread

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._thread_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="htbase-browser", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the browser's loop and return its result. After
        ``timeout`` seconds it is cancelled and a TransientCaptureError raised."""
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError, not ours
            future.cancel()
            raise TransientCaptureError(f"timed out after {timeout:g}s in the browser") from None

    # ---- Chromium's lifetime (loop thread only)

    async def _ensure_browser(self) -> PlaywrightBrowser:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._browser is not None:
                log.warning("Chromium went away; starting a new one")
            await self._close_browser()
            if self._playwright is None:
                self._playwright = await async_playwright().start()
            error: Exception | None = None
            for _ in range(LAUNCH_ATTEMPTS):
                try:
                    await self._launch()
                    return self._browser
                except (PlaywrightError, OSError, ValueError) as exc:
                    error = exc
                    await self._close_browser()
            raise TransientCaptureError(f"cannot start Chromium ({self.settings.chromium_path}): {error}")

    async def _launch(self) -> None:
        port = _free_port()
        args = [*CHROMIUM_FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1"]
        if self.proxy_url:
            # "<-loopback>" removes Chromium's implicit loopback bypass: 127.0.0.1 goes to the guard too.
            args += [f"--proxy-server={self.proxy_url}", "--proxy-bypass-list=<-loopback>"]
        self._browser = await self._playwright.chromium.launch(
            executable_path=self.settings.chromium_path, args=args, timeout=LAUNCH_TIMEOUT_S * 1000,
            handle_sigint=False, handle_sigterm=False, handle_sighup=False,
        )
        # The port was free a moment ago; make sure it is *this* Chromium answering on it.
        endpoint = f"http://127.0.0.1:{port}"
        answered = (await asyncio.to_thread(_devtools_version, endpoint)).get("Browser", "")
        if not answered.endswith("/" + self._browser.version):
            raise ValueError(f"DevTools endpoint {endpoint} is not our Chromium ({answered!r})")
        self._devtools_url = endpoint
        log.info("Chromium %s started, DevTools at %s, proxy %s", self._browser.version, endpoint,
                 self.proxy_url or "none")

    async def _close_browser(self) -> None:
        browser, self._browser, self._devtools_url = self._browser, None, ""
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)

    async def _shutdown(self) -> None:
        await self._close_browser()
        if self._playwright is not None:
            playwright, self._playwright = self._playwright, None
            with contextlib.suppress(Exception):
                await playwright.stop()

    async def _devtools_endpoint(self) -> str:
        await self._ensure_browser()
        return self._devtools_url

    # ---- public API

    def devtools_url(self, timeout: float = LAUNCH_TIMEOUT_S * LAUNCH_ATTEMPTS) -> str:
        """``http://127.0.0.1:PORT`` of the running Chromium (started if needed)."""
        return self.run(self._devtools_endpoint(), timeout)

    @contextlib.asynccontextmanager
    async def open_page(self, url: str, *, timeout: float, max_bytes: int,
                        settle: bool = True) -> AsyncIterator[LoadedPage]:
        """A loaded page in a fresh context, closed on exit. With ``settle=False``
        only the main response is awaited (a probe of status and headers)."""
        browser = await self._ensure_browser()
        try:
            context = await browser.new_context(viewport=VIEWPORT, accept_downloads=False, service_workers="block")
        except PlaywrightError as exc:
            raise TransientCaptureError(f"browser unavailable: {exc}") from None
        try:
            context.set_default_timeout(timeout * 1000)  # bounds every later step (pdf, screenshot, ...)
            page = await context.new_page()
            response = await _load(page, url, timeout, max_bytes, settle)
            yield LoadedPage(page, response, url)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 5)

    def capture(self, url: str, render: Callable[[LoadedPage], Awaitable[T]], *, timeout: float,
                max_bytes: int, settle: bool = True) -> T:
        """Load ``url`` and hand the page to ``render``, all within ``timeout`` seconds.
        A main document over ``max_bytes`` fails the capture."""
        check_url(url)

        async def job() -> T:
            await self._ensure_browser()  # starting Chromium is not part of the page's time
            try:
                async with asyncio.timeout(timeout):
                    async with self.open_page(url, timeout=timeout, max_bytes=max_bytes, settle=settle) as loaded:
                        return await render(loaded)
            except TimeoutError as exc:
                raise navigation_error(exc, url, timeout) from None
            except PlaywrightError as exc:  # e.g. Chromium died while rendering
                raise navigation_error(exc, url, timeout) from None

        # The loop enforces the timeout; the extra seconds cover launching Chromium.
        return self.run(job(), timeout + LAUNCH_TIMEOUT_S)

    def close(self) -> None:
        """Stop Chromium, Playwright and the loop thread. A later call starts them again."""
        with self._thread_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
        self._start_lock = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PageArchiver:
    """An archiver that renders a page loaded in the shared browser: subclasses
    set ``name`` and implement ``render``."""

    name: str

    def __init__(self, settings, browser: Browser):
        self.settings = settings
        self.browser = browser

    def capture(self, url: str, options: dict[str, Any]) -> Capture:
        return self.browser.capture(url, self.render, timeout=capture_timeout(self.settings, options),
                                    max_bytes=self.settings.max_capture_bytes)

    async def render(self, loaded: LoadedPage) -> Capture:
        raise NotImplementedError
