"""The monolith archiver: the page as one self-contained HTML file, no JavaScript run.

Where the ``monolith`` binary is installed it does the work
(``monolith_binary``); elsewhere the built-in inliner (``functions.inliner``)
produces the same kind of file. Every fetch of either goes through the egress
proxy, so redirects and sub-resources obey the egress policy too.
"""

from __future__ import annotations

import threading
from typing import Any

import lxml.html

from functions.archivers.base import Capture, PermanentCaptureError, capture_timeout, check_url
from functions.archivers.monolith_binary import run_monolith
from functions.inliner import inline
from functions.inliner.rewrite import title
from htbase.config import Settings
from infra.egress.policy import EgressPolicy
from infra.egress.proxy import EgressProxy

HTML_TYPE = "text/html; charset=utf-8"
MAX_FAILURES_LISTED = 20


class MonolithArchiver:
    name = "monolith"

    def __init__(self, settings: Settings, proxy_url: str | None = None):
        self.settings = settings
        self._proxy_url = proxy_url
        self._own_proxy: EgressProxy | None = None
        self._lock = threading.Lock()

    def proxy_url(self) -> str:
        """The egress proxy every fetch goes through; without one handed in,
        the archiver runs its own so the guard can never be skipped."""
        with self._lock:
            if self._proxy_url is None:
                self._own_proxy = EgressProxy(
                    EgressPolicy.from_settings(self.settings), max_body_bytes=self.settings.max_capture_bytes
                ).start()
                self._proxy_url = self._own_proxy.url
            return self._proxy_url

    def close(self) -> None:
        with self._lock:
            if self._own_proxy is not None:
                self._own_proxy.stop()
                self._own_proxy = self._proxy_url = None

    def capture(self, url: str, options: dict[str, Any], task_id: str = "") -> Capture:
        url = check_url(url)
        timeout = capture_timeout(self.settings, options)
        limit = self.settings.max_capture_bytes
        if self.settings.monolith_path:
            data = run_monolith(self.settings.monolith_path, url, self.proxy_url(), timeout)
            if len(data) > limit:
                raise PermanentCaptureError(f"page is over the limit of {limit} bytes")
            return Capture(
                data,
                HTML_TYPE,
                "html",
                {
                    "title": title(lxml.html.document_fromstring(data)),
                    "final_url": url,
                    "engine": "monolith",
                },
            )
        page = inline(url, self.proxy_url(), timeout, limit)
        return Capture(
            page.html.encode("utf-8"),
            HTML_TYPE,
            "html",
            {
                "title": page.title,
                "final_url": page.final_url,
                "engine": "builtin",
                "resources_embedded": page.embedded,
                "resources_failed": len(page.failed),
                "failed_resources": [
                    {"url": u, "error": e} for u, e in list(page.failed.items())[:MAX_FAILURES_LISTED]
                ],
            },
        )
