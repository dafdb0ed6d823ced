"""PDF: a real PDF of the rendered article."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from functions.archivers.base import PermanentCaptureError


@pytest.fixture(scope="module")
def pdf(make_archiver, test_site):
    return make_archiver("pdf").capture(test_site.url("/article.html"), {})


def test_pdf_is_a_readable_pdf_of_the_rendered_page(pdf):
    assert pdf.data.startswith(b"%PDF")
    assert (pdf.content_type, pdf.extension) == ("application/pdf", "pdf")
    reader = PdfReader(io.BytesIO(pdf.data))
    assert len(reader.pages) >= 1
    assert pdf.metadata["pages"] == len(reader.pages)
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "Varne Point" in text
    assert "Rendered by JavaScript 7f3a" in text  # printed after scripts ran


def test_pdf_metadata(pdf, test_site):
    assert pdf.metadata["title"] == "Lighthouse Keepers Return to Varne Point After Forty Years"
    assert pdf.metadata["final_url"] == test_site.url("/article.html")
    assert pdf.metadata["http_status"] == 200


def test_pdf_over_the_limit_is_permanent(make_archiver, test_site):
    # The page with all it loads (about 22 kB) is allowed; the PDF it prints to (about 75 kB) is not.
    with pytest.raises(PermanentCaptureError, match=r"pdf is \d+ bytes, over the limit of 40000"):
        make_archiver("pdf", max_capture_bytes=40_000).capture(test_site.url("/article.html"), {})
