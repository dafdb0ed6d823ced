"""PDF: the page printed by headless Chromium, backgrounds included."""

from __future__ import annotations

import re

from functions.archivers.base import Capture, check_size
from functions.archivers.browser import LoadedPage, PageArchiver

# Chromium writes each page as an uncompressed "/Type /Page" dictionary.
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


class PdfArchiver(PageArchiver):
    name = "pdf"

    async def render(self, loaded: LoadedPage) -> Capture:
        data = await loaded.page.pdf(print_background=True)
        check_size("pdf", len(data), self.settings.max_capture_bytes)
        metadata = await loaded.metadata()
        metadata["pages"] = len(_PAGE_OBJECT.findall(data))
        return Capture(data, "application/pdf", "pdf", metadata)
