"""One headless Chromium per process, shared by the browser-based archivers.

Archivers are called from the worker threads of a pool, and Playwright's sync
API is not thread-safe. So ``Browser`` owns Playwright's *async* API on one
dedicated event-loop thread; every capture is a coroutine submitted to that
loop, and each gets a fresh browser context: its own cookie jar, storage and
connections, SingleFile's captures included.

Chromium also listens on a DevTools HTTP endpoint on loopback, so the SingleFile
CLI attaches to this same browser (``--browser-server``) instead of starting
its own. When an egress proxy is given, Chromium sends *all* traffic through
it, loopback included, so redirects and sub-resources obey the egress guard too.
WebRTC could still send UDP around any proxy (STUN, TURN): Chromium is told to
use no UDP that does not go through the proxy, which is none.

``Browser.capture`` is the one way a page gets loaded: a ``PageWatch`` follows
the capture's pages from their first request and fails the capture as soon as
they receive more than the size limit (decoded bytes, every frame), or the main
frame's document is refused, an HTTP error or fails to load, whenever that
happens (a redirect, a meta refresh, a script setting ``location``). Every
failure becomes a Permanent or Transient capture error with a message fit for
the ledger. ``PageArchiver`` is the base of the archivers that render the page.

One archive request asks for several captures of one URL at once, and where one
process serves several archivers (the all-in-one process, a VPS) the pdf,
screenshot and readability captures would each load the same page. Instead the
captures of one task share one load (``Browser.capture(task=...)``, a ``SharedPage``; never
another task's, whose cookies would then be in this one's context): the first opens a fresh context
and loads the page, the others that arrive meanwhile wait for it, and each
renders on it in turn; the context closes when the last is done. Each still
gets its own result or its own error, and a load that fails fails them all.

Memory: page bodies never pass through the Playwright driver, only the rendered
results; a page holds what the byte limit lets in plus what its scripts make,
and V8 caps each renderer's heap (``--js-flags``: a page over it crashes alone,
a transient failure). RLIMIT_AS is no bound here: Chromium reserves tens of GB
of address space up front (V8's sandbox, PartitionAlloc) and does not start
under any limit that would help. A dead driver or Chromium is thrown away and
started again on the next capture; ``healthy`` says whether that works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from playwright.async_api import Browser as PlaywrightBrowser
from playwright.async_api import (
    BrowserContext,
    Frame,
    Page,
    Playwright,
    Request,
    Response,
    ViewportSize,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from functions.archivers.base import (
    Capture,
    CaptureError,
    CaptureTimeout,
    PermanentCaptureError,
    TransientCaptureError,
    capture_timeout,
    check_size,
    check_url,
    http_failure,
)
from htbase.logs import log
from infra.egress.proxy import REFUSED_HEADER

logger = logging.getLogger("htbase.browser")

T = TypeVar("T")
WaitUntil = Literal["load", "commit"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers (Cloud Run, Docker) have a tiny /dev/shm
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",  # no STUN/TURN past the egress proxy
    # The same for chromium-headless-shell, which ignores the switch above (a full Chromium's).
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--js-flags=--max-old-space-size=512",  # MB of JavaScript heap per renderer
)
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# After the load event, wait this long at most for the network to go quiet, so
# content that scripts fetch and build is in the DOM, without stalling on pages
# that poll forever.
SETTLE_CAP_S = 2.0
LAUNCH_TIMEOUT_S = 30.0
LAUNCH_ATTEMPTS = 3
HEALTH_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 10.0

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
    """Judge a main document's response. ``headers`` must have lower-case names."""
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


def navigation_failure(message: str, url: str) -> CaptureError:
    """The capture error for a navigation that failed with Playwright's or Chromium's ``message``."""
    for code, meaning in PERMANENT_NET_ERRORS.items():
        if f"net::{code}" in message:
            return PermanentCaptureError(f"{code}: {meaning}, loading {url}")
    if "Download is starting" in message:
        return PermanentCaptureError(f"{url} is a file download, not a web page")
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return TransientCaptureError(f"loading {url} failed: {first_line}")


def timed_out(timeout: float, url: str) -> CaptureTimeout:
    return CaptureTimeout(f"timed out after {timeout:g}s loading {url}")


def own_copy(error: CaptureError) -> CaptureError:
    """A fresh ``error`` to raise: one exception raised in several captures would collect all their tracebacks."""
    return type(error)(*error.args)


