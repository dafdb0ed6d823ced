"""Tags: the user's own on each item (the summary's are suggestions), and every tag with its count."""

from __future__ import annotations

from typing import Annotated

from flask import Response, jsonify
from pydantic import BaseModel, Field, StrictStr

from api.auth import requires
from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import ErrorBody, Id
from infra.tags import MAX_TAG_CHARS, InvalidTag

bp = blueprint("tags", "Tag items and list the tags")
Tag = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class ItemPath(BaseModel):
    item_id: Id


class ItemTagPath(BaseModel):
    item_id: Id
    tag: Tag


class TagsBody(BaseModel):
    tags: Annotated[list[Tag], Field(min_length=1, max_length=100)]


class ItemTags(BaseModel):
    item_id: str
    tags: list[str] = Field(description="lower case, spaces collapsed")


class TagCount(BaseModel):
    tag: str
    count: int


class TagList(BaseModel):
    tags: list[TagCount]


def _item(item_id: str) -> str:
    if not runtime().catalog.has(item_id):
        raise ApiError(404, "not_found", f"no item {item_id}")
    return item_id


def _tagged(item_id: str, tags: list[str]) -> Response:
    runtime().search.refresh(item_id)  # tags are searched too
    return jsonify({"item_id": item_id, "tags": tags})


@bp.get("/tags", responses={200: TagList})
def list_tags() -> Response:
    """Every tag on an item, with how many items carry it, the most used first."""
    return jsonify({"tags": [{"tag": tag, "count": count} for tag, count in runtime().tags.counts()]})


@bp.post("/items/<item_id>/tags", responses={200: ItemTags, 404: ErrorBody})
def add_tags(path: ItemPath, body: TagsBody) -> Response:
    """Put tags on an item (those it has stay); answers all its tags."""
    item_id = _item(path.item_id)
    try:
        return _tagged(item_id, runtime().tags.add(item_id, body.tags))
    except InvalidTag as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


@bp.delete("/items/<item_id>/tags/<tag>", responses={200: ItemTags, 404: ErrorBody})
@requires("write")  # undoes a tagging, deletes no capture: as adding one
def remove_tag(path: ItemTagPath) -> Response:
    """Take a tag off an item; answers the tags it keeps."""
    item_id = _item(path.item_id)
    try:
        return _tagged(item_id, runtime().tags.remove(item_id, [path.tag]))
    except InvalidTag as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
