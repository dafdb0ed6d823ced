"""A Runtime that can also capture and summarize: what the push handlers run on.

The capture tools start on first use and are then reused: the egress proxy
that every fetch goes through, one Chromium shared by the browser archivers,
the archivers themselves and the summarizer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from htbase.config import Settings
from infra.relay import Publisher
from infra.runtime import Runtime

if TYPE_CHECKING:
    from functions.archivers.base import Archiver
    from functions.archivers.browser import Browser
    from functions.summarizer.pipeline import Summarizer
    from infra.egress.policy import EgressPolicy
    from infra.egress.proxy import EgressProxy


class Worker(Runtime):
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        super().__init__(settings, publisher)
        self._lock = threading.Lock()
        self._archivers: dict[str, Archiver] = {}
        self._proxy: EgressProxy | None = None
        self._browser: Browser | None = None

    @cached_property
    def egress_policy(self) -> EgressPolicy:
        from infra.egress.policy import EgressPolicy

        return EgressPolicy.from_settings(self.settings)

    def archiver(self, name: str) -> Archiver:
        """The archiver called ``name``, built on first use and then reused."""
        with self._lock:
            if name not in self._archivers:
                self._archivers[name] = self._build_archiver(name)
            return self._archivers[name]

    def _build_archiver(self, name: str) -> Archiver:
        from functions.archivers import build_archiver

        if self._proxy is None:
            # Every fetch of every capture goes through the egress guard.
            from infra.egress.proxy import EgressProxy

            self._proxy = EgressProxy(self.egress_policy, max_body_bytes=self.settings.max_capture_bytes)
            self._proxy.start()
            self.on_close(self._proxy.stop)
        if name != "monolith" and self._browser is None:
            from functions.archivers.browser import Browser

            self._browser = Browser(self.settings, proxy_url=self._proxy.url)
            self.on_close(self._browser.close)  # the browser goes before the proxy it uses
        return build_archiver(name, self.settings, browser=self._browser, proxy_url=self._proxy.url)

    def browser_alive(self) -> bool:
        """False when this process's Chromium died and cannot be started again;
        True where no browser was needed yet."""
        with self._lock:
            browser = self._browser
        return browser is None or browser.healthy()

    def readiness_checks(self) -> dict[str, Callable[[], object]]:
        return {"browser": self._check_browser}

    def _check_browser(self) -> None:
        if not self.browser_alive():
            raise RuntimeError("Chromium died and could not be started again")

    def health(self) -> dict[str, bool]:
        """What a liveness probe checks: the ledger answers, and the browser works."""
        try:
            self.ledger.ping()
            ledger = True
        except Exception:  # whatever stops it answering is the answer
            ledger = False
        return {"ledger": ledger, "browser": self.browser_alive()}

    @cached_property
    def summarizer(self) -> Summarizer:
        from functions.summarizer.pipeline import Summarizer

        return Summarizer(self.settings)
