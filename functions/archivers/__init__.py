"""The five archivers, one module each, behind the contract in ``base``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from htbase.config import Settings

if TYPE_CHECKING:
    from functions.archivers.base import Archiver
    from functions.archivers.browser import Browser, PageArchiver


def build_archiver(name: str, settings: Settings, *, browser: Browser | None, proxy_url: str | None) -> Archiver:
    # Imported here so a process loads only the tools it serves.
    if name == "monolith":
        from functions.archivers.monolith import MonolithArchiver

        return MonolithArchiver(settings, proxy_url)
    cls: type[PageArchiver]
    if name == "pdf":
        from functions.archivers.pdf import PdfArchiver as cls
    elif name == "screenshot":
        from functions.archivers.screenshot import ScreenshotArchiver as cls
    elif name == "singlefile":
        from functions.archivers.singlefile import SingleFileArchiver as cls
    elif name == "readability":
        from functions.archivers.readability import ReadabilityArchiver as cls
    else:
        raise ValueError(f"unknown archiver {name!r}")
    if browser is None:
        raise ValueError(f"archiver {name!r} renders in a browser: pass one")
    return cls(settings, browser)
