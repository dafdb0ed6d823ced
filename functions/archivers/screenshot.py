"""Screenshot: the whole page as one PNG, 1280 CSS pixels wide."""

from __future__ import annotations

import struct

from functions.archivers.base import Capture, check_size
from functions.archivers.browser import LoadedPage, PageArchiver


class ScreenshotArchiver(PageArchiver):
    name = "screenshot"

    async def render(self, loaded: LoadedPage) -> Capture:
        data = await loaded.page.screenshot(full_page=True, type="png")
        check_size("screenshot", len(data), self.settings.max_capture_bytes)
        width, height = struct.unpack(">II", data[16:24])  # the PNG IHDR chunk
        metadata = await loaded.metadata()
        metadata.update(width=width, height=height)
        return Capture(data, "image/png", "png", metadata)
