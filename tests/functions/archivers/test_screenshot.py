"""Screenshot: one full-page PNG, 1280 pixels wide."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from functions.archivers.base import PermanentCaptureError


@pytest.fixture(scope="module")
def shot(make_archiver, test_site):
    return make_archiver("screenshot").capture(test_site.url("/article.html"), {})


def test_screenshot_is_a_full_page_png(shot):
    assert (shot.content_type, shot.extension) == ("image/png", "png")
    image = Image.open(io.BytesIO(shot.data))
    assert image.format == "PNG"
    assert image.width == 1280
    assert image.height > 800  # the whole article, not just the 800 px viewport
    assert (shot.metadata["width"], shot.metadata["height"]) == image.size


def test_screenshot_shows_the_page_styles_and_images(shot):
    image = Image.open(io.BytesIO(shot.data)).convert("RGB")
    # The masthead's background colour (#1d3557) from the external stylesheet...
    assert image.getpixel((5, 5)) == (0x1D, 0x35, 0x57)
    # ...and the hero image's sun (250, 210, 80) somewhere in the upper part of the page.
    top = image.crop((0, 0, 1280, 800))
    assert (250, 210, 80) in {color for _, color in top.getcolors(maxcolors=1 << 20)}


def test_screenshot_metadata(shot, test_site):
    assert shot.metadata["title"] == "Lighthouse Keepers Return to Varne Point After Forty Years"
    assert shot.metadata["final_url"] == test_site.url("/article.html")


def test_screenshot_over_the_limit_is_permanent(make_archiver, test_site):
    # The page with all it loads (about 22 kB) is allowed; its screenshot (about 290 kB) is not.
    with pytest.raises(PermanentCaptureError, match=r"screenshot is \d+ bytes, over the limit of 100000"):
        make_archiver("screenshot", max_capture_bytes=100_000).capture(test_site.url("/article.html"), {})
