"""Readability: the article alone, as clean HTML and plain text, with its metadata.

The page is rendered in the shared browser first, so articles that scripts
build are there; trafilatura then extracts from that rendered DOM (it never
fetches anything itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
from typing import Any

import trafilatura
from lxml import etree
from trafilatura.htmlprocessing import convert_to_html
from trafilatura.settings import Document
from trafilatura.xml import xmltotxt

from functions.archivers.base import Capture, PermanentCaptureError, check_size
from functions.archivers.browser import LoadedPage, PageArchiver

# trafilatura falls back to whatever text a page has (menus, link lists); fewer
# words than this is not an article.
MIN_ARTICLE_WORDS = 20
STYLE = (
    "body{max-width:42em;margin:2em auto;padding:0 1em;font:18px/1.6 Georgia,serif;color:#222}"
    "header{border-bottom:1px solid #ccc;margin-bottom:1.5em}.byline,.source{color:#666;font-size:.9em}"
)


class ReadabilityArchiver(PageArchiver):
    name = "readability"

    async def render(self, loaded: LoadedPage) -> Capture:
        dom = await loaded.page.content()
        lang = await loaded.page.evaluate("document.documentElement.lang || ''")
        metadata = await loaded.metadata()
        # Extraction is CPU work: keep it off the browser's event loop.
        return await asyncio.to_thread(self._extract, dom, lang, metadata)

    def _extract(self, dom: str, lang: str, page: dict[str, Any]) -> Capture:
        doc = trafilatura.bare_extraction(
            dom,
            url=page["final_url"],
            with_metadata=True,
            include_comments=False,
            include_formatting=True,
            include_links=True,
            include_tables=True,
            include_images=False,
        )
        # Without as_dict trafilatura returns a Document, or None when it finds nothing.
        if not isinstance(doc, Document) or doc.body is None:
            raise PermanentCaptureError("no readable article found")
        text = xmltotxt(doc.body, False).strip()
        if len(text.split()) < MIN_ARTICLE_WORDS:
            raise PermanentCaptureError("no readable article found")
        title = doc.title or page["title"] or ""
        metadata = {
            **page,
            "title": title,
            "author": doc.author or "",
            "date": doc.date or "",
            "language": doc.language or lang.split("-")[0].lower(),
            "description": doc.description or "",
            "sitename": doc.sitename or "",
            "word_count": len(text.split()),
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
        data = _article_html(doc.body, metadata).encode("utf-8")
        check_size("article", len(data), self.settings.max_capture_bytes)
        return Capture(
            data,
            "text/html; charset=utf-8",
            "html",
            metadata,
            extras={"txt": (text.encode("utf-8") + b"\n", "text/plain; charset=utf-8")},
        )


def _article_html(body: etree._Element, meta: dict[str, Any]) -> str:
    """A small standalone HTML document: a header (title, byline, source) and the article."""
    root = convert_to_html(body)  # <html><body>...</body></html>
    content = root.find("body") if root.find("body") is not None else root
    first = content[0] if len(content) else None
    if first is not None and first.tag == "h1" and "".join(first.itertext()).strip() == meta["title"].strip():
        content.remove(first)  # the header already shows the title
    article = "".join(etree.tostring(child, encoding="unicode", method="html") for child in content)
    esc = html.escape
    byline = " &middot; ".join(
        part
        for part in (
            f"By {esc(meta['author'])}" if meta["author"] else "",
            f'<time datetime="{esc(meta["date"])}">{esc(meta["date"])}</time>' if meta["date"] else "",
        )
        if part
    )
    lang = f' lang="{esc(meta["language"])}"' if meta["language"] else ""
    return (
        f'<!DOCTYPE html>\n<html{lang}>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(meta['title'])}</title>\n"
        + (f'<meta name="author" content="{esc(meta["author"])}">\n' if meta["author"] else "")
        + (f'<meta name="date" content="{esc(meta["date"])}">\n' if meta["date"] else "")
        + f'<link rel="canonical" href="{esc(meta["final_url"])}">\n<style>{STYLE}</style>\n</head>\n'
        "<body>\n<article>\n"
        f"<header>\n<h1>{esc(meta['title'])}</h1>\n"
        + (f'<p class="byline">{byline}</p>\n' if byline else "")
        + f'<p class="source">Source: <a href="{esc(meta["final_url"])}">{esc(meta["final_url"])}</a></p>\n'
        f"</header>\n{article}\n</article>\n</body>\n</html>\n"
    )
