"""Submissions: one URL, or a batch of them, becomes a task whose captures are queued."""
from __future__ import annotations

import logging

from flask import Response, jsonify

from api.auth import submission
from api.context import request_id, runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import Accepted, ArchiveRequest, BatchAccepted, BatchEntry, BatchRequest, CaptureOptions, ErrorBody
from htbase.logs import log
from htbase.urls import url_hash
from infra.documents import API
from infra.ledger import CreatedTask, ItemConflict, NewItem

logger = logging.getLogger("htbase.api")
bp = blueprint("submissions", "Ask for captures of a URL or of many")
REFUSALS = {409: ErrorBody, 413: ErrorBody}


def _archivers(chosen: list[str] | None) -> list[str]:
    enabled = runtime().settings.archivers
    if chosen is None:
        return list(enabled)
    disabled = [a for a in chosen if a not in enabled]
    if disabled:
        raise ApiError(400, "archiver_disabled", f"archivers {disabled} are not enabled here")
    return chosen


def _options(options: CaptureOptions | None) -> dict:
    longest = runtime().settings.max_capture_timeout_s
    if options is None:
        return {}
    if options.timeout is not None and options.timeout > longest:
        raise ApiError(400, "bad_request", f"'options.timeout' must be a number of seconds in (0, {longest:g}]")
    return options.model_dump(exclude_none=True)


def _accept(entries: list[BatchEntry] | list[ArchiveRequest], body: ArchiveRequest | BatchRequest,
            batch: bool) -> Response:
    items = [NewItem(url=e.url, url_hash=url_hash(e.url), item_id=e.item_id) for e in entries]
    try:
        created: CreatedTask = runtime().ledger.create_task(
            items, _archivers(body.archivers), options=_options(body.options), request_id=request_id(),
            webhook_url=body.webhook_url, batch=batch)
    except ItemConflict as exc:
        raise ApiError(409, "item_conflict", str(exc)) from None
    # Publish after commit; if the broker is down the outbox keeps it and the relay retries.
    runtime().relay.send(created.outbox)
    log(logger, logging.INFO, "task accepted", task_id=created.task_id, items=len(items))
    url = f"{API}/tasks/{created.task_id}"
    answer = {"task_id": created.task_id, "status": "pending", "status_url": url}
    if batch:
        answer["tasks"] = created.children
    else:
        answer["item_id"] = created.children[0]["item_id"]
    response = jsonify(answer)
    response.status_code, response.headers["Location"] = 202, url
    return response


@bp.post("/archive", responses={202: Accepted, **REFUSALS})
@submission
def archive(body: ArchiveRequest) -> Response:
    """Archive one URL: 202 with the task to follow. `item_id` names the item (the same id for another URL is 409)."""
    return _accept([body], body, batch=False)


@bp.post("/archive/batch", responses={202: BatchAccepted, **REFUSALS})
@submission
def archive_batch(body: BatchRequest) -> Response:
    """Archive up to 100 URLs: a batch task with one task per URL."""
    return _accept(body.items, body, batch=True)