@contextlib.contextmanager
def capture_errors(url: str, timeout: float) -> Iterator[None]:
    """Playwright's and asyncio's failures inside the block, as capture errors."""
    try:
        yield
    except (PlaywrightTimeoutError, TimeoutError):
        raise timed_out(timeout, url) from None
    except PlaywrightError as exc:  # e.g. Chromium died while rendering
        raise navigation_failure(str(exc), url) from None


# ---------------------------------------------------------------- pages


class PageWatch:
    """What a capture's pages do that can fail it, as it happens: the bytes they
    receive (decoded; the page's session counts its own frames, a cross-site
    frame runs in its own process and is counted from its first navigation on),
    counted afresh from each main-frame navigation (SingleFile loads the page a
    second time in the tab: the limit is each load's, not the two together's),
    and every document their main frame loads. ``guard`` runs the capture's work
    and fails it on the first such failure."""

    def __init__(self, url: str, max_bytes: int):
        self.url = url
        self.max_bytes = max_bytes
        self.received = 0
        self.document: Response | None = None  # the main frame's latest document
        self.failure: asyncio.Future[CaptureError] = asyncio.get_running_loop().create_future()
        self._counted: set[Frame] = set()
        self._tasks: set[asyncio.Task] = set()

    async def watch(self, page: Page) -> None:
        """Follow ``page`` (call before it loads anything)."""
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)
        page.on("framenavigated", self._on_frame_navigated)
        page.on(
            "crash", lambda _: self.fail(TransientCaptureError(f"the page crashed (out of memory?) loading {self.url}"))
        )
        self._counted.add(page.main_frame)
        await self._count_bytes(page.context, page)

    async def guard(self, work: Awaitable[T]) -> T:
        """``work``'s result, unless a failure comes first (or with it): then
        ``work`` is cancelled and the failure raised."""
        task = asyncio.ensure_future(work)
        racing: set[asyncio.Future[Any]] = {task, self.failure}
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.failure.done():
            raise own_copy(self.failure.result())  # every capture of a shared page is failed by it
        return task.result()

    def fail(self, error: CaptureError) -> None:
        if not self.failure.done():
            self.failure.set_result(error)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _count_bytes(self, context: BrowserContext, target: Page | Frame) -> None:
        session = await context.new_cdp_session(target)
        session.on("Network.dataReceived", self._on_data)
        # This session wants the events only, not Chromium keeping copies of the bodies for it.
        await session.send("Network.enable", {"maxTotalBufferSize": 0, "maxResourceBufferSize": 0})

    def _on_data(self, event: dict) -> None:
        self.received += event["dataLength"]
        if self.received > self.max_bytes:
            self.fail(
                PermanentCaptureError(f"page is at least {self.received} bytes, over the limit of {self.max_bytes}")
            )

    def _on_frame_navigated(self, frame: Frame) -> None:
        if frame in self._counted:
            return
        self._counted.add(frame)
        task = asyncio.ensure_future(self._count_frame(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count_frame(self, frame: Frame) -> None:
        with contextlib.suppress(PlaywrightError):  # a same-process frame: its page's session counts it
            await self._count_bytes(frame.page.context, frame)

    @staticmethod
    def _main_document(request: Request) -> bool:
        try:
            return request.is_navigation_request() and request.frame.parent_frame is None
        except PlaywrightError:  # a navigation whose frame is gone already
            return False

    def _on_request(self, request: Request) -> None:
        if self._main_document(request):
            self.received = 0  # a new page load: the last one's document is gone with its bytes

    def _on_response(self, response: Response) -> None:
        if not self._main_document(response.request):
            return
        self.document = response
        try:
            check_response(response.url, response.status, response.status_text, response.headers, self.max_bytes)
        except CaptureError as exc:
            self.fail(exc)

    def _on_request_failed(self, request: Request) -> None:
        if not self._main_document(request):
            return
        failure = request.failure or ""
        if "net::ERR_ABORTED" not in failure:  # aborted: replaced by another navigation, or a download
            self.fail(navigation_failure(failure, request.url))


@dataclass
class LoadedPage:
    """A capture's page in its own browser context, watched, and loaded as far
    as the capture asked (``wait_until``)."""

    page: Page
    watch: PageWatch
    url: str  # as requested
    timeout: float
    devtools_url: str

    @property
    def response(self) -> Response:
        """The main frame's current document."""
        if self.watch.document is None:
            raise PermanentCaptureError(f"no document was loaded for {self.url}")
        return self.watch.document

    @property
    def final_url(self) -> str:
        return self.response.url

    def redirects(self) -> int:
        hops, request = 0, self.response.request.redirected_from
        while request is not None:
            hops, request = hops + 1, request.redirected_from
        return hops

    def document_metadata(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "final_url": self.final_url,
            "http_status": self.response.status,
            "redirects": self.redirects(),
        }

    async def metadata(self) -> dict[str, Any]:
        return {"title": await self.page.title(), **self.document_metadata()}

    async def new_page(self) -> Page:
        """Another page in this capture's context, watched like the first."""
        page = await self.page.context.new_page()
        await self.watch.watch(page)
        return page

    async def devtools_target(self, page: Page) -> dict[str, str]:
        """``page`` as the DevTools HTTP endpoint lists it (``/json/list``)."""
        session = await self.page.context.new_cdp_session(page)
        try:
            target_id = (await session.send("Target.getTargetInfo"))["targetInfo"]["targetId"]
        finally:
            await session.detach()
        return {
            "id": target_id,
            "type": "page",
            "url": page.url,
            "title": "",
            "webSocketDebuggerUrl": self.devtools_url.replace("http://", "ws://") + f"/devtools/page/{target_id}",
        }


async def _load(page: Page, url: str, timeout: float, wait_until: WaitUntil) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    remaining_ms = lambda: max(1.0, (deadline - loop.time()) * 1000)  # noqa: E731
    # The watch judges the document as soon as its response arrives: a 404, a
    # refusal or an oversized page fails right away instead of after a full load.
    response = await page.goto(url, wait_until="commit", timeout=remaining_ms())
    if response is None:
        raise PermanentCaptureError(f"no document was loaded for {url}")
    if wait_until == "commit":
        return
    await page.wait_for_load_state("load", timeout=remaining_ms())
    with contextlib.suppress(PlaywrightTimeoutError):
        await page.wait_for_load_state("networkidle", timeout=min(SETTLE_CAP_S * 1000, remaining_ms()))


class SharedPage:
    """One page load that concurrent captures of the same URL, with the same
    options, render in turn: loaded once, in one fresh context, closed when the
    last of them is done. It lives on the browser's loop; ``Browser.capture``
    with a ``task`` makes and joins them."""

    def __init__(self, browser: Browser, url: str, timeout: float, max_bytes: int, wait_until: WaitUntil):
        loop = asyncio.get_running_loop()
        self.users = 0  # captures that joined and have not finished
        # Renders take turns: pdf's print emulation must not show in a screenshot
        # taken at the same moment, nor a screenshot's resizing in the PDF.
        self.turn = asyncio.Lock()
        self.opened: asyncio.Future[None] = loop.create_future()  # the context and page are set up
        self.loaded: asyncio.Future[LoadedPage] = loop.create_future()  # ... and the page is loaded
        self._released = asyncio.Event()
        # Its own task: no one capture's cancellation (its timeout) may stop the load the others wait for.
        self._holder = asyncio.ensure_future(self._hold(browser, url, timeout, max_bytes, wait_until))

    async def _hold(self, browser: Browser, url: str, timeout: float, max_bytes: int, wait_until: WaitUntil) -> None:
        """Open and load the page, then keep it open until released."""
        try:
            with capture_errors(url, timeout):
                async with browser.open_page(url, timeout=timeout, max_bytes=max_bytes) as loaded:
                    self.opened.set_result(None)
                    async with asyncio.timeout(timeout):
                        await loaded.watch.guard(_load(loaded.page, url, timeout, wait_until))
                    self.loaded.set_result(loaded)
                    await self._released.wait()
        except Exception as exc:  # for the captures waiting: those past ``opened`` wait for ``loaded``
            (self.loaded if self.opened.done() else self.opened).set_exception(exc)
        finally:
            for future in (self.opened, self.loaded):
                future.cancel()  # unless done: released before it loaded, no one waits any more

    async def wait(self, future: asyncio.Future[T]) -> T:
        """``future``'s result; its failure as this capture's own copy of the error.

        Shielded: a capture that times out stops waiting, not the load."""
        try:
            return await asyncio.shield(future)
        except CaptureError as exc:
            raise own_copy(exc) from None

    async def release(self) -> None:
        """Close the page (stop loading it first if it is still loading) and wait until it is closed."""
        self._released.set()
        if not self.loaded.done():
            self._holder.cancel()
        await asyncio.wait([self._holder])  # unlike awaiting it, this does not cancel it if the caller is cancelled


# ---------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _devtools_version(endpoint: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via env proxies
    with opener.open(f"{endpoint}/json/version", timeout=5) as resp:
        return json.load(resp)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        # The loads captures can join, by task, URL, timeout, size limit and wait_until.
        self._shared: dict[tuple[str | None, str, float, int, WaitUntil], SharedPage] = {}

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

    def _starting(self) -> asyncio.Lock:
        """The lock around starting and discarding Chromium, made on the loop that uses it."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        return self._start_lock

    async def _ensure_browser(self) -> PlaywrightBrowser:
        async with self._starting():
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._browser is not None:
                log(logger, logging.WARNING, "Chromium went away; starting a new one")
            # A fresh driver too: after a crash the old one may be dead while claiming otherwise.
            await self._stop()
            error: Exception | None = None
            for _ in range(LAUNCH_ATTEMPTS):
                try:
                    if self._playwright is None:
                        self._playwright = await async_playwright().start()
                    return await self._launch(self._playwright)
                except (PlaywrightError, OSError, ValueError) as exc:
                    error = exc
                    await self._close_browser()
            await self._stop()
            raise TransientCaptureError(f"cannot start Chromium ({self.settings.chromium_path}): {error}")

    async def _launch(self, playwright: Playwright) -> PlaywrightBrowser:
        port = _free_port()
        args = [*CHROMIUM_FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1"]
        if self.proxy_url:
            # "<-loopback>" removes Chromium's implicit loopback bypass: 127.0.0.1 goes to the guard too.
            args += [f"--proxy-server={self.proxy_url}", "--proxy-bypass-list=<-loopback>"]
        # Set before the check below, so that a failure closes this Chromium.
        self._browser = browser = await playwright.chromium.launch(
            executable_path=self.settings.chromium_path,
            args=args,
            timeout=LAUNCH_TIMEOUT_S * 1000,
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
        # The port was free a moment ago; make sure it is *this* Chromium answering on it.
        endpoint = f"http://127.0.0.1:{port}"
        answered = (await asyncio.to_thread(_devtools_version, endpoint)).get("Browser", "")
        if not answered.endswith("/" + browser.version):
            raise ValueError(f"DevTools endpoint {endpoint} is not our Chromium ({answered!r})")
        self._devtools_url = endpoint
        log(
            logger,
            logging.INFO,
            "Chromium started",
            version=browser.version,
            devtools=endpoint,
            proxy=self.proxy_url or "none",
        )
        return browser

    async def _close_browser(self) -> None:
        browser, self._browser, self._devtools_url = self._browser, None, ""
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), CLOSE_TIMEOUT_S)

    async def _stop(self) -> None:
        """Close Chromium and stop its driver, whatever state they are in."""
        await self._close_browser()
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(playwright.stop(), CLOSE_TIMEOUT_S)

    async def _discard(self, browser: PlaywrightBrowser, why: Exception) -> None:
        """Throw ``browser`` and its driver away (unless that happened already); the next capture starts new ones."""
        async with self._starting():
            if self._browser is browser:
                log(
                    logger,
                    logging.WARNING,
                    "Chromium or its driver is unusable; discarding them",
                    error=_first_line(why),
                )
                await self._stop()

    async def _new_context(self) -> BrowserContext:
        browser = await self._ensure_browser()
        try:
            return await browser.new_context(viewport=VIEWPORT, accept_downloads=False, service_workers="block")
        except PlaywrightError as exc:
            # A dead driver still reports its browser connected: only using it tells.
            await self._discard(browser, exc)
            raise TransientCaptureError(f"browser unavailable (it will be restarted): {_first_line(exc)}") from None

    async def _devtools_endpoint(self) -> str:
        await self._ensure_browser()
        return self._devtools_url

    async def _usable(self) -> bool:
        for _ in range(2):  # a dead browser is discarded on the first try and started again on the second
            try:
                context = await self._new_context()
            except TransientCaptureError:
                continue
            await context.close()
            return True
        return False

    # ---- public API

    def devtools_url(self, timeout: float = LAUNCH_TIMEOUT_S * LAUNCH_ATTEMPTS) -> str:
        """``http://127.0.0.1:PORT`` of the running Chromium (started if needed)."""
        return self.run(self._devtools_endpoint(), timeout)

    def healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> bool:
        """Whether captures can run: False when Chromium or its driver died and
        could not be started again. One not started yet is healthy: it starts
        on first use."""
        if self._loop is None:
            return True
        try:
            return self.run(self._usable(), timeout)
        except CaptureError:
            return False

    def sharing(self, url: str) -> int:
        """How many captures are on a shared load of ``url`` now (waiting or rendering)."""

        async def count() -> int:
            return sum(shared.users for (_, shared_url, *_), shared in self._shared.items() if shared_url == url)

        return self.run(count(), HEALTH_TIMEOUT_S)

    @contextlib.asynccontextmanager
    async def open_page(self, url: str, *, timeout: float, max_bytes: int) -> AsyncIterator[LoadedPage]:
        """A blank, watched page in a fresh context, closed on exit."""
        context = await self._new_context()
        watch = PageWatch(url, max_bytes)
        try:
            context.set_default_timeout(timeout * 1000)  # bounds every later step (pdf, screenshot, ...)
            page = await context.new_page()
            await watch.watch(page)
            yield LoadedPage(page, watch, url, timeout, self._devtools_url)
        finally:
            watch.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 5)

    def capture(
        self,
        url: str,
        render: Callable[[LoadedPage], Awaitable[T]],
        *,
        timeout: float,
        max_bytes: int,
        wait_until: WaitUntil = "load",
        task: str | None = None,
    ) -> T:
        """Load ``url`` (up to its load event and a moment to settle, or only its
        main document's answer with ``wait_until="commit"``) and hand the page
        to ``render``, all within ``timeout`` seconds. More than ``max_bytes``
        received fails the capture.

        With ``task`` (the one the capture is for), a load of the same URL with
        the same options that another capture of that task started and still
        uses is joined instead (``SharedPage``):
        ``render`` then gets that page, after the renders before it, and must
        leave it as it found it. The waiting counts against ``timeout``."""
        check_url(url)

        async def load_and_render(loaded: LoadedPage) -> T:
            await _load(loaded.page, url, timeout, wait_until)
            return await render(loaded)

        async def job() -> T:
            with capture_errors(url, timeout):
                # Starting Chromium and setting up the page are not part of the page's time.
                async with self.open_page(url, timeout=timeout, max_bytes=max_bytes) as loaded:
                    async with asyncio.timeout(timeout):
                        return await loaded.watch.guard(load_and_render(loaded))

        async def shared_job() -> T:
            key = (task, url, timeout, max_bytes, wait_until)
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared[key] = SharedPage(self, url, timeout, max_bytes, wait_until)
            shared.users += 1
            try:
                await shared.wait(shared.opened)  # as above, the set-up is not the page's time
                with capture_errors(url, timeout):
                    async with asyncio.timeout(timeout):
                        loaded = await shared.wait(shared.loaded)
                        async with shared.turn:
                            return await loaded.watch.guard(render(loaded))
            finally:
                shared.users -= 1
                if shared.users == 0:
                    # Unlisted at once (no await in between): a capture that comes now loads afresh.
                    if self._shared.get(key) is shared:
                        del self._shared[key]
                    await shared.release()

        # The loop enforces the timeout; the extra seconds cover launching Chromium and the set-up.
        return self.run(job() if task is None else shared_job(), timeout + LAUNCH_TIMEOUT_S)

    def close(self) -> None:
        """Stop Chromium, Playwright and the loop thread. A later call starts them again."""
        with self._thread_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(30)
        self._start_lock = None
        self._shared = {}  # its pages belonged to the old loop
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PageArchiver:
    """An archiver that renders a page loaded in the shared browser: subclasses
    set ``name`` and implement ``render``, and may wait for less than the load
    event (``wait_until``). Their renders share a page loaded once for all the
    concurrent captures of a URL for one task (``Browser.capture(task=...)``), so a render
    must leave the page as it found it; one that cannot sets ``share_page`` false."""

    name: str
    wait_until: WaitUntil = "load"
    share_page = True

    def __init__(self, settings, browser: Browser):
        self.settings = settings
        self.browser = browser

    def capture(self, url: str, options: dict[str, Any], task_id: str = "") -> Capture:
        return self.browser.capture(
            url,
            self.render,
            timeout=capture_timeout(self.settings, options),
            max_bytes=self.settings.max_capture_bytes,
            wait_until=self.wait_until,
            task=task_id if self.share_page else None,
        )

    async def render(self, loaded: LoadedPage) -> Capture:
        raise NotImplementedError
