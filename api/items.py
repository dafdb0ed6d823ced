"""Items over time: every capture of one URL (or of a client's item_id) is a snapshot of its item.

A page of items (one URL's, with ``?url=``), an item with all its snapshots, deleting an item with
its snapshots and files, and re-capturing it on a schedule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import Response, jsonify
from pydantic import BaseModel, Field, StrictStr

from api.auth import requires
from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import MAX_OFFSET, Archivers, ErrorBody, Id, Url
from api.submissions import enabled_archivers
from api.tasks import DELETED, deleted
from htbase.urls import url_hash
from infra.documents import API, item_summary_view, item_view, schedule_view
from infra.items import parse_every

bp = blueprint("items", "Items and their snapshots over time")


class ItemPath(BaseModel):
    item_id: Id


class ItemListQuery(BaseModel):
    limit: int = Field(20, description="page size, held to 1..100")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    url: Url | None = Field(None, description="only the items of this URL")


class ScheduleRequest(BaseModel):
    every: Annotated[
        StrictStr,
        Field(
            pattern=r"^[1-9][0-9]{0,4}[mhdw]$",
            examples=["1d"],
            description="how often: a number and m, h, d or w; from 1h to 365d",
        ),
    ]
    archivers: Archivers | None = None


class Snapshot(BaseModel):
    task_id: str
    created_at: datetime = Field(description="the snapshot's time")
    status: str
    completed_at: datetime | None
    formats: list[str] = Field(description="the archivers whose capture it holds")
    status_url: str


class ScheduleView(BaseModel):
    item_id: str
    every_s: int
    archivers: list[str]
    next_run_at: datetime


class ItemSummary(BaseModel):
    item_id: str
    url: str
    title: str | None
    tags: list[str]
    created_at: datetime
    item_url: str
    snapshots_count: int
    latest: Snapshot


class ItemDocument(ItemSummary):
    snapshots: list[Snapshot] = Field(description="every snapshot, the newest first")
    schedule: ScheduleView | None


class ItemList(BaseModel):
    items: list[ItemSummary]
    total: int
    limit: int
    offset: int
    next: str | None


@bp.get("/items", responses={200: ItemList})
def list_items(query: ItemListQuery) -> Response:
    """Items, the most recently captured first, each with its newest snapshot."""
    limit, offset = min(max(query.limit, 1), 100), query.offset
    entries, total = runtime().catalog.page(
        limit=limit, offset=offset, url_hash=url_hash(query.url) if query.url else None
    )
    following = offset + limit
    page: dict[str, Any] = {
        "items": [item_summary_view(entry) for entry in entries],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next": None,
    }
    if following < total:
        page["next"] = f"{API}/items?limit={limit}&offset={following}"
    return jsonify(page)


@bp.get("/items/<item_id>", responses={200: ItemDocument, 404: ErrorBody})
def get_item(path: ItemPath) -> Response:
    """An item: its URL, title, every snapshot (time, status, the formats it holds) and its schedule."""
    process = runtime()
    entries = process.catalog.entries([path.item_id])
    if not entries:
        raise ApiError(404, "not_found", f"no item {path.item_id}")
    return jsonify(item_view(entries[0], process.catalog.snapshots(path.item_id), process.items.schedule(path.item_id)))


@bp.delete("/items/<item_id>", responses=DELETED)
def delete_item(path: ItemPath) -> Response:
    """Delete an item: every snapshot, with its files and documents, and its schedule."""
    return deleted(runtime().deletions.delete_item(path.item_id), f"item {path.item_id}")


@bp.post("/items/<item_id>/schedule", responses={200: ScheduleView, 404: ErrorBody})
def schedule(path: ItemPath, body: ScheduleRequest) -> Response:
    """Capture the item again every `every` (the first time one period from now), with `archivers`
    (absent: every enabled one). Posting again changes the schedule."""
    try:
        every_s = parse_every(body.every)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    made = runtime().items.set_schedule(path.item_id, every_s, enabled_archivers(body.archivers))
    if made is None:
        raise ApiError(404, "not_found", f"no item {path.item_id}")
    return jsonify(schedule_view(made))


@bp.delete("/items/<item_id>/schedule", responses={200: ItemPath, 404: ErrorBody})
@requires("write")  # undoes a scheduling, deletes no capture: as making one
def unschedule(path: ItemPath) -> Response:
    """Stop re-capturing the item."""
    if not runtime().items.unschedule(path.item_id):
        raise ApiError(404, "not_found", f"item {path.item_id} has no schedule")
    return jsonify({"item_id": path.item_id})
