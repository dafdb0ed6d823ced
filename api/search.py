"""Search: the archive's items ranked by how well their text matches, each with a marked snippet."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from flask import Response, jsonify
from pydantic import BaseModel, Field

from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import MAX_OFFSET
from infra.documents import API, isoformat
from infra.search import MAX_QUERY_CHARS, InvalidQuery

bp = blueprint("search", "Find archived pages by their words")


class SearchQuery(BaseModel):
    q: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description=(
            'words (all must match), "quoted phrases" and prefixes (`archiv*`), in title, URL, site, article text, '
            "summary, key points and tags"
        ),
    )
    limit: int = Field(20, description="page size, held to 1..100")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class SearchHit(BaseModel):
    item_id: str
    task_id: str = Field(description="the snapshot the item was found by (its newest with an article)")
    url: str
    title: str
    site: str
    snippet: str = Field(description="HTML: the text around the matches, escaped, each match in `<mark>`")
    score: float = Field(description="higher is better; compare within one answer only")
    captured_at: datetime


class SearchResults(BaseModel):
    query: str
    results: list[SearchHit]
    total: int
    limit: int
    offset: int
    next: str | None


@bp.get("/search", responses={200: SearchResults})
def search(query: SearchQuery) -> Response:
    """Items whose newest snapshot matches the query, best first."""
    limit = min(max(query.limit, 1), 100)
    try:
        found = runtime().search.search(query.q, limit=limit, offset=query.offset)
    except InvalidQuery as exc:
        raise ApiError(400, "bad_query", str(exc)) from None
    following = query.offset + limit
    return jsonify(
        {
            "query": query.q,
            "results": [
                {
                    "item_id": h.item_id,
                    "task_id": h.task_id,
                    "url": h.url,
                    "title": h.title,
                    "site": h.site,
                    "snippet": h.snippet,
                    "score": round(h.score, 6),
                    "captured_at": isoformat(h.captured_at),
                }
                for h in found.hits
            ],
            "total": found.total,
            "limit": limit,
            "offset": query.offset,
            "next": f"{API}/search?{urlencode({'q': query.q, 'limit': limit, 'offset': following})}"
            if following < found.total
            else None,
        }
    )
