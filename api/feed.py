"""The Atom feed of newly archived items (``/feed.xml``), for feed readers.

A feed reader sends no headers, so where keys are required the feed also
takes one in its URL (``/feed.xml?key=…``, a key with the read scope only):
a key in a URL lands in the reader's settings, in proxies' and servers'
logs and in browser history, so give the feed a read-only key of its own,
which can be revoked alone.
"""

from __future__ import annotations

from datetime import datetime
from xml.sax.saxutils import escape

from flask import Response, request
from pydantic import BaseModel, Field

from api.context import runtime
from api.openapi import blueprint
from infra.documents import isoformat

bp = blueprint("feed", "Follow new archives in a feed reader", url_prefix="")
FEED_ITEMS = 50


class FeedQuery(BaseModel):
    key: str | None = Field(None, description="an API key (read scope), for readers that cannot send headers")


@bp.get(
    "/feed.xml",
    responses={
        200: {"description": "an Atom feed", "content": {"application/atom+xml": {"schema": {"type": "string"}}}}
    },
)
def feed(query: FeedQuery) -> Response:
    """The newest archived items, newest first: title, link to the item's page, capture time, the summary's lede."""
    entries, _ = runtime().catalog.page(limit=FEED_ITEMS, offset=0)
    base = request.host_url.rstrip("/")
    updated = max((e.captured_at for e in entries), default=datetime(2000, 1, 1))
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">',
        "<title>htbase: new archives</title>",
        f"<id>{escape(base)}/feed.xml</id>",
        f'<link rel="self" href="{escape(base)}/feed.xml"/>',
        f'<link href="{escape(base)}/"/>',
        f"<updated>{isoformat(updated)}</updated>",
    ]
    for entry in entries:
        page = f"{base}/items/{entry.item_id}"
        parts += [
            "<entry>",
            f"<title>{escape(entry.title or entry.url)}</title>",
            f'<link href="{escape(page)}"/>',
            f"<id>{escape(page)}#{escape(entry.snapshot.task_id)}</id>",
            f"<updated>{isoformat(entry.captured_at)}</updated>",
            f'<link rel="related" href="{escape(entry.url)}"/>',
            *(f'<category term="{escape(tag)}"/>' for tag in entry.tags),
            f"<summary>{escape(entry.summary.get('lede') or entry.url)}</summary>",
            "</entry>",
        ]
    parts.append("</feed>\n")
    return Response("\n".join(parts), mimetype="application/atom+xml")
