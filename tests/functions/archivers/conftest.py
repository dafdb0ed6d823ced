"""Shared by the archiver tests: settings that let Chromium reach the local test
site, one Browser (one Chromium) for the whole session, and the check that an
ordinary capture works (after a hostile page, say)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.archivers.base import Archiver
from functions.archivers.browser import Browser
from functions.archivers.pdf import PdfArchiver
from functions.archivers.readability import ReadabilityArchiver
from functions.archivers.screenshot import ScreenshotArchiver
from functions.archivers.singlefile import SingleFileArchiver
from htbase.config import Settings

ARCHIVER_CLASSES = {cls.name: cls for cls in (PdfArchiver, ScreenshotArchiver, ReadabilityArchiver, SingleFileArchiver)}
BROWSER_ARCHIVERS = tuple(ARCHIVER_CLASSES)
ARTICLE_TITLE = "Lighthouse Keepers Return to Varne Point After Forty Years"


@pytest.fixture(scope="session")
def archiver_settings(tmp_path_factory) -> Settings:
    # No egress proxy here: loopback (the test site) is reachable directly.
    return Settings(
        allow_private_urls=True, capture_timeout_s=30.0, local_storage_path=tmp_path_factory.mktemp("archives")
    )


@pytest.fixture(scope="session")
def browser(archiver_settings) -> Iterator[Browser]:
    with Browser(archiver_settings) as shared:
        yield shared


@pytest.fixture(scope="session")
def make_archiver(archiver_settings, browser):
    """``make_archiver(name, **setting_changes)``: an archiver on the shared browser."""

    def make(name: str, **changes):
        return ARCHIVER_CLASSES[name](archiver_settings.with_(**changes), browser)

    return make


def playwright_drivers() -> set[int]:
    """The Playwright drivers (node ... run-driver) this process runs."""
    drivers = set()
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"run-driver" in command:
            drivers.add(int(entry.name))
    return drivers


def kill_driver(pid: int) -> None:
    """SIGKILL a driver, as the kernel's OOM killer would, and wait until it is gone."""
    os.kill(pid, signal.SIGKILL)
    while pid in playwright_drivers():  # a zombie has no command line left
        pass


def served(test_site, path: str) -> bool:
    """Whether the test site has been asked for ``path`` (with its query)."""
    return any(request[1] == path for request in test_site.requests)


def captures_normally(archiver: Archiver, test_site) -> None:
    """An ordinary page captures, as after any hostile one it must, on the same long-lived browser."""
    assert archiver.capture(test_site.url("/article.html"), {}).metadata["title"] == ARTICLE_TITLE
