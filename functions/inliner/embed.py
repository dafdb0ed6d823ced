"""One page made self-contained: every sub-resource fetched once, concurrently,
and embedded as a ``data:`` URI, within one deadline and one byte budget.

Each document is walked twice (see ``rewrite.walk``): ``_Prefetch`` starts
every fetch and changes nothing, then ``_Embed`` waits for them in document
order and answers ``data:`` URIs ("" where a fetch failed).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from functions.archivers.base import CaptureError, PermanentCaptureError
from functions.inliner import rewrite
from functions.inliner.fetch import Fetcher, Resource

FETCH_WORKERS = 6
RESOURCE_TIMEOUT_S = 20.0  # one slow image must not hold the whole capture
MAX_FRAME_DEPTH = 3


@dataclass(frozen=True)
class InlinedPage:
    html: str
    title: str
    final_url: str
    embedded: int  # sub-resources embedded
    failed: dict[str, str]  # sub-resources left out: url -> why, in the order they failed


def inline(url: str, proxy_url: str, timeout: float, max_bytes: int) -> InlinedPage:
    """The page at ``url`` as one HTML file of at most ``max_bytes``, every fetch
    through ``proxy_url``, all within ``timeout`` seconds; raises CaptureError."""
    with _Inliner(proxy_url, timeout, max_bytes) as inliner:
        return inliner.page(url)


class _Inliner:
    """One inlined page: the fetcher, a small pool for sub-resources, the
    byte budget, and what got embedded or left out."""

    def __init__(self, proxy_url: str, timeout: float, max_bytes: int):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.budget = max_bytes
        self.fetcher = Fetcher(proxy_url, timeout, FETCH_WORKERS)
        self.pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="monolith-fetch")
        self.futures: dict[str, Future] = {}
        self.futures_lock = threading.Lock()
        self.embedded: set[str] = set()
        self.failed: dict[str, str] = {}
        self.prefetch = _Prefetch(self)
        self.embed = _Embed(self)

    def __enter__(self) -> _Inliner:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()

    # ---- sub-resources: fetched concurrently, each once

    def submit(self, url: str, kind: str) -> None:
        with self.futures_lock:
            if url not in self.futures:
                self.futures[url] = self.pool.submit(self._load, url, kind)

    def _load(self, url: str, kind: str) -> Resource:
        res = self.fetcher.fetch(url, self.budget, RESOURCE_TIMEOUT_S, what="resource")
        if kind == "css":
            res.text = rewrite.css_text(res.data, res.charset)
            self.prefetch.css(res.text, res.url)  # start on fonts and images right away
        return res

    def result(self, url: str, kind: str) -> Resource | None:
        self.submit(url, kind)
        try:
            return self.futures[url].result()
        except CaptureError as exc:
            self.failed[url] = str(exc)
            return None

    def charge(self, url: str, size: int) -> bool:
        """Take ``size`` bytes of output from the budget, or count ``url`` failed."""
        if size > self.budget:
            self.failed[url] = f"over the capture limit of {self.max_bytes} bytes"
            return False
        self.budget -= size
        self.embedded.add(url)
        return True

    # ---- documents

    def page(self, url: str) -> InlinedPage:
        page = self.fetcher.fetch(url, self.max_bytes, self.timeout, accept="text/html,application/xhtml+xml,*/*;q=0.8")
        if page.content_type not in rewrite.HTML_TYPES:
            raise PermanentCaptureError(f"not an HTML page ({page.content_type}); monolith archives HTML")
        self.budget -= len(page.data)
        html, title = self.inline_document(page, depth=0)
        return InlinedPage(html, title, page.url, len(self.embedded), dict(self.failed))

    def inline_document(self, page: Resource, depth: int) -> tuple[str, str]:
        """The document as self-contained HTML (and its title)."""
        doc = rewrite.parse_html(page.data, page.charset)
        base = rewrite.prepare(doc, page.url)
        rewrite.walk(doc, base, depth, self.prefetch)  # start every fetch...
        rewrite.walk(doc, base, depth, self.embed)  # ...then embed them in order
        return rewrite.seal(doc), rewrite.title(doc)


class _Prefetch:
    def __init__(self, inliner: _Inliner):
        self.inliner = inliner

    def asset(self, url: str) -> None:
        self.inliner.submit(url, "asset")

    def stylesheet(self, url: str) -> None:
        self.inliner.submit(url, "css")

    def frame(self, url: str, depth: int) -> None:
        if depth < MAX_FRAME_DEPTH:
            self.inliner.submit(url, "html")

    def srcdoc(self, html: str, base: str, depth: int) -> None:
        return None

    def css(self, text: str, base: str) -> None:
        rewrite.rewrite_css(text, base, self.asset, self.stylesheet)


class _Embed:
    def __init__(self, inliner: _Inliner):
        self.inliner = inliner
        self.imports: list[str] = []  # the @import chain, to break cycles

    def asset(self, url: str) -> str:
        res = self.inliner.result(url, "asset")
        if res is None:
            return ""
        uri = rewrite.data_uri(res.content_type or "application/octet-stream", res.data)
        return uri if self.inliner.charge(url, len(uri)) else ""

    def _stylesheet_text(self, url: str) -> str:
        """The stylesheet's text with everything it references embedded."""
        res = self.inliner.result(url, "css")
        if res is None or url in self.imports:
            return ""
        self.imports.append(url)
        try:
            return self.css(res.text or rewrite.css_text(res.data, res.charset), res.url)
        finally:
            self.imports.pop()

    def stylesheet(self, url: str) -> str:
        css = self._stylesheet_text(url)
        return css if css and self.inliner.charge(url, len(css)) else ""

    def css_import(self, url: str) -> str:
        css = self._stylesheet_text(url)
        uri = rewrite.data_uri("text/css;charset=utf-8", css.encode("utf-8")) if css else ""
        return uri if uri and self.inliner.charge(url, len(uri)) else ""

    def frame(self, url: str, depth: int) -> str:
        if depth >= MAX_FRAME_DEPTH:
            return ""
        res = self.inliner.result(url, "html")
        if res is None:
            return ""
        if res.content_type in rewrite.HTML_TYPES:
            html, _ = self.inliner.inline_document(res, depth + 1)
            uri = rewrite.data_uri("text/html;charset=utf-8", html.encode("utf-8"))
        else:  # a framed image or the like is shown as it is
            uri = rewrite.data_uri(res.content_type, res.data)
        return uri if self.inliner.charge(url, len(uri)) else ""

    def srcdoc(self, html: str, base: str, depth: int) -> str:
        if depth >= MAX_FRAME_DEPTH:
            return ""
        return self.inliner.inline_document(Resource(base, "text/html", "utf-8", html.encode("utf-8")), depth + 1)[0]

    def css(self, text: str, base: str) -> str:
        # "</" would end a <style> element early: escape it (same meaning in CSS).
        return rewrite.rewrite_css(text, base, self.asset, self.css_import).replace("</", "<\\/")
