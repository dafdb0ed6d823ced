"""Shared by the archiver tests: settings that let Chromium reach the local test
site, and one Browser (one Chromium) for the whole session."""
from __future__ import annotations

from typing import Iterator

import pytest

from functions.archivers.browser import Browser
from htbase.config import Settings


@pytest.fixture(scope="session")
def archiver_settings(tmp_path_factory) -> Settings:
    # No egress proxy here: loopback (the test site) is reachable directly.
    return Settings(allow_private_urls=True, capture_timeout_s=30.0,
                    local_storage_path=tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="session")
def browser(archiver_settings) -> Iterator[Browser]:
    with Browser(archiver_settings) as shared:
        yield shared


@pytest.fixture(scope="session")
def make_archiver(archiver_settings, browser):
    """``make_archiver(name, **setting_changes)``: an archiver on the shared browser."""
    from functions.archivers.pdf import PdfArchiver
    from functions.archivers.readability import ReadabilityArchiver
    from functions.archivers.screenshot import ScreenshotArchiver
    from functions.archivers.singlefile import SingleFileArchiver

    classes = {cls.name: cls for cls in (PdfArchiver, ScreenshotArchiver, ReadabilityArchiver, SingleFileArchiver)}

    def make(name: str, **changes):
        return classes[name](archiver_settings.with_(**changes), browser)

    return make


BROWSER_ARCHIVERS = ("pdf", "screenshot", "readability", "singlefile")
