"""Readability: the article alone, from the rendered DOM, with its metadata."""

from __future__ import annotations

import hashlib

import pytest
from lxml import html as lxml_html

from functions.archivers.base import PermanentCaptureError


@pytest.fixture(scope="module")
def article(make_archiver, test_site):
    return make_archiver("readability").capture(test_site.url("/article.html"), {})


def test_text_is_the_article_without_ads_or_footer(article):
    data, content_type = article.extras["txt"]
    text = data.decode("utf-8")
    assert content_type == "text/plain; charset=utf-8"
    assert "the lamp room at Varne Point will be staffed through the winter" in text
    assert "one hundred and twelve steps" in text  # the last paragraph too
    assert "Rendered by JavaScript 7f3a" in text  # extracted from the rendered DOM, not the raw HTML
    assert "SPONSORED" not in text and "gizmo" not in text
    assert "All rights reserved" not in text and "Quay Street" not in text
    assert "Weather" not in text  # navigation


def test_html_is_a_clean_standalone_article(article):
    assert (article.content_type, article.extension) == ("text/html; charset=utf-8", "html")
    page = article.data.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    tree = lxml_html.fromstring(page)
    assert tree.get("lang") == "en"
    assert tree.findtext(".//title") == "Lighthouse Keepers Return to Varne Point After Forty Years"
    assert tree.xpath("//meta[@name='author']/@content") == ["Margaret Ellison"]
    assert tree.xpath("//header//time/@datetime") == ["2024-03-14"]
    assert len(tree.xpath("//h1")) == 1  # the title is not repeated from the body
    paragraphs = tree.xpath("//article/p")
    assert len(paragraphs) >= 7
    assert "gizmo" not in page and "All rights reserved" not in page
    assert not tree.xpath("//script | //img | //iframe | //link[@rel='stylesheet']")


def test_metadata(article, test_site):
    meta = article.metadata
    assert meta["title"] == "Lighthouse Keepers Return to Varne Point After Forty Years"
    assert meta["author"] == "Margaret Ellison"
    assert meta["date"] == "2024-03-14"
    assert meta["language"] == "en"
    assert meta["final_url"] == test_site.url("/article.html")
    text = article.extras["txt"][0].decode("utf-8").strip()
    assert meta["word_count"] == len(text.split()) > 300
    assert meta["text_sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_page_without_an_article_is_permanent(make_archiver, test_site):
    with pytest.raises(PermanentCaptureError, match="no readable article found"):
        make_archiver("readability").capture(test_site.url("/no-article.html"), {})
