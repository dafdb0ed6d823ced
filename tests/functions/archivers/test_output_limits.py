"""MAX_CAPTURE_BYTES on what SingleFile and readability write, apart from the same limit on what a page
loads. On the test article both outputs are smaller than what the page loaded (SingleFile 26.6 kB of at
least 31.6 kB, readability 3.0 kB of 4.0 kB), so a real capture meets the load limit first; the
output check is fed each archiver's output directly: a SingleFile result, an article trafilatura
really extracted from the test article."""

from __future__ import annotations

import pytest

from functions.archivers.base import PermanentCaptureError
from tests.site.server import PAGES

PAGE = {"final_url": "http://127.0.0.1/article.html", "title": "Lighthouse Keepers"}


class Loaded:
    """The little of a loaded page that SingleFile's result is described with."""

    def document_metadata(self) -> dict:
        return {"final_url": PAGE["final_url"]}


def test_a_singlefile_result_over_the_limit_fails_for_good(make_archiver):
    archiver = make_archiver("singlefile", max_capture_bytes=1000)
    with pytest.raises(PermanentCaptureError, match="^page is 1001 bytes, over the limit of 1000$"):
        archiver._to_capture(Loaded(), {"content": "x" * 1001}, attempts=1)
    assert len(archiver._to_capture(Loaded(), {"content": "x" * 1000}, attempts=1).data) == 1000


def test_an_extracted_article_over_the_limit_fails_for_good(make_archiver):
    dom = (PAGES / "article.html").read_text()
    article = make_archiver("readability")._extract(dom, "en", PAGE)
    size = len(article.data)
    limited = make_archiver("readability", max_capture_bytes=size - 1)
    with pytest.raises(PermanentCaptureError, match=f"^article is {size} bytes, over the limit of {size - 1}$"):
        limited._extract(dom, "en", PAGE)
    assert make_archiver("readability", max_capture_bytes=size)._extract(dom, "en", PAGE).data == article.data
