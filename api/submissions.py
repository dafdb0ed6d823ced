"""Submissions: one URL, or a batch of them, becomes a task whose captures are queued; or one URL, waited for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

from flask import Response, jsonify
from pydantic import Field, StrictFloat

from api.auth import submission
from api.context import request_id, runtime
from api.errors import ApiError
from api.openapi import Responses, blueprint
from api.progress import ENDED, wait_for_end
from api.schemas import (
    Accepted,
    ArchiveRequest,
    BatchAccepted,
    BatchEntry,
    BatchRequest,
    CaptureOptions,
    ErrorBody,
    TaskDocument,
)
from htbase.logs import log
from htbase.urls import url_hash
from infra.documents import API
from infra.ledger import CreatedTask, ItemConflict, NewItem

logger = logging.getLogger("htbase.api")
bp = blueprint("submissions", "Ask for captures of a URL or of many")
REFUSALS: Responses = {409: ErrorBody, 413: ErrorBody}
LONGEST_WAIT_S = 120.0


class SyncRequest(ArchiveRequest):
    timeout: Annotated[
        StrictFloat,
        Field(gt=0, le=LONGEST_WAIT_S, allow_inf_nan=False, description=f"seconds to wait, at most {LONGEST_WAIT_S:g}"),
    ] = 60.0


def enabled_archivers(chosen: list[str] | None) -> list[str]:
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


def _webhook(url: str | None) -> str | None:
    if url is not None and not runtime().settings.webhooks_enabled:
        raise ApiError(
            400,
            "webhooks_off",
            "this server sends no webhooks: it needs WEBHOOK_SECRET (and WEBHOOK_DELIVERY_URL with BROKER=pubsub)",
        )
    return url


def accept(
    entries: Sequence[BatchEntry | ArchiveRequest], body: ArchiveRequest | BatchRequest, batch: bool
) -> CreatedTask:
    items = [NewItem(url=e.url, url_hash=url_hash(e.url), item_id=e.item_id) for e in entries]
    try:
        created: CreatedTask = runtime().ledger.create_task(
            items,
            enabled_archivers(body.archivers),
            options=_options(body.options),
            request_id=request_id(),
            webhook_url=_webhook(body.webhook_url),
            batch=batch,
        )
    except ItemConflict as exc:
        raise ApiError(409, "item_conflict", str(exc)) from None
    # Publish after commit; if the broker is down the outbox keeps it and the relay retries.
    runtime().relay.send(created.outbox)
    log(logger, logging.INFO, "task accepted", task_id=created.task_id, items=len(items))
    return created


def _accepted(created: CreatedTask, batch: bool) -> Response:
    url = f"{API}/tasks/{created.task_id}"
    answer: dict[str, Any] = {"task_id": created.task_id, "status": "pending", "status_url": url}
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
    return _accepted(accept([body], body, batch=False), batch=False)


@bp.post("/archive/batch", responses={202: BatchAccepted, **REFUSALS})
@submission
def archive_batch(body: BatchRequest) -> Response:
    """Archive up to 100 URLs: a batch task with one task per URL."""
    return _accepted(accept(body.items, body, batch=True), batch=True)


@bp.post("/archive/sync", responses={200: TaskDocument, 202: TaskDocument, **REFUSALS})
@submission
def archive_sync(body: SyncRequest) -> Response:
    """Archive one URL and wait for it, up to `timeout` seconds: 200 with the finished task, else 202 with the
    task as it stands (follow it at its `status_url`)."""
    created = accept([body], body, batch=False)
    document = wait_for_end(runtime(), created.task_id, body.timeout)
    response = jsonify(document)
    response.status_code = 200 if document["status"] in ENDED else 202
    response.headers["Location"] = document["status_url"]
    return response
